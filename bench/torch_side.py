"""The PyTorch statements of the official computations, built with the same weights as ours.

The torch modules are the parity tests' statements (transformers Llama + peft, diffusers U-Net / VAE /
SDXL pipeline / Euler scheduler, tests/torch_vision.py, tests/torch_detokenizer.py, tests/seedx_fixtures.py
`TorchAgent`), eager, no torch.compile; ours are loaded from their state dicts as the parity tests do.
"""
from __future__ import annotations

import os
import pathlib
import sys

import numpy as np
import torch
from flax import nnx
from transformers import LogitsProcessor, LogitsProcessorList

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline  # noqa: E402
from parity import randomize_  # noqa: E402
from peft import LoraConfig as PeftLoraConfig, get_peft_model  # noqa: E402
from seedx_fixtures import TorchAgent  # noqa: E402
from test_detokenizer import load_ours, torch_parts  # noqa: E402
from test_sampling import SDXL_SCHEDULER, torch_edit_loop  # noqa: E402
from torch_llama import state_numpy  # noqa: E402
from torch_vision import TorchQwenViT  # noqa: E402

from seedx_jax.agent.config import AgentConfig  # noqa: E402
from seedx_jax.agent.model import SeedXAgent  # noqa: E402
from seedx_jax.agent.params import load_agent  # noqa: E402
from seedx_jax.detokenizer.model import DetokenizerConfig  # noqa: E402
from seedx_jax.lora import LORA_TARGETS, LoraConfig  # noqa: E402
from seedx_jax.vision.params import load_qwen_vit  # noqa: E402
from seedx_jax.vision.vit import QwenViT, VisionConfig  # noqa: E402


class TorchImageForcing(LogitsProcessor):
    """The official AutoImageTokenGenerationProcessor: max + 10 forcing, 0.0 suppression."""

    def __init__(self, span):
        self.span = list(span)

    def __call__(self, input_ids, scores):
        for row in range(input_ids.shape[0]):
            last = int(input_ids[row, -1])
            if last in self.span[:-1]:
                nxt = self.span[self.span.index(last) + 1]
                scores[row, nxt] = scores[row].max() + 10
            else:
                scores[row, self.span[1:]] = 0.0
        return scores


def agent_pair(cfg: AgentConfig) -> tuple[TorchAgent, SeedXAgent]:
    """A random torch agent (no LoRA) and ours with its weights (our LoRA factors, if `cfg.llm.lora`, are
    our initialisation: B = 0 as peft's, so both compute the same until the first update)."""
    ref = TorchAgent(cfg.replace(llm=cfg.llm.replace(lora=None))).float()
    ours = SeedXAgent(cfg, rngs=nnx.Rngs(0))
    load_agent(ours, state_numpy(ref))
    return ref, ours


def add_lora(ref: TorchAgent, lora: LoraConfig) -> TorchAgent:
    """The SFT trainable set on the torch side: peft LoRA + norms, and the whole embeddings / lm_head."""
    ref.llm = get_peft_model(ref.llm, PeftLoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(LORA_TARGETS),
        modules_to_save=list(lora.modules_to_save)))
    for name in ("embed_tokens", "lm_head"):
        for module in ref.llm.modules():
            if hasattr(module, name):
                getattr(module, name).weight.requires_grad_(True)
    return ref


def vit_pair(cfg: VisionConfig) -> tuple[TorchQwenViT, QwenViT]:
    torch.manual_seed(0)
    ref = randomize_(TorchQwenViT(cfg)).requires_grad_(False)
    ours = QwenViT(cfg, rngs=nnx.Rngs(1))
    load_qwen_vit(ours, [(k, v.numpy()) for k, v in ref.state_dict().items()], strict=True)
    return ref, ours


def detokenizer_pair(cfg: DetokenizerConfig, seed: int = 0):
    """((torch ResamplerXLV2, diffusers U-Net, diffusers VAE), our Detokenizer) loaded from the release key layout."""
    parts = torch_parts(cfg, seed)
    return parts, load_ours(cfg, *parts)


def torch_generate(ref: TorchAgent, prompts, mask, feats, positions, n: int, span, *, regress: bool):
    """The official `ContinuousLVLM.generate`: embed, greedy `generate` with image forcing and hidden states kept;
    with `regress`, the output resampler on the states whose inputs were the image tokens of each `</img>`.
    Returns (new ids [B, n], regressed features [k, tokens, C] or None)."""
    ids = torch.as_tensor(prompts)
    with torch.no_grad():
        embeds = ref.embed(ids, *(None if x is None else torch.as_tensor(x) for x in (mask, feats, positions)))
        out = ref.llm.generate(input_ids=ids, inputs_embeds=embeds, max_new_tokens=n, min_new_tokens=n,
                               do_sample=False, eos_token_id=None, pad_token_id=0,
                               logits_processor=LogitsProcessorList([TorchImageForcing(span)]),
                               output_hidden_states=True, return_dict_in_generate=True)
        new = out.sequences[:, -n:]
        if not regress:
            return new, None
        t = ids.shape[1]
        last = torch.cat([h[-1] for h in out.hidden_states], dim=1)[0, t:]
        k = len(span) - 2
        ends = torch.where(new[0] == span[-1])[0]
        feats = [last[e - k:e] for e in ends.tolist() if e >= k]
        return new, (ref.output_resampler(torch.stack(feats)) if feats else None)


def sdxl_pipeline(unet, vae) -> StableDiffusionXLPipeline:
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
                                     unet=unet, scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def torch_stage1(resampler, pipe, features, negative, noise, side: int, steps: int) -> np.ndarray:
    """Official stage-1 generation: ResamplerXLV2 -> SDXL pipeline (Euler, CFG 7.5) -> VAE decode;
    `[N, side, side, 3]` in [0, 1]."""
    with torch.no_grad():
        embeds, pooled = resampler(torch.cat([torch.as_tensor(features), torch.as_tensor(negative)]))
        n = features.shape[0]
        out = pipe(prompt_embeds=embeds[:n], pooled_prompt_embeds=pooled[:n], negative_prompt_embeds=embeds[n:],
                   negative_pooled_prompt_embeds=pooled[n:], height=side, width=side, num_inference_steps=steps,
                   guidance_scale=7.5, latents=torch.as_tensor(noise).permute(0, 3, 1, 2), output_type="pt")
    return out.images.permute(0, 2, 3, 1).numpy()


def torch_stage2(resampler, unet, vae, features, negative, condition, noise, steps: int) -> np.ndarray:
    """Official stage-2 generation: ResamplerXLV2, the condition's VAE posterior mean (unscaled), the 3-way
    guided Euler loop of tests/test_sampling.py, VAE decode; `[N, side, side, 3]` in [0, 1]."""
    from seedx_jax.diffusion.sampling import Conditioning
    with torch.no_grad():
        embeds, pooled = resampler(torch.cat([torch.as_tensor(features), torch.as_tensor(negative)]))
        n, side = features.shape[0], condition.shape[1]
        cond = vae.encode(torch.as_tensor(2 * condition - 1).permute(0, 3, 1, 2)).latent_dist.mean
        time_ids = torch.tensor([[side, side, 0, 0, side, side]], dtype=torch.float32).repeat(n, 1)
        latents = torch_edit_loop(unet, EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
                                  Conditioning(embeds[:n], pooled[:n], time_ids),
                                  Conditioning(embeds[n:].expand(n, -1, -1), pooled[n:].expand(n, -1), time_ids),
                                  cond.permute(0, 2, 3, 1), noise, steps, 7.5, 1.5)
        images = vae.decode(torch.as_tensor(latents).permute(0, 3, 1, 2) / vae.config.scaling_factor).sample
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def count_flops(fn) -> float:
    """FLOPs of one call as PyTorch's flop counter sees them (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())
