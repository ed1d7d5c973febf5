"""Language-model losses."""
import jax
import jax.numpy as jnp

IGNORE_INDEX = -100


def cross_entropy(logits: jax.Array, labels: jax.Array, ignore_index: int = IGNORE_INDEX) -> jax.Array:
    """Mean CE over positions whose label != ignore_index. logits `[..., V]`, labels `[...]`.

    Computed in float32 (SEED-X computes it in the bf16 model dtype; the upcast only adds precision).
    """
    logits = logits.astype(jnp.float32)
    valid = labels != ignore_index
    safe = jnp.where(valid, labels, 0)
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    nll = jnp.where(valid, logz - picked, 0.0)
    return nll.sum() / jnp.maximum(valid.sum(), 1)


def next_token_loss(logits: jax.Array, labels: jax.Array, ignore_index: int = IGNORE_INDEX) -> jax.Array:
    """CE of logits `[B, T, V]` at t against labels `[B, T]` at t + 1 (the HF causal-LM shift)."""
    return cross_entropy(logits[:, :-1], labels[:, 1:], ignore_index)
