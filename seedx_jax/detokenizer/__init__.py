"""De-tokenizer: ViT-space features -> SDXL conditioning (ResamplerXLV2); U-Net/VAE come with issue 4."""
from seedx_jax.detokenizer.resampler_xl import ResamplerXL, ResamplerXLConfig

__all__ = ["ResamplerXL", "ResamplerXLConfig"]
