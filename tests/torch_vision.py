"""PyTorch statement of the Qwen-VL ViT + attention pool and the Resampler (Qwen-VL's qwen_visual.py).

Written from docs/architecture.md with torch primitives; `state_dict()` gives the released key layout.
"""
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def get_abs_pos(table: torch.Tensor, tgt_len: int) -> torch.Tensor:
    src, tgt = int(math.sqrt(table.size(0))), int(math.sqrt(tgt_len))
    if src == tgt:
        return table
    grid = table.float().reshape(1, src, src, -1).permute(0, 3, 1, 2)
    out = F.interpolate(grid, size=(tgt, tgt), mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).flatten(0, 2).to(table.dtype)


def sincos_table(dim: int, grid: int) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim / 4))
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")

    def embed(p):
        angles = p.reshape(-1, 1).float() * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([embed(xs), embed(ys)], dim=1)  # first half: column (x)


class TorchResampler(nn.Module):
    def __init__(self, grid, embed_dim, heads, kv_dim, eps=1e-5):
        super().__init__()
        self.pos_embed = nn.Parameter(sincos_table(embed_dim, grid), requires_grad=False)
        self.query = nn.Parameter(0.02 * torch.randn(grid * grid, embed_dim))
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim != embed_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(embed_dim, heads)
        self.ln_q = nn.LayerNorm(embed_dim, eps=eps)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=eps)

    def forward(self, x):  # [N, L, K]
        pos = get_abs_pos(self.pos_embed, x.size(1))
        x = self.ln_kv(self.kv_proj(x)).permute(1, 0, 2)  # sequence-first
        n = x.shape[1]
        q = (self.ln_q(self.query) + self.pos_embed).unsqueeze(1).expand(-1, n, -1)
        out = self.attn(q, x + pos.unsqueeze(1), x, need_weights=False)[0]
        return out.permute(1, 0, 2)


class TorchVisualAttention(nn.Module):
    """in_proj rows are head-interleaved: per head [q; k; v] (`VisualAttention`)."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x):  # [N, L, W]
        n, length, width = x.shape
        mixed = self.in_proj(x).view(n, length, self.heads, 3 * self.head_dim)
        q, k, v = mixed.split(self.head_dim, dim=-1)
        q = q / math.sqrt(self.head_dim)
        probs = torch.einsum("nqhd,nkhd->nhqk", q, k).softmax(dim=-1)
        return self.out_proj(torch.einsum("nhqk,nkhd->nqhd", probs, v).reshape(n, length, width))


class TorchBlock(nn.Module):
    def __init__(self, width, heads, mlp_dim, eps):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = TorchVisualAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, mlp_dim), gelu=nn.GELU(),
                                             c_proj=nn.Linear(mlp_dim, width)))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TorchQwenViT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        w = cfg.width
        self.conv1 = nn.Conv2d(3, w, cfg.patch_size, cfg.patch_size, bias=False)
        self.positional_embedding = nn.Parameter(0.02 * torch.randn(cfg.pos_table_grid ** 2, w))
        self.ln_pre = nn.LayerNorm(w, eps=cfg.eps)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(
            [TorchBlock(w, cfg.heads, cfg.mlp_dim, cfg.eps) for _ in range(cfg.layers)])
        self.attn_pool = TorchResampler(cfg.pool_grid, cfg.output_dim, cfg.pool_heads, w, eps=cfg.eps)
        self.ln_post = nn.LayerNorm(cfg.output_dim, eps=cfg.eps)
        self.proj = nn.Parameter(cfg.output_dim ** -0.5 * torch.randn(cfg.output_dim, cfg.output_dim))

    def forward(self, x):  # [N, 3, S, S]
        x = self.conv1(x).flatten(2).permute(0, 2, 1)
        x = self.ln_pre(x + get_abs_pos(self.positional_embedding, x.size(1)))
        for block in self.transformer.resblocks:
            x = block(x)
        return self.ln_post(self.attn_pool(x)) @ self.proj

