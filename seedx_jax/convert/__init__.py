"""Weight conversion: released PyTorch SEED-X artefacts <-> seedx_jax Orbax checkpoints (`seedx-jax convert`)."""
