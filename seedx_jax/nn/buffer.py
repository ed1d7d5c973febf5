"""Non-trainable tensors that checkpoints store (torch parameters with requires_grad=False)."""
from flax import nnx


class Buffer(nnx.Variable):
    """Loaded and saved like a parameter, never selected by `nnx.Param` filters (no gradient)."""
