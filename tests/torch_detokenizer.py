"""PyTorch statement of ResamplerXLV2 (SEED-X resampler.py); `state_dict()` gives the released `resampler.*` keys."""
import torch
import torch.nn.functional as F
from torch import nn


class TorchPerceiverAttention(nn.Module):
    def __init__(self, dim, dim_head, heads):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = dim_head * heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x, latents):
        x, latents = self.norm1(x), self.norm2(latents)
        n, q_len, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)

        def heads(t):
            return t.reshape(n, t.shape[1], self.heads, -1).transpose(1, 2)

        q, k, v = heads(q), heads(k), heads(v)
        s = self.dim_head ** -0.25
        w = ((q * s) @ (k * s).transpose(-2, -1)).float().softmax(dim=-1).to(q.dtype)
        return self.to_out((w @ v).transpose(1, 2).reshape(n, q_len, -1))


class TorchAttentionPool2d(nn.Module):
    def __init__(self, seq_len, dim, heads, out_dim):
        super().__init__()
        self.heads = heads
        self.positional_embedding = nn.Parameter(torch.randn(seq_len + 1, dim) / dim ** 0.5)
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, dim) for _ in range(3))
        self.c_proj = nn.Linear(dim, out_dim)

    def forward(self, x):  # [N, L, dim]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding.to(x.dtype)
        n, length, dim = x.shape

        def heads(t):
            return t.reshape(n, length, self.heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)))
        return self.c_proj(out.transpose(1, 2).reshape(n, length, dim))[:, 0]  # every token attends; keep 0


class TorchResamplerXLV2(nn.Module):
    def __init__(self, dim, depth, dim_head, heads, num_queries, embedding_dim, output1_dim, output2_dim,
                 ff_mult=4):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim ** 0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.layers = nn.ModuleList([nn.ModuleList([
            TorchPerceiverAttention(dim, dim_head, heads),
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * ff_mult, bias=False), nn.GELU(),
                          nn.Linear(dim * ff_mult, dim, bias=False)),
        ]) for _ in range(depth)])
        self.norm_out = nn.LayerNorm(dim)
        self.unet_proj_1 = nn.Linear(dim, output1_dim)
        self.unet_proj_2 = nn.Linear(dim, output2_dim)
        self.unet_attnpool = TorchAttentionPool2d(num_queries, dim, heads, output2_dim)

    def forward(self, x):
        latents = self.latents.repeat(x.size(0), 1, 1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = latents + attn(x, latents)
            latents = latents + ff(latents)
        hidden = self.norm_out(latents)
        prompt = torch.cat([self.unet_proj_1(hidden), self.unet_proj_2(hidden)], dim=-1)
        return prompt, self.unet_attnpool(hidden)
