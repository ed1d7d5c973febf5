"""Helpers shared by the PyTorch parity tests and benches."""
import numpy as np
import torch
from torch import nn


def max_rel_diff(ours, ref) -> float:
    """max |ours - ref| / max |ref| (the tolerance measure of the parity tests)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial values for every 1-D parameter (norm affines and biases default to 1 / 0).

    Norm weights (names with "ln" or "norm") become 1 + 0.1 N(0, 1), norm biases 0.1 N(0, 1), other
    1-D parameters 0.05 N(0, 1); fixed `pos_embed` tables and matrices keep their values.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("pos_embed") or p.ndim != 1:
                continue
            if "ln" in name or "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return module.float().eval()
