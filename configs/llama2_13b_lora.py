"""SEED-X's LLM (Llama-2-13B-chat, vocab 32330) with the SFT LoRA, on an FSDP x tensor mesh."""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict(dict(
        preset="llama2_13b",
        param_dtype="float32",
        dtype="bfloat16",
        scan_layers=True,
        remat="dots_no_batch",
        attention_impl="xla",
        lora=dict(rank=32, alpha=32.0, dropout=0.05,
                  modules_to_save=("input_layernorm", "post_attention_layernorm", "norm"),
                  train_embeddings=True),
    ))
    # Sizes of (data, fsdp, tensor) per slice; -1 = the remaining devices. dcn_* split the slices.
    config.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1,
                                                 dcn_data=1, dcn_fsdp=1, dcn_tensor=1))
    # Entries replacing rows of seedx_jax.sharding.RULES, e.g. {"embed": None}.
    config.sharding_rules = ml_collections.ConfigDict()
    return config
