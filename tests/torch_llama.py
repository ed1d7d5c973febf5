"""PyTorch references for the Llama tests: a transformers model built from our config."""
import torch
from flax import nnx
from transformers import LlamaConfig as HFLlamaConfig, LlamaForCausalLM as HFLlama

from seedx_jax.llama import LlamaConfig, LlamaForCausalLM
from seedx_jax.llama.params import load_hf_llama


def hf_llama(cfg: LlamaConfig, seed: int = 0) -> HFLlama:
    """A random transformers Llama (eager attention, fp32) with non-trivial norm weights."""
    torch.manual_seed(seed)
    model = HFLlama._from_config(HFLlamaConfig(**cfg.to_hf_dict()), attn_implementation="eager")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    return model.float().eval()


def state_numpy(module: torch.nn.Module):
    return [(k, v.detach().cpu().numpy()) for k, v in module.state_dict().items()]


def jax_from_torch(cfg: LlamaConfig, torch_model: torch.nn.Module, **load_kwargs) -> LlamaForCausalLM:
    model = LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))
    load_hf_llama(model, state_numpy(torch_model), **load_kwargs)
    return model

