"""Training data: SEED-X sequence construction (SEEDX.md §11.4)."""
