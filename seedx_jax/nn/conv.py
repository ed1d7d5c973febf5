"""2-D convolution, NHWC activations and an HWIO kernel (torch `[out, in, kh, kw]` transposed)."""
import jax
import jax.numpy as jnp
from flax import nnx


class Conv2d(nnx.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 padding: int | tuple[tuple[int, int], tuple[int, int]] = 0, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.stride = stride
        self.padding = ((padding, padding), (padding, padding)) if isinstance(padding, int) else padding
        self.dtype = dtype
        fan_in = in_channels * kernel_size * kernel_size
        self.kernel = nnx.Param(
            jax.random.normal(rngs.params(), (kernel_size, kernel_size, in_channels, out_channels), param_dtype)
            / fan_in ** 0.5, logical_axes=(None, None, None, "embed"))
        self.bias = nnx.Param(jnp.zeros((out_channels,), param_dtype), logical_axes=("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x `[N, H, W, in]` -> `[N, H', W', out]`."""
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), self.kernel[...].astype(self.dtype), (self.stride, self.stride),
            self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + self.bias[...].astype(self.dtype)
