"""The agent size flags and config shared by the agent benchmarks (decode, SFT step)."""
from __future__ import annotations

import argparse

from seedx_jax.agent.config import AgentConfig
from seedx_jax.llama.config import LlamaConfig
from seedx_jax.lora import LoraConfig
from seedx_jax.vision.resampler import ResamplerConfig


def add_agent_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--mlp", type=int, default=1408)
    p.add_argument("--base-vocab", type=int, default=8192, help="SentencePiece vocabulary before the 330 tokens")
    p.add_argument("--feature-dim", type=int, default=256, help="ViT feature size C")


def agent_config(args, lora: LoraConfig | None = None) -> AgentConfig:
    d, c = args.hidden, args.feature_dim
    llm = LlamaConfig(vocab_size=args.base_vocab + 330, hidden_size=d, intermediate_size=args.mlp,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads, max_position_embeddings=2048,
                      lora=lora)
    return AgentConfig(llm=llm, input_resampler=ResamplerConfig(grid_size=8, embed_dim=d, num_heads=8, kv_dim=c),
                       output_resampler=ResamplerConfig(grid_size=8, embed_dim=c, num_heads=8, kv_dim=d))
