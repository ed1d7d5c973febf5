"""De-tokenizer stage 2 (docs/detokenizer.md): the whole SDXL U-Net with the 8-channel conv_in and
ResamplerXLV2, conditioned on the target's ViT features and the source image's VAE latent (edit
pairs). Not released: data, batch and learning rate are [UNKNOWN] (ours: 1024 px, 64 per step,
lr 1e-5 for the full U-Net). `:tiny` for CPU."""
from configs import train_common as tc


def get_config(variant: str = ""):
    tiny = tc.is_tiny("detok_stage2", variant)
    c = tc.detok("detok_stage2", tiny)
    if not tiny:
        c.optim.learning_rate = 1e-5
    c.train.sample_every = 25 if tiny else 1000
    c.train.accumulation = 1
    c.data.sources.edits = tc.source("edit_jsonl", "detok_edit", micro_batch=2 if tiny else 64,
                                     resolution=32 if tiny else 1024, min_resolution=0 if tiny else 512)
    return c
