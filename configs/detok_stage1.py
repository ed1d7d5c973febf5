"""De-tokenizer stage 1 (docs/detokenizer.md): ResamplerXLV2 + every SDXL U-Net to_k / to_v trained to
draw images from their ViT features. The training loop is not released: data, batch, resolution and
learning rate are [UNKNOWN] (ours: 1024 px centre crops of captioned images, 64 per step, lr 1e-4).
`:tiny` for CPU."""
from configs import train_common as tc


def get_config(variant: str = ""):
    tiny = tc.is_tiny("detok_stage1", variant)
    c = tc.detok("detok_stage1", tiny)
    c.train.sample_every = 25 if tiny else 1000
    c.train.accumulation = 1
    c.data.sources.images = tc.source("webdataset", "detok_image", micro_batch=2 if tiny else 64,
                                      resolution=32 if tiny else 1024, min_resolution=0 if tiny else 512)
    return c
