"""The shipped configs: ml_collections files whose `get_config(variant)` returns a ConfigDict.

Installed with the package, so `from configs import sft_edit` works from any working directory, and
`python -m seedx_jax.train` / `python -m seedx_jax.preflight` take `--config NAME[:variant]` for the
training configs named in `TRAINING` (`seedx_jax.train.config_files`). `llama2_13b_lora` and
`llama_tiny` configure a bare LLM (`LlamaConfig.from_dict(config.model.to_dict())`), not a training run.
"""

TRAINING = ("demo", "detok_stage1", "detok_stage2", "pretrain", "sft_comp_gen", "sft_edit")
