"""The cheap dropout masks of seedx_jax.nn.dropout: rate, scaling, independence, keys."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seedx_jax.nn.dropout import dropout, keep_mask


@pytest.mark.parametrize("rate", [0.05, 0.5])
def test_keep_fraction_matches_the_rate_in_every_column_group(rate):
    mask = np.asarray(keep_mask(jax.random.key(0), (2048, 1003), rate))  # 1003: not a multiple of 4
    n = mask.size
    assert abs(mask.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)
    # the four 16-bit draws of a hash call land in four column blocks: each must keep 1 - rate alone
    for block in np.array_split(mask, 4, axis=1):
        assert abs(block.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / block.size)


def test_masks_are_independent_across_keys_and_positions():
    rate = 0.5
    a = np.asarray(keep_mask(jax.random.key(1), (512, 512), rate), np.float64)
    b = np.asarray(keep_mask(jax.random.key(2), (512, 512), rate), np.float64)
    n = a.size
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 5 / np.sqrt(n)
    # neighbouring elements (same hash call or next counter) must not be correlated either
    assert abs(np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1]) < 5 / np.sqrt(n)
    assert abs(np.corrcoef(a[:-1].ravel(), a[1:].ravel())[0, 1]) < 5 / np.sqrt(n)
    # the four draws of one hash call sit 512 / 4 columns apart
    blocks = np.split(a, 4, axis=1)
    for i in range(4):
        for j in range(i + 1, 4):
            assert abs(np.corrcoef(blocks[i].ravel(), blocks[j].ravel())[0, 1]) < 5 / np.sqrt(n / 4)


def test_dropout_scales_kept_values_and_is_a_function_of_the_key():
    x = jax.random.normal(jax.random.key(3), (64, 96))
    y = dropout(x, 0.25, jax.random.key(4))
    kept = np.asarray(y != 0)
    assert 0.6 < kept.mean() < 0.9
    np.testing.assert_allclose(np.asarray(y)[kept], np.asarray(x / 0.75)[kept], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(dropout(x, 0.25, jax.random.key(4))), np.asarray(y))
    assert not np.array_equal(np.asarray(dropout(x, 0.25, jax.random.key(5))), np.asarray(y))
    raw = dropout(x, 0.25, jax.random.PRNGKey(4))  # raw uint32 keys work as well
    assert raw.shape == x.shape and raw.dtype == x.dtype


def test_rate_zero_keeps_everything_and_bad_rates_are_refused():
    assert bool(jnp.all(keep_mask(jax.random.key(0), (8, 8), 0.0)))
    with pytest.raises(ValueError, match="rate"):
        keep_mask(jax.random.key(0), (8, 8), 1.0)
