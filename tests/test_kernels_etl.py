"""ETL kernels on the CPU against NumPy references."""

from __future__ import annotations

import numpy as np
import pytest

from flowgpu.errors import KernelError
from flowgpu.kernels import etl

RNG = np.random.default_rng(11)


def test_delay_class():
    d = np.array([-5.0, 0.0, 1.0, 14.9, 15.0, 59.0, 60.0, 300.0, np.nan])
    got = etl.delay_class(d, device="cpu")
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, [0, 0, 1, 1, 2, 2, 3, 3, -1])


def test_speed_mph():
    dist = RNG.integers(100, 3000, 500)
    air = RNG.integers(20, 600, 500)
    air[:3] = 0
    got = etl.speed_mph(dist, air, device="cpu")
    with np.errstate(divide="ignore"):
        ref = dist / (air / 60.0)
    assert got.dtype == ref.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert np.isinf(got[:3]).all()


def test_compact():
    v, k = RNG.normal(size=1000), RNG.integers(0, 9, 1000)
    mask = v > 0.3
    got_v, got_k = etl.compact(mask, v, k, device="cpu")
    np.testing.assert_array_equal(got_v, v[mask])
    np.testing.assert_array_equal(got_k, k[mask])


@pytest.mark.parametrize("n", [0, 1000, 150_000])  # 150k rows: several chunks
def test_group_reductions(n):
    g = 7
    keys = RNG.integers(0, g - 1, n)  # the last group stays empty
    vals = RNG.normal(size=n)
    vals[::13] = np.nan
    ok = ~np.isnan(vals)
    total = np.bincount(keys[ok], vals[ok], minlength=g)
    count = np.bincount(keys[ok], minlength=g).astype(np.float64)
    np.testing.assert_allclose(etl.group_sum(keys, vals, n_groups=g, device="cpu"), total,
                               rtol=1e-10, atol=1e-9)
    np.testing.assert_array_equal(etl.group_count(keys, vals, n_groups=g, device="cpu"), count)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
    np.testing.assert_allclose(etl.group_mean(keys, vals, n_groups=g, device="cpu"), mean,
                               rtol=1e-10, atol=1e-9)
    mins = [np.min(vals[ok & (keys == i)]) if (ok & (keys == i)).any() else np.nan
            for i in range(g)]
    maxs = [np.max(vals[ok & (keys == i)]) if (ok & (keys == i)).any() else np.nan
            for i in range(g)]
    np.testing.assert_array_equal(etl.group_min(keys, vals, n_groups=g, device="cpu"), mins)
    np.testing.assert_array_equal(etl.group_max(keys, vals, n_groups=g, device="cpu"), maxs)


def test_group_bad_keys():
    with pytest.raises(KernelError, match="integers"):
        etl.group_sum(np.ones(3), np.ones(3), n_groups=2, device="cpu")
