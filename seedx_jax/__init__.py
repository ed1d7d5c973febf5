"""seedx_jax: SEED-X (arXiv 2404.14396) in JAX / Flax NNX. The runtime never imports torch."""
__version__ = "0.1.0"
