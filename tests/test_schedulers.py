"""Euler scheduler vs diffusers' EulerDiscreteScheduler (SDXL config) and the edit guidance formula."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

from seedx_jax.diffusion.guidance import edit_guidance
from seedx_jax.diffusion.schedulers import (NoiseScheduleConfig, alphas_cumprod, euler_schedule, euler_step,
                                            scale_model_input)

SDXL = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            prediction_type="epsilon", timestep_spacing="leading", steps_offset=1, interpolation_type="linear",
            use_karras_sigmas=False)


def reference(steps: int, **overrides) -> EulerDiscreteScheduler:
    scheduler = EulerDiscreteScheduler(**{**SDXL, **overrides})
    scheduler.set_timesteps(steps)
    return scheduler


@pytest.mark.parametrize("steps", [1, 4, 20, 30, 50, 999])
@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
def test_schedule_is_identical(steps, spacing):
    ref = reference(steps, timestep_spacing=spacing)
    ours = euler_schedule(NoiseScheduleConfig(timestep_spacing=spacing), steps)
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy())
    # torch's SIMD linspace and SLEEF sqrt are not bit-reproducible across CPUs: allow 4 ulps
    np.testing.assert_allclose(ours.sigmas, ref.sigmas.numpy(), rtol=5e-7, atol=0)
    assert ours.init_noise_sigma == pytest.approx(float(ref.init_noise_sigma), rel=1e-7)


def test_alphas_cumprod_and_fact_sheet_values():
    np.testing.assert_allclose(alphas_cumprod(NoiseScheduleConfig()),
                               EulerDiscreteScheduler(**SDXL).alphas_cumprod.numpy(), rtol=3e-7, atol=0)
    s = euler_schedule(NoiseScheduleConfig(), 50)  # docs/detokenizer.md#euler-scheduler
    assert s.timesteps[0] == 981 and s.timesteps[-1] == 1 and np.all(np.diff(s.timesteps) == -20)
    np.testing.assert_allclose(s.sigmas[:3], [13.1204, 11.6761, 10.4251], atol=1e-4)
    np.testing.assert_allclose(s.sigmas[-4:], [0.2018, 0.1415, 0.0413, 0.0], atol=1e-4)
    assert s.init_noise_sigma == pytest.approx(13.1585, abs=1e-4)


def test_steps_match_diffusers():
    ref = reference(8)
    ours = euler_schedule(NoiseScheduleConfig(), 8)
    rng = np.random.default_rng(0)
    sample = rng.normal(size=(2, 4, 8, 8)).astype(np.float32) * ours.init_noise_sigma
    x_ref, x_ours = torch.tensor(sample), jnp.asarray(sample)
    for i, t in enumerate(ref.timesteps):
        eps = rng.normal(size=sample.shape).astype(np.float32)
        scaled_ref = ref.scale_model_input(x_ref, t).numpy()
        scaled = scale_model_input(x_ours, ours.sigmas[i])
        assert np.abs(np.asarray(scaled) - scaled_ref).max() <= 1e-5 * np.abs(scaled_ref).max(), i
        x_ref = ref.step(torch.tensor(eps), t, x_ref).prev_sample
        x_ours = euler_step(jnp.asarray(eps), x_ours, ours.sigmas[i], ours.sigmas[i + 1])
        scale = np.abs(x_ref.numpy()).max()
        assert np.abs(np.asarray(x_ours) - x_ref.numpy()).max() <= 1e-5 * scale, i


def test_edit_guidance_matches_the_formula():
    rng = np.random.default_rng(1)
    eps_t, eps_i, eps_u, x = (rng.normal(size=(1, 4, 6, 6)) for _ in range(4))
    sigma = 3.7
    # SEED-X-Edit guidance, written in eps space (equal because the coefficients sum to 1)
    want = eps_u + 7.5 * (eps_t - eps_i) + 1.5 * (eps_i - eps_u)
    got = edit_guidance(*(jnp.asarray(a, jnp.float32) for a in (eps_t, eps_i, eps_u, x)), jnp.float32(sigma))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
    got2 = edit_guidance(*(jnp.asarray(a, jnp.float32) for a in (eps_t, eps_i, eps_u, x)), jnp.float32(sigma),
                         text_scale=3.0, image_scale=2.0)
    np.testing.assert_allclose(np.asarray(got2), eps_u + 3.0 * (eps_t - eps_i) + 2.0 * (eps_i - eps_u),
                               rtol=1e-4, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"num_steps=0 must be in \[1, 1000\]"):
        euler_schedule(NoiseScheduleConfig(), 0)
    with pytest.raises(ValueError, match="timestep_spacing='middle' is not one of"):
        NoiseScheduleConfig(timestep_spacing="middle")


def test_training_add_noise_matches_ddpm_scheduler():
    import jax

    from diffusers import DDPMScheduler

    from seedx_jax.diffusion.training import add_noise, sample_timesteps

    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    rng = np.random.default_rng(2)
    x0, noise = (rng.normal(size=(4, 8, 8, 4)).astype(np.float32) for _ in range(2))
    t = np.array([0, 1, 500, 999])
    want = ref.add_noise(torch.tensor(x0), torch.tensor(noise), torch.tensor(t)).numpy()
    got = add_noise(jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(t), jnp.asarray(alphas_cumprod(NoiseScheduleConfig())))
    assert np.abs(np.asarray(got) - want).max() <= 1e-6 * np.abs(want).max()
    ts = sample_timesteps(jax.random.key(0), 512)
    assert ts.dtype == jnp.int32 and int(ts.min()) >= 0 and int(ts.max()) <= 999 and len(set(ts.tolist())) > 300
