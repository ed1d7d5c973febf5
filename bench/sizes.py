"""The model and workload sizes the benchmark runs at: `small` (issue 20's configuration) and `tiny` (the smoke test).

Token layout of the agent vocabulary: `base` SentencePiece pieces, then the 330 SEED-X tokens; image
tokens `<img_00000>`.. start at `base`, `<img>` `</img>` `<patch>` `</patch>` sit at base + 100..103 (as the
released tokenizer's order).
"""
from __future__ import annotations

import dataclasses

from seedx_jax.agent.config import AgentConfig
from seedx_jax.detokenizer.model import DetokenizerConfig
from seedx_jax.detokenizer.resampler_xl import ResamplerXLConfig
from seedx_jax.diffusion.unet import UNetConfig
from seedx_jax.diffusion.vae import VAEConfig
from seedx_jax.llama.config import LlamaConfig
from seedx_jax.vision.resampler import ResamplerConfig
from seedx_jax.vision.vit import VisionConfig

SEEDX_TOKENS = 330
SIZES = ("small", "tiny")


@dataclasses.dataclass(frozen=True)
class Sizes:
    name: str
    vit: VisionConfig
    agent: AgentConfig
    detokenizer: DetokenizerConfig
    base_vocab: int  # SentencePiece pieces before the 330 SEED-X tokens
    image_side: int  # generated / decoded image side in pixels
    seq: int  # training row length
    comp_views: tuple[int, int]  # sub-images of the two comprehension samples (any-res tiles + global)
    new_tokens: int  # image-to-text decode length
    prompt_text: int  # text tokens around the image in the image-to-text prompt

    @property
    def num_image_tokens(self) -> int:
        return self.agent.num_image_tokens

    @property
    def image_token(self) -> int:
        return self.base_vocab

    @property
    def img_start(self) -> int:
        return self.base_vocab + 100

    @property
    def img_end(self) -> int:
        return self.base_vocab + 101

    @property
    def patch_start(self) -> int:
        return self.base_vocab + 102

    @property
    def patch_end(self) -> int:
        return self.base_vocab + 103

    @property
    def latent_side(self) -> int:
        return self.image_side // self.detokenizer.vae.downsample_factor

    def describe(self) -> str:
        v, llm, u = self.vit, self.agent.llm, self.detokenizer.unet
        r = self.detokenizer.resampler
        return (f"ViT {v.image_size} px w{v.width} x{v.layers} ({v.heads} heads, {v.pool_grid ** 2} queries -> "
                f"{self.num_image_tokens} tokens); LLM d{llm.hidden_size} x{llm.num_hidden_layers} "
                f"({llm.num_attention_heads} heads, mlp {llm.intermediate_size}, vocab {llm.vocab_size}); "
                f"ResamplerXL d{r.dim} x{r.depth}; U-Net {u.block_out_channels} layers "
                f"{u.transformer_layers_per_block}; VAE {self.detokenizer.vae.block_out_channels}; "
                f"{self.image_side} px images; train 2 x 2 rows x {self.seq} tokens")


def _sizes(name: str, *, vit: VisionConfig, hidden: int, layers: int, heads: int, mlp: int, base_vocab: int,
           grid: int, resampler: ResamplerXLConfig, unet: UNetConfig, vae: VAEConfig, image_side: int, seq: int,
           comp_views: tuple[int, int], new_tokens: int, prompt_text: int) -> Sizes:
    c = vit.output_dim
    llm = LlamaConfig(vocab_size=base_vocab + SEEDX_TOKENS, hidden_size=hidden, intermediate_size=mlp,
                      num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=1024)
    agent = AgentConfig(llm=llm, input_resampler=ResamplerConfig(grid_size=grid, embed_dim=hidden, num_heads=heads,
                                                                 kv_dim=c),
                        output_resampler=ResamplerConfig(grid_size=grid, embed_dim=c, num_heads=heads, kv_dim=hidden),
                        vit_down_pool=vit.pool_grid ** 2 // grid ** 2)
    unet = unet.replace(cross_attention_dim=resampler.output1_dim + resampler.output2_dim,
                        pooled_dim=resampler.output2_dim)
    return Sizes(name, vit, agent, DetokenizerConfig(resampler=resampler, unet=unet, vae=vae), base_vocab, image_side,
                 seq, comp_views, new_tokens, prompt_text)


def get_sizes(name: str) -> Sizes:
    """`small`: issue 20's configuration; `tiny`: seconds-long smoke runs.

    Raises:
      ValueError: an unknown name.
    """
    sdxl_blocks = dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
    if name == "small":
        return _sizes(
            name, vit=VisionConfig(image_size=112, width=256, layers=4, heads=8, mlp_dim=1024, output_dim=256,
                                   pool_grid=8, pool_heads=8),
            hidden=512, layers=4, heads=8, mlp=1376, base_vocab=512, grid=4,
            resampler=ResamplerXLConfig(dim=128, depth=2, dim_head=32, heads=4, num_queries=64, embedding_dim=256,
                                        output1_dim=96, output2_dim=160, pool_heads=4),
            unet=UNetConfig(block_out_channels=(32, 64, 128), transformer_layers_per_block=(1, 2, 2),
                            num_attention_heads=(1, 2, 4), addition_time_embed_dim=32, **sdxl_blocks),
            vae=VAEConfig(block_out_channels=(32, 64, 128, 128)), image_side=64, seq=256, comp_views=(5, 3),
            new_tokens=64, prompt_text=22)
    if name == "tiny":
        return _sizes(
            name, vit=VisionConfig(image_size=28, width=32, layers=1, heads=2, mlp_dim=64, output_dim=32, pool_grid=4,
                                   pool_heads=2),
            hidden=64, layers=1, heads=4, mlp=128, base_vocab=128, grid=2,
            resampler=ResamplerXLConfig(dim=32, depth=1, dim_head=8, heads=4, num_queries=4, embedding_dim=32,
                                        output1_dim=12, output2_dim=20, pool_heads=4),
            unet=UNetConfig(block_out_channels=(16, 32), transformer_layers_per_block=(1, 1), num_attention_heads=(2, 2),
                            addition_time_embed_dim=8, norm_num_groups=8,
                            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")),
            vae=VAEConfig(block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=8), image_side=16, seq=48,
            comp_views=(2, 1), new_tokens=4, prompt_text=6)
    raise ValueError(f"--size {name!r} is not one of {SIZES}")
