"""De-tokenizer: ViT-space features -> SDXL conditioning (ResamplerXLV2) -> U-Net sampling -> VAE pixels."""
from seedx_jax.detokenizer.model import Detokenizer, DetokenizerConfig, negative_features, to_uint8
from seedx_jax.detokenizer.params import load_detokenizer
from seedx_jax.detokenizer.resampler_xl import ResamplerXL, ResamplerXLConfig

__all__ = ["Detokenizer", "DetokenizerConfig", "ResamplerXL", "ResamplerXLConfig", "load_detokenizer",
           "negative_features", "to_uint8"]
