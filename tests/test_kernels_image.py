"""Image kernels on the CPU against SciPy / scikit-image / NumPy references.

Tolerances: float32 outputs within 1e-5 absolute of float64 references on
[0, 1] images (1e-4 for sobel, whose values reach ~4); exact for integer
outputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image

from flowgpu.kernels import image as im

skimage = pytest.importorskip("skimage")
from skimage.color import rgb2gray  # noqa: E402
from skimage.transform import resize as sk_resize  # noqa: E402


@pytest.fixture
def photo8(kodak_dir) -> np.ndarray:
    img = np.asarray(Image.open(sorted(kodak_dir.glob("*.png"))[0]).convert("RGB"))
    return np.ascontiguousarray(img[100:196, 200:328])  # a 96x128 crop, for speed


@pytest.fixture
def photo(photo8) -> np.ndarray:
    return (photo8 / 255.0).astype(np.float32)


def random_image(h=37, w=53, c=3, seed=3) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, c)).astype(np.float32)


def test_to_float_and_back(photo8):
    f = im.to_float(photo8, device="cpu")
    assert f.dtype == np.float32
    np.testing.assert_array_equal(f, (photo8 / 255.0).astype(np.float32))
    np.testing.assert_array_equal(im.to_uint8(f, device="cpu"), photo8)
    x = np.array([-0.5, np.nan, 0.5, 1 / 255 * 2.5, 2.0], dtype=np.float32)
    ref = np.floor(np.clip(np.nan_to_num(x, nan=0.0), 0, 1) * 255.0 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(im.to_uint8(x, device="cpu"), ref)


@pytest.mark.parametrize("img_kind", ["photo", "random"])
def test_grayscale(img_kind, request):
    img = request.getfixturevalue("photo") if img_kind == "photo" else random_image()
    got = im.grayscale(img, device="cpu")
    assert got.shape == img.shape[:2] and got.dtype == np.float32
    np.testing.assert_allclose(got, rgb2gray(img), atol=1e-6)


@pytest.mark.parametrize(("h", "w"), [(40, 50), (150, 97)])
def test_resize_bilinear(photo, h, w):
    got = im.resize(photo, height=h, width=w, device="cpu")
    ref = sk_resize(photo.astype(np.float64), (h, w, 3), order=1, mode="edge",
                    anti_aliasing=False)
    assert got.shape == (h, w, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5)


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    m = np.zeros((n_out, n_in))
    s = n_in / n_out
    for o in range(n_out):
        lo, hi = o * s, (o + 1) * s
        for i in range(int(lo), min(int(np.ceil(hi)), n_in)):
            m[o, i] = min(i + 1, hi) - max(i, lo)
    return m / m.sum(axis=1, keepdims=True)


def test_resize_area(photo):
    got = im.resize(photo, height=48, width=32, method="area", device="cpu")
    ref = photo.astype(np.float64).reshape(48, 2, 32, 4, 3).mean(axis=(1, 3))  # block mean
    np.testing.assert_allclose(got, ref, atol=1e-6)
    img = random_image()
    got = im.resize(img, height=15, width=22, method="area", device="cpu")
    my, mx = _area_matrix(37, 15), _area_matrix(53, 22)
    ref = np.einsum("oi,ijc,pj->opc", my, img.astype(np.float64), mx)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_resize_grayscale_2d(photo):
    g = np.ascontiguousarray(photo[..., 1])
    got = im.resize(g, height=30, width=41, device="cpu")
    ref = sk_resize(g.astype(np.float64), (30, 41), order=1, mode="edge", anti_aliasing=False)
    assert got.shape == (30, 41)
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("sigma", [0.8, 2.0])
def test_gaussian_blur(photo, sigma):
    got = im.gaussian_blur(photo, sigma=sigma, device="cpu")
    ref = ndi.gaussian_filter(photo.astype(np.float64), sigma=(sigma, sigma, 0),
                              mode="nearest", truncate=4.0)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_unsharp_mask(photo):
    got = im.unsharp_mask(photo, sigma=1.5, amount=0.8, device="cpu")
    blurred = ndi.gaussian_filter(photo.astype(np.float64), sigma=(1.5, 1.5, 0),
                                  mode="nearest", truncate=4.0)
    ref = photo + 0.8 * (photo - blurred)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("img_kind", ["photo", "random"])
def test_sobel(img_kind, request):
    img = request.getfixturevalue("photo") if img_kind == "photo" else random_image()
    got = im.sobel(img, device="cpu")
    ref = np.stack([np.hypot(ndi.sobel(img[..., c].astype(np.float64), 0, mode="nearest"),
                             ndi.sobel(img[..., c].astype(np.float64), 1, mode="nearest"))
                    for c in range(img.shape[2])], axis=-1)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_elementwise_image_ops(photo):
    x = photo
    np.testing.assert_allclose(im.gain(x, k=1.3, device="cpu"), x * 1.3, rtol=1e-6)
    np.testing.assert_allclose(im.gamma(x, g=2.2, device="cpu"), x ** (1 / 2.2), rtol=1e-6)
    np.testing.assert_array_equal(im.clip(x * 2 - 0.5, device="cpu"), np.clip(x * 2 - 0.5, 0, 1))
    np.testing.assert_allclose(im.normalise(x, mean=0.4, std=0.2, device="cpu"),
                               (x - 0.4) / 0.2, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(im.threshold(x, t=0.5, device="cpu"),
                                  (x > 0.5).astype(np.float32))


def test_histogram(photo8):
    got = im.histogram(photo8, device="cpu")
    assert got.shape == (3, 256) and got.dtype == np.int64
    for c in range(3):
        np.testing.assert_array_equal(got[c], np.bincount(photo8[..., c].ravel(), minlength=256))
    big = np.random.default_rng(1).integers(0, 256, (300, 200), dtype=np.uint8)  # > 1 chunk
    np.testing.assert_array_equal(im.histogram(big, device="cpu")[0],
                                  np.bincount(big.ravel(), minlength=256))
    assert im.histogram(np.zeros((0, 4, 3), np.uint8), device="cpu").sum() == 0


def test_image_kernels_on_views(photo):
    view = photo[::-1, ::2]
    np.testing.assert_allclose(im.sobel(view, device="cpu"),
                               im.sobel(np.ascontiguousarray(view), device="cpu"), atol=0)
    np.testing.assert_allclose(im.gaussian_blur(view, sigma=1.0, device="cpu"),
                               im.gaussian_blur(np.ascontiguousarray(view), sigma=1.0,
                                                device="cpu"), atol=0)


def test_sobel_of_an_integer_image_is_float32_and_does_not_wrap():
    import scipy.ndimage as ndi

    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    out = im.sobel(img, device="cpu")
    f = img.astype(np.float64)
    ref = np.stack([np.hypot(ndi.sobel(f[..., c], 0, mode="nearest"),
                             ndi.sobel(f[..., c], 1, mode="nearest")) for c in range(3)], -1)
    assert out.dtype == np.float32 and ref.max() > 255
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-3)
