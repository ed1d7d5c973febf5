"""A 2-layer Llama for CPU smoke runs and tests; same structure as the 13B config."""
import ml_collections

from configs import llama2_13b_lora


def get_config() -> ml_collections.ConfigDict:
    config = llama2_13b_lora.get_config()
    config.model.preset = "llama_tiny"
    config.model.dtype = "float32"
    config.model.remat = "none"
    config.model.lora.rank = 4
    config.model.lora.alpha = 4.0
    return config
