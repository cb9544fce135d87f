"""Image kernels on float32 ``HxW`` or ``HxWxC`` images (values in [0, 1]) unless stated.

Each is a :class:`flowgpu.numeric.NumericOp`: ``resize(img, height=256,
width=256)`` on NumPy arrays, or ``stream.map(resize, height=..., width=...)``
in a graph. References the tests compare against are named per kernel.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from flowgpu.errors import KernelError
from flowgpu.numeric import composite, elementwise, kernel

__all__ = ["to_float", "to_uint8", "gain", "gamma", "clip", "normalise", "threshold",
           "grayscale", "resize", "gaussian_blur", "unsharp_mask", "sobel", "histogram",
           "gaussian_weights"]

# -- elementwise -------------------------------------------------------------------------


@elementwise(out_dtype=np.float32)
def to_float(x):
    """uint8 [0, 255] -> float32 [0, 1] (``x / 255``, rounded once to float32)."""
    return x / 255.0


@elementwise(out_dtype=np.uint8)
def to_uint8(x):
    """float [0, 1] -> uint8: clipped to [0, 1], scaled by 255, rounded half up; NaN -> 0."""
    if not x > 0.0:  # also catches NaN
        return 0
    if x >= 1.0:
        return 255
    return math.floor(x * 255.0 + 0.5)


@elementwise
def gain(x, k=1.0):
    """``x * k``."""
    return x * k


@elementwise
def gamma(x, g=2.2):
    """``x ** (1 / g)`` (NaN for negative x, as in NumPy)."""
    return x ** (1.0 / g)


@elementwise
def clip(x, lo=0.0, hi=1.0):
    """``min(max(x, lo), hi)``; NaN stays NaN (as ``np.clip``)."""
    if x != x:
        return x
    return min(max(x, lo), hi)


@elementwise
def normalise(x, mean=0.5, std=0.25):
    """``(x - mean) / std`` (std 0 gives inf/NaN per IEEE)."""
    return (x - mean) / std


@elementwise
def threshold(x, t=0.5):
    """1 where ``x > t``, else 0, in the input's dtype (NaN -> 0)."""
    return 1.0 if x > t else 0.0


# -- index kernels -----------------------------------------------------------------------
# The index kernels work on HxWxC; the composites below give HxW images a
# trailing channel axis (a view) and drop it again.

# scikit-image's rgb2gray weights (ITU-R BT.709 luma): 0.2125 R + 0.7154 G + 0.0721 B
_GRAY = (0.2125, 0.7154, 0.0721)


@kernel(out=lambda img: (img.shape[:2], img.dtype), ndim={"img": 3})
def _gray(out, y, x, img):
    out[y, x] = 0.2125 * img[y, x, 0] + 0.7154 * img[y, x, 1] + 0.0721 * img[y, x, 2]


@composite(ndim={"img": 3})
def grayscale(run, img):
    """HxWx3 (or HxWx4, alpha ignored) -> HxW with skimage's ``rgb2gray`` weights
    (ITU-R BT.709: 0.2125 R + 0.7154 G + 0.0721 B)."""
    if img.shape[2] not in (3, 4):
        raise KernelError(f"grayscale needs 3 or 4 channels, got {img.shape[2]}",
                          kernel="grayscale")
    return run(_gray, img)


def _resized(img, sy, sx, height, width):
    return (height, width, img.shape[2]), img.dtype


@kernel(out=_resized)
def _bilinear(out, y, x, c, img, sy, sx, height, width):
    h = img.shape[0]
    w = img.shape[1]
    # pixel centres: output pixel y covers source [y*sy, (y+1)*sy)
    fy = min(max((y + 0.5) * sy - 0.5, 0.0), h - 1.0)
    fx = min(max((x + 0.5) * sx - 0.5, 0.0), w - 1.0)
    y0 = int(fy)
    x0 = int(fx)
    y1 = min(y0 + 1, h - 1)
    x1 = min(x0 + 1, w - 1)
    wy = fy - y0
    wx = fx - x0
    top = (1.0 - wx) * img[y0, x0, c] + wx * img[y0, x1, c]
    bottom = (1.0 - wx) * img[y1, x0, c] + wx * img[y1, x1, c]
    out[y, x, c] = (1.0 - wy) * top + wy * bottom


@kernel(out=_resized)
def _area(out, y, x, c, img, sy, sx, height, width):
    h = img.shape[0]
    w = img.shape[1]
    ylo = y * sy
    yhi = min((y + 1) * sy, h * 1.0)
    xlo = x * sx
    xhi = min((x + 1) * sx, w * 1.0)
    acc = 0.0
    for iy in range(int(ylo), min(int(math.ceil(yhi)), h)):
        wy = min(iy + 1.0, yhi) - max(iy * 1.0, ylo)
        row = 0.0
        for ix in range(int(xlo), min(int(math.ceil(xhi)), w)):
            wx = min(ix + 1.0, xhi) - max(ix * 1.0, xlo)
            row += wx * img[iy, ix, c]
        acc += wy * row
    out[y, x, c] = acc / ((yhi - ylo) * (xhi - xlo))


def _as3d(img: Any) -> Any:
    return img if img.ndim == 3 else img.reshape(img.shape + (1,))


def _like_input(out: Any, img: Any) -> Any:
    return out if img.ndim == 3 else out.reshape(out.shape[:2])


@composite(ndim={"img": (2, 3)})
def resize(run, img, height, width, method="bilinear"):
    """Resize to ``height x width``.

    ``"bilinear"``: pixel-centre convention (skimage ``resize(order=1,
    mode="edge", anti_aliasing=False)``). ``"area"``: each output pixel is the
    area-weighted mean of the source pixels its footprint covers (a block mean
    for integer factors; OpenCV's INTER_AREA when shrinking).
    """
    if height <= 0 or width <= 0:
        raise KernelError(f"height and width must be positive, got {height}x{width}",
                          kernel="resize")
    if method not in ("bilinear", "area"):
        raise KernelError(f"method={method!r}: expected 'bilinear' or 'area'", kernel="resize")
    op = _bilinear if method == "bilinear" else _area
    src = _as3d(img)
    sy, sx = img.shape[0] / height, img.shape[1] / width
    return _like_input(run(op, src, sy=sy, sx=sx, height=int(height), width=int(width)), img)


def gaussian_weights(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian: radius ``int(truncate * sigma + 0.5)``, normalised."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 / (float(sigma) ** 2) * x * x)
    return w / w.sum()


@kernel(out="like:img")
def _conv_x(out, y, x, c, img, w):
    r = (w.shape[0] - 1) // 2
    last = img.shape[1] - 1
    acc = 0.0
    for k in range(w.shape[0]):
        xi = min(max(x + k - r, 0), last)  # mode="nearest": the edge pixel repeats
        acc += w[k] * img[y, xi, c]
    out[y, x, c] = acc


@kernel(out="like:img")
def _conv_y(out, y, x, c, img, w):
    r = (w.shape[0] - 1) // 2
    last = img.shape[0] - 1
    acc = 0.0
    for k in range(w.shape[0]):
        yi = min(max(y + k - r, 0), last)
        acc += w[k] * img[yi, x, c]
    out[y, x, c] = acc


@composite(ndim={"img": (2, 3)})
def gaussian_blur(run, img, sigma=1.0, truncate=4.0):
    """Separable Gaussian blur per channel, two passes, edges ``mode="nearest"``
    (``scipy.ndimage.gaussian_filter`` with the same ``truncate``). Sums in
    float64; the intermediate is stored in the image's dtype."""
    if not sigma > 0:
        raise KernelError(f"sigma must be positive, got {sigma}", kernel="gaussian_blur")
    w = run.const(gaussian_weights(sigma, truncate))
    src = _as3d(img)
    return _like_input(run(_conv_y, run(_conv_x, src, w), w), img)


@elementwise
def _sharpen(x, blurred, amount):
    return x + amount * (x - blurred)


@composite(ndim={"img": (2, 3)})
def unsharp_mask(run, img, sigma=1.0, amount=1.0):
    """``img + amount * (img - gaussian_blur(img, sigma))``, not clipped (skimage's
    ``unsharp_mask`` formula without its final clip)."""
    return run(_sharpen, img, gaussian_blur.fn(run, img, sigma=sigma), amount=amount)


def _sobel_out(img):
    # a gradient magnitude leaves an integer type's range: float32 for those
    return img.shape, (img.dtype if img.dtype.kind == "f" else np.dtype(np.float32))


@kernel(out=_sobel_out)
def _sobel(out, y, x, c, img):
    h1 = img.shape[0] - 1
    w1 = img.shape[1] - 1
    ym = max(y - 1, 0)
    yp = min(y + 1, h1)
    xm = max(x - 1, 0)
    xp = min(x + 1, w1)
    a = img[ym, xm, c] * 1.0  # float64 sums, as scipy
    b = img[ym, x, c] * 1.0
    d = img[ym, xp, c] * 1.0
    e = img[y, xm, c] * 1.0
    f = img[y, xp, c] * 1.0
    g = img[yp, xm, c] * 1.0
    h = img[yp, x, c] * 1.0
    i = img[yp, xp, c] * 1.0
    gx = (d - a) + 2.0 * (f - e) + (i - g)
    gy = (g - a) + 2.0 * (h - b) + (i - d)
    out[y, x, c] = math.sqrt(gx * gx + gy * gy)


@composite(ndim={"img": (2, 3)})
def sobel(run, img):
    """Sobel gradient magnitude per channel, ``hypot(sobel(axis=0), sobel(axis=1))``
    with ``mode="nearest"`` edges (as ``scipy.ndimage.sobel``). Float images keep
    their dtype; integer images give float32 (the magnitude leaves their range)."""
    return _like_input(run(_sobel, _as3d(img)), img)


_HIST_CHUNK = 16384  # pixels per partial histogram


def _hist_grid(img, chunk):
    n = img.shape[0]
    return img.shape[1], (n + chunk - 1) // chunk


@kernel(out=lambda img, chunk: ((img.shape[1], (img.shape[0] + chunk - 1) // chunk, 256),
                                np.int64), grid=_hist_grid)
def _hist_partial(out, c, k, img, chunk):
    # each (channel, chunk) index owns the row out[c, k, :]: no two indices
    # write the same bin, so no atomics are needed on either target
    for b in range(256):
        out[c, k, b] = 0
    end = min((k + 1) * chunk, img.shape[0])
    for p in range(k * chunk, end):
        out[c, k, img[p, c]] += 1


@kernel(out=lambda part: ((part.shape[0], 256), np.int64))
def _hist_sum(out, c, b, part):
    total = 0
    for k in range(part.shape[1]):
        total += part[c, k, b]
    out[c, b] = total


@composite(ndim={"img": (2, 3)})
def histogram(run, img):
    """Counts of each value per channel of a uint8 image: ``(C, 256)`` int64.

    Two phases (see :mod:`flowgpu.numeric`): partial histograms over chunks
    of pixels, then a sum over the chunks.
    """
    if np.dtype(img.dtype) != np.uint8:
        raise KernelError(f"histogram needs a uint8 image, got {img.dtype}", kernel="histogram")
    img3 = _as3d(img)
    pixels = img3.reshape(img3.shape[0] * img3.shape[1], img3.shape[2])
    return run(_hist_sum, run(_hist_partial, pixels, chunk=_HIST_CHUNK))
