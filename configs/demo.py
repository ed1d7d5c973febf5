"""The shapes-world demo (`make demo`, `python -m seedx_jax.demo`): tiny models of every SEED-X part,
trained with the real training loop on the world's ArrayRecord splits.

`--config demo:<stage>` for stage in detok_stage1, detok_stage2, sft_comp_gen, sft_edit.
The driver fills in the data paths (`<data>/train/*.array_record`), the tokenizer and the `init`
checkpoints (the stand-in ViT and VAE, then each stage's predecessor).

Where the demo departs from SEED-X, and why (there is no pretrained SDXL or Llama for this world):
- de-tokenizer stage 1 trains the whole U-Net (`train.unet_trainable = "all"`), not just to_k/to_v;
- the MLLM stages train the whole LLM (every projection is in `lora.modules_to_save`), not just LoRA;
- the ViT (64-d features, pre-trained on the world's dense labels: `seedx_jax.demo.vit_pretrain`) and the
  VAE are the stand-ins of `seedx_jax.demo.standins`, frozen as in the paper;
- one instruction-tuning run (VQA + grounding conversations + text-to-image) replaces pre-training +
  SFT; the edit model is fine-tuned from it, as SEED-X-Edit is from the pre-trained model.
"""
from configs import train_common as tc
from seedx_jax.vision.vit import VisionConfig

STAGES = ("detok_stage1", "detok_stage2", "sft_comp_gen", "sft_edit")
RESOLUTION = 32  # de-tokenizer images: objects are 4-8 px, enough for colour and position
VIEW = 224  # the tiny ViT's view; the world's unit (112 px) tiles it exactly
VOCAB = 400 + 330  # the world's SentencePiece model + SEED-X's added tokens
FEATURES = 64  # ViT output_dim: the pool's 2-D sincos table needs >= 64 dims to tell 16 positions apart
VIT = VisionConfig.preset("qwen_vit_tiny", output_dim=FEATURES, pool_heads=1)
UNET = dict(transformer_layers_per_block=(1, 1, 1))  # the tiny U-Net, one transformer layer per level
VAE = dict(block_out_channels=(16, 32, 32))  # 8 x 8 latents of 32 px images: 3x faster steps than 16 x 16
RESAMPLER = dict(embedding_dim=FEATURES, num_queries=64)  # SEED-X's 64 condition tokens
LLM = dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)
LLM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def get_config(stage: str = "sft_comp_gen"):
    if stage not in STAGES:
        raise ValueError(f"demo:{stage}: unknown stage; choose one of {', '.join(f'demo:{s}' for s in STAGES)}")
    detok = stage.startswith("detok")
    c = tc.detok(stage, tiny=True) if detok else tc.mllm(stage, tiny=True)
    c.seed = 0
    c.data.seed = 0
    c.model.vit = tc.tree(VIT)
    c.train.update(log_every=25, checkpoint_every=1000, keep=1, sample_every=0, accumulation=1,
                   async_checkpoints=False)
    if detok:
        c.model.detokenizer.update(unet=UNET, vae=VAE, resampler=RESAMPLER)
        c.detok_loss.image_drop = 0.1
        c.train.unet_trainable = "all"
        c.train.steps = 800 if stage == "detok_stage1" else 300  # step counts: what fits `make demo` in 20 min
        c.optim.update(learning_rate=1e-3)
        src = ("images", "captions", "detok_image") if stage == "detok_stage1" else ("edits", "edits", "detok_edit")
        c.data.sources[src[0]] = tc.source("array_record", src[2], micro_batch=8, resolution=RESOLUTION,
                                           paths=f"data/train/{src[1]}.array_record")
    else:
        c.model.agent.update(llm=LLM, input_resampler=dict(embed_dim=LLM["hidden_size"], kv_dim=FEATURES),
                             output_resampler=dict(embed_dim=FEATURES, kv_dim=LLM["hidden_size"]))
        c.model.lora.update(dropout=0.0, modules_to_save=("input_layernorm", "post_attention_layernorm", "norm")
                            + LLM_PROJECTIONS)
        c.train.steps = 1400 if stage == "sft_comp_gen" else 300
        c.optim.update(learning_rate=1e-3)
        if stage == "sft_comp_gen":
            # no response before `<img>`: SEED-X does not train the response, so a model trained from
            # scratch would never say it and never start the image; this makes training and the
            # seed_x_i inference prompt ("Generate an image: ...") end at the same token
            c.data.prompts = dict(generation=[("Generate an image:", "")])
            c.data.sources.vqa = tc.source("array_record", "vqa", weight=0.6, micro_batch=8, max_length=320,
                                           grids=tc.TINY_GRIDS, paths="data/train/conversations.array_record")
            c.data.sources.t2i = tc.source("array_record", "t2i", weight=0.4, micro_batch=8, max_length=192,
                                           grids=tc.EDIT_GRIDS, paths="data/train/captions.array_record")
        else:
            c.data.sources.edit = tc.source("array_record", "edit", micro_batch=8, max_length=256,
                                            grids=tc.EDIT_GRIDS, paths="data/train/edits.array_record")
    c.optim.update(warmup_steps=20, total_steps=c.train.steps)
    return c
