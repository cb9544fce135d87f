"""A stencil against scipy.ndimage: Gaussian blur on the CPU.

``flowgpu.kernels.image.gaussian_blur`` (two separable passes, compiled by
Numba, parallel over rows) against ``scipy.ndimage.gaussian_filter`` with the
same sigma, edges (``mode="nearest"``) and ``truncate``, on float32 images:
the 24 Kodak photos (512 x 768 x 3) one after the other, and one large
grayscale image (random, 4096 x 4096). Every result is checked against
ndimage's in the run; contenders are interleaved and the median of
``--repeat`` runs is reported, with the ratio.

    python benchmarks/stencil.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from flowgpu.kernels import image as im

KODAK = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"


def load_photos() -> list[np.ndarray]:
    paths = sorted(KODAK.glob("*.png"))
    if not paths:
        raise SystemExit(f"the Kodak photos are not at {KODAK}")
    return [np.asarray(Image.open(p).convert("RGB"), np.float32) / 255 for p in paths]


def ours(images: list[np.ndarray], sigma: float) -> list[np.ndarray]:
    return [im.gaussian_blur(x, sigma=sigma, device="cpu") for x in images]


def scipy_blur(images: list[np.ndarray], sigma: float) -> list[np.ndarray]:
    return [ndi.gaussian_filter(x, sigma=(sigma, sigma, 0)[:x.ndim], mode="nearest",
                                truncate=4.0) for x in images]


def main(argv: list[str] | None = None) -> list[str]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    cases = [("24 Kodak photos 512x768x3", load_photos()),
             ("one 4096x4096 random image", [rng.random((4096, 4096), np.float32)])]
    lines = ["| images | sigma | scipy.ndimage s | flowgpu s | flowgpu / scipy speed |",
             "|---|---:|---:|---:|---:|"]
    for label, images in cases:
        for sigma in (0.8, 2.0):
            ours(images[:1], sigma)  # compile (or load from the cache) outside the timing
            for got, want in zip(ours(images, sigma), scipy_blur(images, sigma)):
                np.testing.assert_allclose(got, want, atol=1e-5)
            times: dict[str, list[float]] = {"scipy": [], "ours": []}
            for _ in range(args.repeat):
                for name, fn in (("scipy", scipy_blur), ("ours", ours)):
                    t = time.perf_counter()
                    fn(images, sigma)
                    times[name].append(time.perf_counter() - t)
            a, b = statistics.median(times["scipy"]), statistics.median(times["ours"])
            lines.append(f"| {label} | {sigma} | {a:.3f} | {b:.3f} | {a / b:.2f}x |")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
