"""Training: optimizer and schedule (SEEDX.md §11.1), the jitted train step."""
