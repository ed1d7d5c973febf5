"""A tiny SEED-X release tree in the released layout (docs/release_tree.md), written from random torch
models in the released key layouts and file forms: the ViT file, the tokenizer folder, `seed_x_i/` and
`seed_x_edit/` (Hugging Face `llm/` folder + `agent/pytorch_model.bin`), the two de-tokenizer stage
files and the SDXL folder (diffusers `unet/`, `vae/`, `scheduler/`).

`SEEDX_HEADS` are tiny sizes with SEED-X's head counts and ViT input size, the fields no tensor shape
gives: a tree of these sizes converts with no `--config`, as the real release does. `write_sft_agent`
writes a checkpoint of the official training code (zero-to-fp32, peft names).
"""
import copy
import os
import pathlib
import tempfile

import torch
from diffusers import EulerDiscreteScheduler
from peft import LoraConfig as PeftLoraConfig, get_peft_model

from seedx_jax.agent.config import TINY_VISION, AgentConfig
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.detokenizer.model import DetokenizerConfig
from seedx_jax.detokenizer.resampler_xl import ResamplerXLConfig
from seedx_jax.diffusion.unet import UNetConfig
from seedx_jax.diffusion.vae import VAEConfig
from seedx_jax.llama import LlamaConfig
from seedx_jax.lora import LORA_TARGETS
from seedx_jax.vision.resampler import ResamplerConfig
from seedx_jax.vision.vit import VisionConfig
from parity import randomize_
from seedx_fixtures import TorchAgent, script_torch_agent, train_sp_model
from test_detokenizer import torch_parts
from test_sampling import SDXL_SCHEDULER
from torch_vision import TorchQwenViT

_LLM = LlamaConfig(vocab_size=650, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                   max_position_embeddings=1024)
_RESAMPLER = ResamplerXLConfig(dim=32, depth=2, dim_head=2, heads=16, num_queries=4, embedding_dim=64, output1_dim=4,
                               output2_dim=20, pool_heads=16)
SEEDX_HEADS = dict(
    vit=VisionConfig.preset("qwen_vit_g_448", width=64, layers=2, mlp_dim=128, output_dim=64),
    agent=AgentConfig(llm=_LLM, input_resampler=ResamplerConfig(grid_size=8, embed_dim=128, num_heads=32, kv_dim=64),
                      output_resampler=ResamplerConfig(grid_size=8, embed_dim=64, num_heads=32, kv_dim=128)),
    detokenizer=DetokenizerConfig(resampler=_RESAMPLER, unet=UNetConfig.preset("tiny", in_channels=8),
                                  vae=VAEConfig.preset("tiny")))


def torch_state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def save_llm_folder(model: torch.nn.Module, folder, *, bin_file: bool = False, dtype=torch.float32) -> None:
    """A Hugging Face folder: sharded safetensors (tiny shards, so with an index) or one pytorch_model.bin."""
    model = copy.deepcopy(model).to(dtype)
    if bin_file:
        os.makedirs(folder, exist_ok=True)
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), os.path.join(folder, "pytorch_model.bin"))
    else:
        model.save_pretrained(folder, max_shard_size="60KB")


def write_tiny_release(root, *, vit: VisionConfig = TINY_VISION, agent: AgentConfig = AgentConfig.preset("tiny"),
                       detokenizer: DetokenizerConfig = DetokenizerConfig.preset("tiny_edit"),
                       answers: dict[str, str] | None = None) -> dict:
    """The release tree under `root` (created) with models of these configs (`detokenizer`: stage 2's;
    stage 1 is the same with a 4-channel U-Net). `answers`: token transitions both agents are scripted
    with (`seedx_fixtures.script_torch_agent`), so that what they answer is known; default: random.

    Returns {"root", "vit", "agents": {name: TorchAgent}, "resampler" (both stages'), "unets": {stage:
    U-Net}, "vae"}: the torch models the files hold.
    """
    root = pathlib.Path(root)
    torch.manual_seed(0)
    vit_model = randomize_(TorchQwenViT(vit))
    os.makedirs(root / "QwenViT")
    torch.save(vit_model.state_dict(), root / "QwenViT" / "qwen_vit_G.pt")
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = SeedXTokenizer(train_sp_model(os.path.join(scratch, "sp.model")))
        tokenizer.save(str(root / "cvlm_llama2_tokenizer_100img_and_224loc_addpatch"))
    agents = {}
    for i, name in enumerate(("seed_x_i", "seed_x_edit")):
        model = TorchAgent(agent, seed=i).float().eval()
        if answers:
            script_torch_agent(model, tokenizer, answers)
        save_llm_folder(model.llm, root / name / "llm")
        os.makedirs(root / name / "agent")
        torch.save({k: v for k, v in torch_state(model).items() if not k.startswith("llm.")},
                   root / name / "agent" / "pytorch_model.bin")
        agents[name] = model
    stage1 = detokenizer.replace(unet=detokenizer.unet.replace(in_channels=4))
    resampler, stage2_unet, vae = torch_parts(detokenizer, 0)
    unets = {1: torch_parts(stage1, 1)[1], 2: stage2_unet}
    sdxl = root / "stable-diffusion-xl-base-1.0"
    torch_parts(stage1, 2)[1].save_pretrained(sdxl / "unet")  # other values, 4-ch conv_in
    EulerDiscreteScheduler.from_config(SDXL_SCHEDULER).save_pretrained(sdxl / "scheduler")
    vae.save_pretrained(sdxl / "vae")
    for stage, folder in ((1, "first_stage"), (2, "second_stage")):
        os.makedirs(root / "seed_detokenizer" / folder)
        state = {"resampler." + k: v for k, v in torch_state(resampler).items()}
        state.update({"unet." + k: v for k, v in torch_state(unets[stage]).items()})
        torch.save(state, root / "seed_detokenizer" / folder / "pytorch_model.bin")
    return dict(root=root, vit=vit_model, agents=agents, resampler=resampler, unets=unets, vae=vae)


def write_sft_agent(path, agent: AgentConfig) -> TorchAgent:
    """A user's SFT checkpoint at `path`: zero-to-fp32 of the whole agent with peft 0.4 names (docs/llm.md):
    `llm.base_model.model.*`, lora_A/B.default (rank 4, alpha 8), norms as modules_to_save.default +
    original_module. Returns the torch agent it holds."""
    model = TorchAgent(agent, seed=3).float().eval()
    model.llm = get_peft_model(model.llm, PeftLoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                         target_modules=list(LORA_TARGETS),
                                                         modules_to_save=["input_layernorm", "post_attention_layernorm",
                                                                          "norm"]))
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    state = {k.replace(".base_layer.", "."): v for k, v in torch_state(model).items()}  # peft 0.4 names
    assert any(".original_module." in k for k in state) and any(".lora_A.default." in k for k in state)
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    torch.save(state, path)
    return model
