"""SEED-X-Edit instruction tuning (scripts/train_seed_x_sft_edit.sh, docs/training_recipe.md): SEED-Data-Edit
part 1 OpenImages 2/3 + Unsplash 1/3, single-turn edits, micro-batch 6 per GPU on 8 GPUs, max length
320, accumulation 2, lr 1e-4, 20000 steps. `:tiny` for CPU smoke runs."""
from configs import train_common as tc


def get_config(variant: str = ""):
    tiny = tc.is_tiny("sft_edit", variant)
    c = tc.mllm("sft_edit", tiny)
    if tiny:
        c.data.sources.edit = tc.source("edit_jsonl", "edit", micro_batch=2, max_length=256, grids=tc.EDIT_GRIDS)
    else:
        for name, weight in (("openimages", 0.4), ("unsplash", 0.2)):
            c.data.sources[name] = tc.source("edit_jsonl", "edit", weight=weight, micro_batch=48, max_length=320,
                                             grids=tc.EDIT_GRIDS, min_resolution=400, min_aspect_ratio=0.6)
    return c
