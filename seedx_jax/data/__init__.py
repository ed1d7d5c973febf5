"""Training data: SEED-X sequence construction (docs/training_recipe.md)."""
