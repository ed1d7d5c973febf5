"""Visual tokenizer: Qwen-VL ViT + attention pool, the Resampler, any-res preprocessing."""
from seedx_jax.vision.resampler import INPUT_RESAMPLER, OUTPUT_RESAMPLER, Resampler, ResamplerConfig
from seedx_jax.vision.vit import VISION_PRESETS, QwenViT, VisionConfig

__all__ = ["INPUT_RESAMPLER", "OUTPUT_RESAMPLER", "QwenViT", "Resampler", "ResamplerConfig",
           "VISION_PRESETS", "VisionConfig"]
