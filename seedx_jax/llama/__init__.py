from seedx_jax.llama.config import PRESETS, LlamaConfig
from seedx_jax.llama.generate import generate
from seedx_jax.llama.kv_cache import KV_CACHE_AXES, KVCache
from seedx_jax.llama.model import LlamaForCausalLM, LlamaOutput

__all__ = ["KV_CACHE_AXES", "KVCache", "LlamaConfig", "LlamaForCausalLM", "LlamaOutput", "PRESETS",
           "generate"]
