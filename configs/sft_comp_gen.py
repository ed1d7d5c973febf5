"""SEED-X-I instruction tuning (scripts/train_seed_x_sft_comp_gen.sh, docs/training_recipe.md): ShareGPT4V
conversations (any-res, 8 grids) 0.75 + Unsplash text-to-image pairs 0.25, micro-batches 2 and 8 per
GPU on 8 GPUs, accumulation 2, lr 1e-4, 20000 steps. `:tiny` for CPU smoke runs."""
from configs import train_common as tc


def get_config(variant: str = ""):
    tiny = tc.is_tiny("sft_comp_gen", variant)
    c = tc.mllm("sft_comp_gen", tiny)
    if tiny:
        c.data.sources.vqa = tc.source("llava_jsonl", "vqa", weight=0.6, micro_batch=2, max_length=480,
                                       grids=tc.TINY_GRIDS)
        c.data.sources.t2i = tc.source("webdataset", "t2i", weight=0.2, micro_batch=2, max_length=224,
                                       grids=tc.EDIT_GRIDS)
    else:
        c.data.sources.sharegpt4v = tc.source("llava_jsonl", "vqa", weight=0.6, micro_batch=16, max_length=880)
        c.data.sources.unsplash = tc.source("webdataset", "t2i", weight=0.2, micro_batch=64, max_length=260,
                                            grids=tc.EDIT_GRIDS, min_resolution=400, min_aspect_ratio=0.6,
                                            similarity_threshold=0.1)
    return c
