"""The thumbnail job against a sequential script and a ThreadPoolExecutor version.

All three do the same work with the same libraries: Pillow decode (EXIF
applied), the same numeric kernels (to_float, fit_box, gaussian_blur,
unsharp_mask, to_uint8, histogram) on the CPU, Pillow PNG encode and write.
The sequential script is single-threaded (Numba's thread pool set to one
thread); the thread-pool version runs the per-image function on
``--workers`` threads. Runs are interleaved (one of each per round) and the
median per variant is reported, with ratios measured side by side.

    python benchmarks/images.py [--copies 10] [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numba

from flowgpu.graphs import thumbnails as th
from flowgpu.kernels import image as im

KODAK = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"


def make_corpus(src: pathlib.Path, dst: pathlib.Path, copies: int) -> list[str]:
    """``copies`` symlinks to each photo of ``src``: a few hundred images."""
    photos = sorted(p for p in src.iterdir() if p.suffix.lower() == ".png")
    for k in range(copies):
        for p in photos:
            (dst / f"{p.stem}_{k:02d}.png").symlink_to(p.resolve())
    return th.list_images(dst)


def process_one(root: pathlib.Path, out: pathlib.Path, path: str, params: dict) -> dict:
    """One image, start to finish, the way a plain script does it."""
    meta, pixels = th.decode(root, path, path)
    img = im.to_float(pixels, device="cpu")
    img = th.fit_box(img, device="cpu", box=params["box"])
    img = im.gaussian_blur(img, device="cpu", sigma=params["sigma"])
    img = im.unsharp_mask(img, device="cpu", sigma=params["usm_sigma"], amount=params["amount"])
    thumb = im.to_uint8(img, device="cpu")
    hist = im.histogram(thumb, device="cpu")
    return th.encode((meta, thumb, hist), out, "png", 90)


def run_sequential(root, out, files, params):
    numba.set_num_threads(1)  # per calling thread: this script is single-threaded
    try:
        return [process_one(root, out, f, params) for f in files]
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def run_pool(root, out, files, params, workers):
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda f: process_one(root, out, f, params), files))


def run_flowgpu(root, out, files, params, workers):
    report = th.run_job(root, out, device="cpu", workers=workers, **params)
    assert len(report["rows"]) == len(files) and not report.errors
    return report["rows"]


def _compute(item, params):
    meta, pixels = item
    img = im.to_float(pixels, device="cpu")
    img = th.fit_box(img, device="cpu", box=params["box"])
    img = im.gaussian_blur(img, device="cpu", sigma=params["sigma"])
    img = im.unsharp_mask(img, device="cpu", sigma=params["usm_sigma"], amount=params["amount"])
    thumb = im.to_uint8(img, device="cpu")
    return meta, thumb, im.histogram(thumb, device="cpu")


def run_pypeln(root, out, files, params, workers):
    """The same three steps as pypeln thread stages, written the pypeln way."""
    import pypeln as pl

    stage = pl.thread.map(lambda f: th.decode(root, f, f), files, workers=workers, maxsize=8)
    stage = pl.thread.map(lambda item: _compute(item, params), stage, workers=1, maxsize=8)
    stage = pl.thread.map(lambda t: th.encode(t, out, "png", 90), stage, workers=workers,
                          maxsize=8)
    return list(stage)


def run_dask(root, out, files, params, workers):
    """dask.bag over the files, the threaded scheduler, a few partitions per thread."""
    import dask
    import dask.bag as db

    with dask.config.set(scheduler="threads", num_workers=workers):
        bag = db.from_sequence(files, npartitions=4 * workers)
        return bag.map(lambda f: process_one(root, out, f, params)).compute()


def _mpire_one(shared, path):
    root, out, params = shared
    return process_one(root, out, path, params)


def run_mpire(root, out, files, params, workers):
    """mpire's process pool: one process per CPU, no GIL between them. Spawned,
    not forked: a fork after Numba's threads started can kill the child."""
    from mpire import WorkerPool

    with WorkerPool(n_jobs=workers, shared_objects=(root, out, params),
                    start_method="spawn") as pool:
        return pool.map(_mpire_one, files, chunk_size=4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", default=str(KODAK), help="a folder of PNG photos")
    ap.add_argument("--copies", type=int, default=10, help="times each photo is repeated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    src = pathlib.Path(args.input)
    if not src.is_dir():
        print(f"images benchmark: no photos at {src}", file=sys.stderr)
        return 1
    params = {"box": 256, "sigma": 0.8, "usm_sigma": 1.0, "amount": 0.6}
    with tempfile.TemporaryDirectory(prefix="flowgpu-images-") as tmp:
        root = pathlib.Path(tmp) / "in"
        root.mkdir()
        files = make_corpus(src, root, args.copies)
        mbytes = sum((root / f).stat().st_size for f in files) / 1e6
        variants = {
            "sequential script (1 thread)": lambda o: run_sequential(root, o, files, params),
            f"ThreadPoolExecutor ({args.workers} threads)":
                lambda o: run_pool(root, o, files, params, args.workers),
            f"flowgpu graph (decode/encode x{args.workers}, device=cpu)":
                lambda o: run_flowgpu(root, o, files, params, args.workers),
            f"pypeln thread stages (decode/encode x{args.workers})":
                lambda o: run_pypeln(root, o, files, params, args.workers),
            f"dask.bag (threads, {args.workers} workers)":
                lambda o: run_dask(root, o, files, params, args.workers),
            f"mpire process pool ({args.workers} processes)":
                lambda o: run_mpire(root, o, files, params, args.workers),
        }
        for name in list(variants):  # the peers come with the bench extra
            module = name.split()[0].split(".")[0]
            if module in ("pypeln", "dask", "mpire") and importlib.util.find_spec(module) is None:
                print(f"{name}: not installed (pip install flowgpu[bench])", file=sys.stderr)
                del variants[name]
        # warm-up: every kernel compiled (or loaded from Numba's cache) before timing
        process_one(root, pathlib.Path(tmp) / "warm", files[0], params)
        times: dict[str, list[float]] = {k: [] for k in variants}
        want = None
        for r in range(args.rounds):
            for name, fn in variants.items():
                out = pathlib.Path(tmp) / f"out-{r}-{len(times[name])}-{hash(name) & 0xffff}"
                t0 = time.perf_counter()
                rows = fn(out)
                times[name].append(time.perf_counter() - t0)
                # every contender must produce the same thumbnails' statistics
                got = sorted(tuple(str(v) for k, v in sorted(row.items())
                                   if k == "path" or k.startswith(("mean_", "std_")))
                             for row in rows)
                want = want or got
                assert got == want, f"{name} produced different results"
    base = statistics.median(times["sequential script (1 thread)"])
    pool = statistics.median(next(v for k, v in times.items() if k.startswith("ThreadPool")))
    print(f"## Thumbnail job: {len(files)} images ({mbytes:.0f} MB of PNG), "
          f"{os.cpu_count()} CPUs, median of {args.rounds} interleaved rounds\n")
    print("| variant | seconds | images/s | MB/s | vs sequential | vs thread pool |")
    print("|---|---|---|---|---|---|")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"| {name} | {t:.3f} | {len(files) / t:.1f} | {mbytes / t:.1f} | "
              f"{base / t:.2f}x | {pool / t:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
