"""Image batch job: a folder of photos in, thumbnails and per-image statistics out.

::

    list_files -> decode (Pillow, 2 threads, on_error="skip")
                    |-> meta ---------------------------------------------+
                    '-> pixels -> to_float -> fit_box -> gaussian_blur    |
                          -> unsharp_mask -> to_uint8 -+-----------------zip -> encode + write
                                                       '-> histogram ----+     (2 threads)
                          (edges=True) sobel -> edges_uint8 -------------+       -> collect "rows"

The numeric stages are pure array -> array ops (:mod:`flowgpu.kernels.image`
and :func:`fit_box`) placed per run on the CPU or the GPU; consecutive GPU
stages form one device segment. Per-image metadata travels on its own host
stream and is joined back with :func:`flowgpu.zip`, which is exact because
every stage keeps source order. ``finish`` writes ``stats.csv`` (one row
per image), ``histograms.csv`` (one row per image and channel) and
``errors.csv`` (files that could not be decoded), all sorted by path, so
that two runs over the same input give the same bytes.

Output layout: ``OUTPUT/<relative path>`` with the suffix of the chosen
format (``a/b.jpg`` -> ``a/b.png``); with ``edges=True`` also
``OUTPUT/<relative path without suffix>.edges.png``. Statistics come from
the per-channel histogram of the 8-bit thumbnail, in pixel units (0..255).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import pathlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import flowgpu as fg
from flowgpu.kernels import image as im

__all__ = ["build", "finish", "run_job", "list_images", "decode", "fit_box", "fit_size",
           "Meta", "STATS_COLUMNS"]

FORMATS = {"png": ".png", "jpeg": ".jpg"}
#: file suffixes the demo reads from scikit-image's data folder
IMAGE_SUFFIXES = ".png,.jpg,.jpeg,.gif,.tif,.tiff,.bmp,.webp"
MAX_CHANNELS = 4
STATS_COLUMNS = (["path", "output", "src_width", "src_height", "src_mode", "width", "height",
                  "layout"] + [f"mean_{c}" for c in range(MAX_CHANNELS)]
                 + [f"std_{c}" for c in range(MAX_CHANNELS)])


# -- files ------------------------------------------------------------------------------

def list_images(input: str | os.PathLike, suffixes: str = "",
                exclude: str | os.PathLike | None = None) -> list[str]:
    """Relative POSIX paths of the files under ``input``, sorted.

    Hidden files and folders (a leading ``.``) are left out, and so is
    ``exclude`` (the output folder, when it lies inside the input).
    ``suffixes``: comma-separated, case-insensitive (``".png,.jpg"``); empty
    means every file, so that a stray non-image is reported, not ignored.
    Raises FileNotFoundError / NotADirectoryError for a bad ``input``.
    """
    root = pathlib.Path(input)
    if not root.exists():
        raise FileNotFoundError(f"input folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"input {str(root)!r} is not a folder")
    wanted = tuple(s.strip().lower() for s in suffixes.split(",") if s.strip())
    skip = pathlib.Path(exclude).resolve() if exclude is not None else None
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = pathlib.Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (skip is None or (here / d).resolve() != skip))
        for name in filenames:
            if name.startswith(".") or (wanted and not name.lower().endswith(wanted)):
                continue
            found.append((here / name).relative_to(root).as_posix())
    return sorted(found)


def output_names(paths: list[str], fmt: str) -> dict[str, str]:
    """Each input's output path: the same relative path with the format's suffix.

    Two inputs that would collide (``a.png`` and ``a.jpg`` into ``a.png``)
    keep their full name instead (``a.jpg.png``), deterministically.
    """
    suffix = FORMATS[fmt]
    plain = {p: str(pathlib.PurePosixPath(p).with_suffix(suffix)) for p in paths}
    counts: dict[str, int] = {}
    for out in plain.values():
        counts[out] = counts.get(out, 0) + 1
    return {p: out if counts[out] == 1 else p + suffix for p, out in plain.items()}


# -- decode ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Meta:
    """What travels beside the pixels: where the image came from and where it goes."""

    path: str  # relative to the input folder, POSIX
    output: str  # relative to the output folder
    src_width: int
    src_height: int
    src_mode: str
    layout: str  # L, RGB or RGBA: the channels of the pixels and of the thumbnail


def decode(root: pathlib.Path, path: str, output: str) -> tuple[Meta, np.ndarray]:
    """Read one image: EXIF orientation applied, converted to L, RGB or RGBA uint8.

    Raises ``PIL.UnidentifiedImageError`` for a file that is not an image and
    ``OSError`` for a truncated one (the job's ``on_error="skip"`` lists both).
    """
    from PIL import Image, ImageOps

    with Image.open(root / path) as img:
        img.load()  # a truncated file fails here, not later in a worker of another stage
        mode = img.mode
        img = ImageOps.exif_transpose(img)
        if mode.startswith("I;16") or mode == "I":
            pixels, layout = _sixteen_to_eight(np.asarray(img)), "L"
        else:
            img = img.convert(_layout(img))
            pixels, layout = np.asarray(img), img.mode
    meta = Meta(path, output, pixels.shape[1], pixels.shape[0], mode, layout)
    return meta, pixels


def _sixteen_to_eight(a: np.ndarray) -> np.ndarray:
    """16-bit grayscale (Pillow's I;16 and I modes) scaled to uint8, rounded.

    Pillow's own convert("L") clips at 255, which turns a 16-bit photo white.
    An "I" image whose values all fit in 8 bits is taken as 8-bit.
    """
    a = a.astype(np.int64)
    if a.size and a.max() <= 255 and a.min() >= 0:
        return a.astype(np.uint8)
    return ((np.clip(a, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)


def _layout(img: Any) -> str:
    mode = img.mode
    if mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F"):
        return "L"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            mode == "P" and "transparency" in img.info):
        return "RGBA"
    return "RGB"


# -- numeric stages ----------------------------------------------------------------------

def fit_size(height: int, width: int, box: int, upscale: bool = False) -> tuple[int, int]:
    """The size that fits ``box x box`` keeping the aspect ratio (at least 1x1).

    Images already inside the box keep their size unless ``upscale``.
    """
    scale = min(box / height, box / width)
    if not upscale:
        scale = min(scale, 1.0)
    return max(1, round(height * scale)), max(1, round(width * scale))


@fg.composite(ndim={"img": (2, 3)})
def fit_box(run, img, box=256, upscale=False):
    """Resize to fit a ``box x box`` square keeping the aspect ratio: an area
    average when shrinking (no aliasing), bilinear when enlarging."""
    h, w = fit_size(img.shape[0], img.shape[1], int(box), bool(upscale))
    method = "area" if h <= img.shape[0] and w <= img.shape[1] else "bilinear"
    return run(im.resize, img, height=h, width=w, method=method)


# -- encode -------------------------------------------------------------------------------

def encode(item: tuple, out_root: pathlib.Path, fmt: str, quality: int) -> dict[str, Any]:
    """Write the thumbnail (and edge map) of one image; return its stats row."""
    from PIL import Image

    meta, thumb, hist = item[:3]
    target = out_root / meta.output
    _write(target, _png_or_jpeg(Image.fromarray(thumb), fmt, quality))
    if len(item) > 3:
        _write(target.with_name(target.stem + ".edges.png"),
               _png_or_jpeg(Image.fromarray(item[3]), "png", quality))
    row: dict[str, Any] = {
        "path": meta.path, "output": meta.output, "src_width": meta.src_width,
        "src_height": meta.src_height, "src_mode": meta.src_mode,
        "width": thumb.shape[1], "height": thumb.shape[0], "layout": meta.layout,
        "histogram": np.asarray(hist),
    }
    for c, (mean, std) in enumerate(channel_stats(hist)):
        row[f"mean_{c}"], row[f"std_{c}"] = mean, std
    return row


def channel_stats(hist: np.ndarray) -> list[tuple[float, float]]:
    """(mean, population std) per channel, from a ``(C, 256)`` histogram.

    Sums are exact integers, so the result does not depend on pixel order.
    """
    values = np.arange(256, dtype=np.int64)
    out = []
    for h in np.asarray(hist, dtype=np.int64):
        n = int(h.sum())
        s1 = int(h @ values)
        s2 = int(h @ (values * values))
        mean = s1 / n
        var = max((s2 - s1 * s1 / n) / n, 0.0)
        out.append((mean, math.sqrt(var)))
    return out


def _png_or_jpeg(img: Any, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        # no timestamps or text chunks: the same pixels give the same bytes
        img.save(buf, format="PNG", compress_level=6)
    else:
        if img.mode == "RGBA":
            img = img.convert("RGB")
        img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _write(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a reader never sees half a file


# -- the graph -------------------------------------------------------------------------

def build(input: str = ".", output: str = "thumbs", box: int = 256, sigma: float = 0.8,
          usm_sigma: float = 1.0, amount: float = 0.6, edges: bool = False, fmt: str = "png",
          quality: int = 90, upscale: bool = False, suffixes: str = "",
          workers: int = 2) -> fg.Graph:
    """The thumbnail graph over the files of ``input``, writing into ``output``.

    - ``box``: thumbnails fit in ``box x box`` pixels, aspect ratio kept;
    - ``sigma``: Gaussian denoise before sharpening (0 turns it off);
    - ``usm_sigma``, ``amount``: unsharp mask (amount 0 turns it off);
    - ``edges``: also write a Sobel edge map ``<name>.edges.png`` beside each thumbnail;
    - ``fmt``: ``png`` (deterministic bytes) or ``jpeg`` (``quality``);
    - ``upscale``: enlarge images smaller than the box;
    - ``suffixes``: only files ending so (``".png,.jpg"``); empty: every file;
    - ``workers``: decode and encode threads each.

    Building lists nothing: the files are listed when the graph runs.
    """
    return _graph(input=input, output=output, box=box, sigma=sigma, usm_sigma=usm_sigma,
                  amount=amount, edges=edges, fmt=fmt, quality=quality, upscale=upscale,
                  suffixes=suffixes, workers=workers)


def _graph(*, input: str, output: str, box: int, sigma: float, usm_sigma: float,
           amount: float, edges: bool, fmt: str, quality: int, upscale: bool,
           suffixes: str, workers: int, on_done: Callable[[dict], None] | None = None
           ) -> fg.Graph:
    fmt = fmt.lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r}: expected 'png' or 'jpeg'")
    if box < 1:
        raise ValueError(f"box={box}: expected a size in pixels >= 1")
    if sigma < 0 or usm_sigma < 0:
        raise ValueError(f"sigma={sigma}, usm_sigma={usm_sigma}: expected >= 0 (0: no blur)")
    if amount < 0:
        raise ValueError(f"amount={amount}: expected >= 0 (0: no sharpening)")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality={quality}: expected 1 to 100")
    root, out_root = pathlib.Path(input), pathlib.Path(output)
    if out_root.exists() and not out_root.is_dir():
        raise ValueError(f"output={str(out_root)!r} is a file, not a folder")

    def files() -> Iterator[tuple[str, str]]:
        paths = list_images(root, suffixes, exclude=out_root)
        yield from output_names(paths, fmt).items()

    def decode_file(item: tuple[str, str]) -> tuple[Meta, np.ndarray]:
        return decode(root, *item)

    def write(item: tuple) -> dict[str, Any]:
        row = encode(item, out_root, fmt, quality)
        if on_done is not None:
            on_done(row)
        return row

    g = fg.Graph("thumbnails")
    decoded = g.source(files, name="list_files").map(
        decode_file, name="decode", workers=workers, on_error="skip")
    meta = decoded.map(_first, name="meta")
    pixels = decoded.map(_second, name="pixels")
    img = pixels.map(im.to_float).map(fit_box, box=box, upscale=upscale)
    if sigma > 0:
        img = img.map(im.gaussian_blur, sigma=sigma)
    if amount != 0:
        img = img.map(im.unsharp_mask, sigma=usm_sigma, amount=amount)
    thumbs = img.map(im.to_uint8, name="to_uint8")
    hist = thumbs.map(im.histogram)
    joined = [meta, thumbs, hist]
    if edges:
        joined.append(img.map(im.sobel).map(im.to_uint8, name="edges_uint8"))
    fg.zip(*joined, name="join").map(write, name="encode", workers=workers).collect("rows")
    return g


def _first(item: tuple) -> Any:
    return item[0]


def _second(item: tuple) -> Any:
    return item[1]


# -- after the run ---------------------------------------------------------------------------

def finish(report: fg.RunReport, output: str = "thumbs", **_: Any) -> None:
    """Write ``stats.csv``, ``histograms.csv`` and ``errors.csv`` into ``output``,
    sorted by path so that two runs over the same input give the same bytes."""
    out_root = pathlib.Path(output)
    out_root.mkdir(parents=True, exist_ok=True)
    rows = sorted(report["rows"], key=lambda r: r["path"])
    with _csv(out_root / "stats.csv") as w:
        w.writerow(STATS_COLUMNS)
        for r in rows:
            w.writerow([_cell(r.get(c, "")) for c in STATS_COLUMNS])
    with _csv(out_root / "histograms.csv") as w:
        w.writerow(["path", "channel"] + [f"h{b}" for b in range(256)])
        for r in rows:
            for c, h in enumerate(r["histogram"]):
                w.writerow([r["path"], c, *(int(v) for v in h)])
    with _csv(out_root / "errors.csv") as w:
        w.writerow(["path", "stage", "error"])
        for path, stage, message in error_rows(report):
            w.writerow([path, stage, message])


def error_rows(report: fg.RunReport) -> list[tuple[str, str, str]]:
    """``(input path, stage, "Type: message")`` per skipped item, sorted by path."""
    rows = []
    for err in report.errors:
        item = err.item
        path = item[0] if isinstance(item, tuple) and item and isinstance(item[0], str) else (
            item.path if isinstance(item, Meta) else str(item))
        cause = err.__cause__ or err
        rows.append((path, err.stage, f"{type(cause).__name__}: {cause}".replace("\n", " ")))
    return sorted(rows)


def _cell(v: Any) -> Any:
    return repr(v) if isinstance(v, float) else v


class _csv:
    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __enter__(self) -> Any:
        self.f = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        return csv.writer(self.f, lineterminator="\n")

    def __exit__(self, *exc: Any) -> None:
        self.f.close()


def run_job(input: str | os.PathLike, output: str | os.PathLike, *, device: str = "auto",
            progress: Callable[[int, int], None] | None = None, **params: Any
            ) -> fg.RunReport:
    """Run the job and write every output; the :class:`~flowgpu.RunReport`.

    ``params`` are :func:`build`'s. ``progress(done, total)`` is called from a
    worker thread after each image is written (and once with ``done=0``).
    Undecodable files are listed in ``report.errors`` and ``errors.csv``; any
    other failure raises (:class:`~flowgpu.StageError`...).
    """
    sig = dict(_defaults())
    unknown = sorted(set(params) - set(sig))
    if unknown:
        raise TypeError(f"unknown parameter(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(sig))}")
    sig.update(params, input=str(input), output=str(output))
    on_done = None
    if progress is not None:
        total = len(list_images(sig["input"], sig["suffixes"], exclude=sig["output"]))
        lock = threading.Lock()  # guards done; encode workers call on_done concurrently
        done = 0
        progress(0, total)

        def on_done(_row: dict) -> None:
            nonlocal done
            with lock:
                done += 1
                progress(done, total)

    report = _graph(**sig, on_done=on_done).run(device=device)
    finish(report, **sig)
    return report


def _defaults() -> dict[str, Any]:
    import inspect

    return {k: p.default for k, p in inspect.signature(build).parameters.items()}
