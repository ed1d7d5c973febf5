"""The agent (`ContinuousLVLM`, src/models/mllm/seed_x.py): LLM + input/output resamplers + patch position table."""
from __future__ import annotations

import dataclasses

from seedx_jax.config_base import ConfigBase
from seedx_jax.llama.config import LlamaConfig
from seedx_jax.vision.resampler import INPUT_RESAMPLER, OUTPUT_RESAMPLER, ResamplerConfig
from seedx_jax.vision.vit import VisionConfig


@dataclasses.dataclass(frozen=True)
class AgentConfig(ConfigBase):
    llm: LlamaConfig = LlamaConfig.preset("llama2_13b")
    input_resampler: ResamplerConfig = INPUT_RESAMPLER  # ViT [N, 256, C] -> [N, 64, D]
    output_resampler: ResamplerConfig = OUTPUT_RESAMPLER  # hidden [N, 64, D] -> [N, 64, C]
    add_patch_pos: bool = True
    vit_down_pool: int = 4  # generation targets: mean of 4 consecutive ViT tokens (`vit_down`)
    lm_loss_scale: float = 1.0
    rec_loss_scale: float = 6.0

    def __post_init__(self):
        llm, inp, out = self.llm, self.input_resampler, self.output_resampler
        if inp.embed_dim != llm.hidden_size or out.kv_dim != llm.hidden_size:
            raise ValueError(f"AgentConfig: input_resampler.embed_dim={inp.embed_dim} and output_resampler.kv_dim="
                             f"{out.kv_dim} must equal llm.hidden_size={llm.hidden_size}")
        if inp.grid_size != out.grid_size:
            raise ValueError(f"AgentConfig: input ({inp.grid_size}) and output ({out.grid_size}) resampler "
                             "grids must match (both give the image tokens per image)")
        if inp.kv_dim != out.embed_dim:
            raise ValueError(f"AgentConfig: input_resampler.kv_dim={inp.kv_dim} (ViT features) != "
                             f"output_resampler.embed_dim={out.embed_dim} (regressed ViT features)")

    @property
    def num_image_tokens(self) -> int:
        return self.input_resampler.grid_size ** 2

    @property
    def feature_dim(self) -> int:
        """ViT feature size C (4096 for SEED-X)."""
        return self.input_resampler.kv_dim


TINY_VISION = VisionConfig.preset("qwen_vit_tiny", output_dim=16, pool_heads=2)
# Tiny LLM: a 320-piece SentencePiece model + the 330 SEED-X tokens (what the tests train).
_TINY_LLM = LlamaConfig(vocab_size=650, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=1024)
AgentConfig.PRESETS = {
    "seed_x": AgentConfig(),
    "tiny": AgentConfig(llm=_TINY_LLM,
                        input_resampler=ResamplerConfig(grid_size=8, embed_dim=64, num_heads=4, kv_dim=16),
                        output_resampler=ResamplerConfig(grid_size=8, embed_dim=16, num_heads=2, kv_dim=64)),
}
