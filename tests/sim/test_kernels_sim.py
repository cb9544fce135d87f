"""The ``gpu`` target under the CUDA simulator: every kernel against its reference,
on tiny inputs (the simulator runs each thread in Python).

The simulator runs kernel bodies as Python on NumPy scalars, whose float32
rounding can differ from Numba's typed code by an ulp, so float results are
compared with a tolerance; dtypes and integer results must match exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image

from flowgpu.device import gpu_available
from flowgpu.errors import KernelError
from flowgpu.kernels import etl
from flowgpu.kernels import image as im
from flowgpu.numeric import elementwise, fuse, kernel

# Under the simulator in CI; on a real GPU in `make gpu-check` (--real-gpu).
pytestmark = [pytest.mark.cudasim,
              pytest.mark.skipif(not gpu_available(),
                                 reason="needs NUMBA_ENABLE_CUDASIM=1 or a GPU")]

RNG = np.random.default_rng(5)


@pytest.fixture
def tiny8(kodak_dir) -> np.ndarray:
    img = np.asarray(Image.open(sorted(kodak_dir.glob("*.png"))[1]).convert("RGB"))
    return np.ascontiguousarray(img[200:208, 300:312])  # 8x12x3


@pytest.fixture
def tiny(tiny8) -> np.ndarray:
    return (tiny8 / 255.0).astype(np.float32)


@elementwise
def scale_add(x, k=2.0, b=0.5):
    return x * k + b


@elementwise
def ratio(a, b):
    return a / b


def test_device_arrays_in_device_array_out(tiny):
    from numba import cuda

    d = cuda.to_device(tiny)
    out = im.gain(d, k=2.0)
    assert not isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out.copy_to_host(), tiny * 2.0, rtol=1e-6)
    # a negatively strided device view is read in place, correctly
    view = d[::-1, ::2]
    np.testing.assert_allclose(scale_add(view).copy_to_host(), tiny[::-1, ::2] * 2 + 0.5,
                               rtol=1e-6)


@pytest.mark.parametrize(("dtype", "params", "expected"), [
    (np.float32, {"k": 2.0}, np.float32),
    (np.float32, {"k": np.float64(2.0)}, np.float64),
    (np.int32, {"k": 3, "b": 1}, np.int32),
    (np.int32, {"k": 2.5}, np.float64),
])
def test_dtype_rules_match_cpu(dtype, params, expected):
    x = (RNG.random(20) * 10).astype(dtype)
    gpu = scale_add(x, device="gpu", **params)
    cpu = scale_add(x, device="cpu", **params)
    assert gpu.dtype == cpu.dtype == expected
    np.testing.assert_allclose(gpu, cpu, rtol=1e-6)


def test_fusion_equals_unfused_on_gpu(tiny):
    stages = [(im.gain, {"k": 1.7}), (im.gamma, {"g": 2.2}), (im.clip, {})]
    ref = tiny
    for op, p in stages:
        ref = op(ref, device="gpu", **p)
    got = fuse(stages)(tiny, device="gpu")
    assert got.dtype == ref.dtype and np.array_equal(got, ref)


def test_zero_size_nan_inf_and_errors():
    e = np.empty((0, 4), np.float32)
    assert scale_add(e, device="gpu").shape == (0, 4)
    assert im.sobel(np.empty((0, 4, 3), np.float32), device="gpu").shape == (0, 4, 3)
    x = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)
    y = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(ratio(x, y, device="gpu"), x / y)
    with pytest.raises(KernelError, match="unknown parameter"):
        scale_add(x, kk=1.0, device="gpu")

    @kernel(out="like:img")
    def bad_kernel(out, i, img):
        out[i] = img[i].nonexistent

    with pytest.raises(KernelError, match="bad_kernel"):
        bad_kernel(np.ones(3), device="gpu")


def test_image_kernels(tiny8, tiny):
    np.testing.assert_array_equal(im.to_float(tiny8, device="gpu"),
                                  (tiny8 / 255.0).astype(np.float32))
    np.testing.assert_array_equal(im.to_uint8(tiny, device="gpu"), tiny8)
    from skimage.color import rgb2gray
    from skimage.transform import resize as sk_resize

    np.testing.assert_allclose(im.grayscale(tiny, device="gpu"), rgb2gray(tiny), atol=1e-6)
    np.testing.assert_allclose(
        im.resize(tiny, height=5, width=7, device="gpu"),
        sk_resize(tiny.astype(np.float64), (5, 7, 3), order=1, mode="edge",
                  anti_aliasing=False), atol=1e-5)
    np.testing.assert_allclose(im.resize(tiny, height=4, width=6, method="area", device="gpu"),
                               tiny.reshape(4, 2, 6, 2, 3).mean(axis=(1, 3)), atol=1e-6)
    blur = ndi.gaussian_filter(tiny.astype(np.float64), sigma=(1.0, 1.0, 0), mode="nearest")
    np.testing.assert_allclose(im.gaussian_blur(tiny, sigma=1.0, device="gpu"), blur, atol=1e-5)
    np.testing.assert_allclose(im.unsharp_mask(tiny, sigma=1.0, amount=0.5, device="gpu"),
                               tiny + 0.5 * (tiny - blur), atol=1e-5)
    sob = np.stack([np.hypot(ndi.sobel(tiny[..., c].astype(np.float64), 0, mode="nearest"),
                             ndi.sobel(tiny[..., c].astype(np.float64), 1, mode="nearest"))
                    for c in range(3)], axis=-1)
    np.testing.assert_allclose(im.sobel(tiny, device="gpu"), sob, atol=1e-4)
    hist = im.histogram(tiny8, device="gpu")
    for c in range(3):
        np.testing.assert_array_equal(hist[c], np.bincount(tiny8[..., c].ravel(), minlength=256))


def test_etl_kernels():
    keys = RNG.integers(0, 3, 40)
    vals = RNG.normal(size=40)
    vals[::9] = np.nan
    ok = ~np.isnan(vals)
    np.testing.assert_allclose(etl.group_sum(keys, vals, n_groups=4, device="gpu"),
                               np.bincount(keys[ok], vals[ok], minlength=4), atol=1e-12)
    np.testing.assert_array_equal(etl.group_max(keys, vals, n_groups=4, device="gpu"),
                                  etl.group_max(keys, vals, n_groups=4, device="cpu"))
    np.testing.assert_allclose(etl.group_mean(keys, vals, n_groups=4, device="gpu"),
                               etl.group_mean(keys, vals, n_groups=4, device="cpu"), atol=1e-12)
    d = np.array([-1.0, 10.0, 30.0, 90.0, np.nan])
    np.testing.assert_array_equal(etl.delay_class(d, device="gpu"), [0, 1, 2, 3, -1])
    mask = vals > 0
    np.testing.assert_array_equal(etl.compact(mask, vals, device="gpu"), vals[mask])
