"""Diffusion: noise schedules, samplers and guidance (the U-Net and VAE come with issue 4's rest)."""
