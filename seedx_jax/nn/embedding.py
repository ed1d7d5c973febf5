"""Token embedding table `[vocab, dim]` (same layout as torch `nn.Embedding`)."""
import jax
import jax.numpy as jnp
from flax import nnx


class Embedding(nnx.Module):
    def __init__(self, num_embeddings: int, features: int, *, dtype=jnp.float32,
                 param_dtype=jnp.float32, init_std: float = 0.02, rngs: nnx.Rngs):
        self.dtype = dtype
        self.embedding = nnx.Param(
            init_std * jax.random.normal(rngs.params(), (num_embeddings, features), param_dtype),
            logical_axes=("vocab", "embed"),
        )

    def __call__(self, ids: jax.Array) -> jax.Array:
        """ids `[...]` int -> `[..., features]`."""
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)
