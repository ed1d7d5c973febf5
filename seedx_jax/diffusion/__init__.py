"""Diffusion: SDXL U-Net and VAE, noise schedules, guidance and the jitted sampling loop."""
