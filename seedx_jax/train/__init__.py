"""Training (docs/training_recipe.md): stages, the jitted step, Grain data, Orbax checkpoints; run with
`python -m seedx_jax.train --config <stage>[:tiny] --workdir DIR`."""
