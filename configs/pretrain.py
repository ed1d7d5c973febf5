"""SEED-X multimodal pre-training. The released code has no pre-training script: the mixture, LoRA
settings and hyper-parameters are [UNKNOWN]; we reuse the instruction-tuning optimizer, LoRA and
trainable set, and mix captioned images (text-to-image), conversations and edits. `:tiny` for CPU."""
from configs import train_common as tc


def get_config(variant: str = ""):
    tiny = tc.is_tiny("pretrain", variant)
    c = tc.mllm("pretrain", tiny)
    if tiny:
        c.data.sources.t2i = tc.source("webdataset", "t2i", weight=0.5, micro_batch=2, max_length=224,
                                       grids=tc.EDIT_GRIDS)
        c.data.sources.vqa = tc.source("llava_jsonl", "vqa", weight=0.5, micro_batch=2, max_length=480,
                                       grids=tc.TINY_GRIDS)
    else:
        c.data.sources.captions = tc.source("webdataset", "t2i", weight=0.5, micro_batch=64, max_length=260,
                                            grids=tc.EDIT_GRIDS, min_resolution=400, min_aspect_ratio=0.6)
        c.data.sources.conversations = tc.source("llava_jsonl", "vqa", weight=0.3, micro_batch=16, max_length=880)
        c.data.sources.edits = tc.source("edit_jsonl", "edit", weight=0.2, micro_batch=48, max_length=320,
                                         grids=tc.EDIT_GRIDS, min_resolution=400, min_aspect_ratio=0.6)
    return c
