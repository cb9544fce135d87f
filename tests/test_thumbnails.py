"""The image batch job end to end: mixed inputs, bad files, determinism, statistics."""

from __future__ import annotations

import csv
import io
import pathlib

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

import flowgpu as fg  # noqa: E402
from flowgpu.graphs import thumbnails as th  # noqa: E402

BOX = 48


def _rng_image(h: int, w: int, c: int | None, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w) if c is None else (h, w, c)
    # smooth gradients plus noise: a photo-like image, not pure noise
    y, x = np.mgrid[0:h, 0:w]
    base = (x * 255 // max(w - 1, 1) + y * 255 // max(h - 1, 1)) // 2
    base = base if c is None else np.repeat(base[..., None], c, axis=2)
    return np.clip(base + rng.integers(-20, 20, shape), 0, 255).astype(np.uint8)


@pytest.fixture
def mixed_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """RGB, L, RGBA, P, an EXIF-rotated JPEG, a subfolder, a non-image and a truncated PNG."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(_rng_image(60, 90, 3, 1)).save(src / "rgb.png")
    Image.fromarray(_rng_image(30, 20, None, 2)).save(src / "gray.png")  # inside the box
    Image.fromarray(_rng_image(100, 50, 4, 3), "RGBA").save(src / "sub" / "alpha.png")
    Image.fromarray(_rng_image(64, 64, 3, 4)).convert("P", palette=Image.Palette.ADAPTIVE).save(
        src / "palette.gif")
    # stored 80 wide x 40 high; orientation 6 means "rotate 90 CW to display": 40 x 80
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_rng_image(40, 80, 3, 5)).save(src / "rotated.jpg", exif=exif.tobytes())
    (src / "notes.txt").write_text("not an image\n")
    buf = io.BytesIO()
    Image.fromarray(_rng_image(64, 64, 3, 6)).save(buf, format="PNG")
    (src / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return src


def _read_csv(path: pathlib.Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_mixed_folder_completes_and_lists_bad_files(mixed_dir, tmp_path):
    out = tmp_path / "out"
    report = th.run_job(mixed_dir, out, device="cpu", box=BOX)
    errors = _read_csv(out / "errors.csv")
    assert [e["path"] for e in errors] == ["notes.txt", "truncated.png"]
    assert all(e["stage"] == "decode" for e in errors)
    assert sorted(th.error_rows(report)) == [(e["path"], e["stage"], e["error"]) for e in errors]
    expected = {  # input -> (output, size (w, h) of the thumbnail, PIL mode)
        "gray.png": ("gray.png", (20, 30), "L"),  # already inside the box: kept
        "palette.gif": ("palette.png", (48, 48), "RGB"),
        "rgb.png": ("rgb.png", (48, 32), "RGB"),
        "rotated.jpg": ("rotated.png", (24, 48), "RGB"),  # EXIF applied: portrait
        "sub/alpha.png": ("sub/alpha.png", (24, 48), "RGBA"),
    }
    rows = _read_csv(out / "stats.csv")
    assert [r["path"] for r in rows] == sorted(expected)
    for r in rows:
        name, size, mode = expected[r["path"]]
        assert r["output"] == name
        with Image.open(out / name) as img:
            assert img.size == size and img.mode == mode
            assert max(img.size) <= BOX
        assert (int(r["width"]), int(r["height"])) == size
    rotated = next(r for r in rows if r["path"] == "rotated.jpg")
    assert (rotated["src_width"], rotated["src_height"]) == ("40", "80")


def test_aspect_ratio_is_kept():
    assert th.fit_size(512, 768, 256) == (171, 256)
    assert th.fit_size(768, 512, 256) == (256, 171)
    assert th.fit_size(10, 1000, 256) == (3, 256)
    assert th.fit_size(1, 5000, 256) == (1, 256)  # never 0 pixels
    assert th.fit_size(20, 30, 256) == (20, 30)
    assert th.fit_size(20, 30, 60, upscale=True) == (40, 60)


def test_two_runs_give_the_same_bytes(mixed_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    th.run_job(mixed_dir, a, device="cpu", box=BOX, edges=True)
    th.run_job(mixed_dir, b, device="cpu", box=BOX, edges=True)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    assert pathlib.Path("rgb.edges.png") in files_a
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_stats_and_histograms_match_numpy_on_the_thumbnails(mixed_dir, tmp_path):
    out = tmp_path / "out"
    th.run_job(mixed_dir, out, device="cpu", box=BOX)
    hist_rows = _read_csv(out / "histograms.csv")
    for r in _read_csv(out / "stats.csv"):
        pixels = np.asarray(Image.open(out / r["output"]))
        pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1).astype(np.float64)
        for c in range(pixels.shape[2]):
            assert float(r[f"mean_{c}"]) == pytest.approx(pixels[..., c].mean(), rel=1e-12)
            assert float(r[f"std_{c}"]) == pytest.approx(pixels[..., c].std(), rel=1e-9,
                                                         abs=1e-9)
            h = next(x for x in hist_rows if x["path"] == r["path"] and x["channel"] == str(c))
            counts = np.array([int(h[f"h{b}"]) for b in range(256)])
            np.testing.assert_array_equal(
                counts, np.bincount(pixels[..., c].astype(np.int64).ravel(), minlength=256))
        for c in range(pixels.shape[2], th.MAX_CHANNELS):
            assert r[f"mean_{c}"] == "" and r[f"std_{c}"] == ""


def test_kodak_photos(kodak_dir, tmp_path):
    src = tmp_path / "kodak"
    src.mkdir()
    names = ["kodim01.png", "kodim04.png", "kodim17.png", "kodim23.png"]  # 04, 17: portrait
    for n in names:
        (src / n).symlink_to(kodak_dir / n)
    out = tmp_path / "out"
    report = th.run_job(src, out, device="cpu")
    assert report.errors == []
    rows = _read_csv(out / "stats.csv")
    assert [r["path"] for r in rows] == names
    sizes = {r["path"]: (int(r["width"]), int(r["height"])) for r in rows}
    assert sizes["kodim01.png"] == (256, 171) and sizes["kodim04.png"] == (171, 256)
    for r in rows:
        assert 20 < float(r["mean_0"]) < 235 and float(r["std_0"]) > 5  # a real photo


def test_the_numeric_stages_are_kernels_and_the_graph_is_a_value(tmp_path):
    import cloudpickle

    g = th.build(input=str(tmp_path), output=str(tmp_path / "out"), edges=True)
    numeric = {n for n, s in g.stages.items() if s.numeric}
    assert {"to_float", "fit_box", "gaussian_blur", "unsharp_mask", "to_uint8", "histogram",
            "sobel", "edges_uint8"} <= numeric
    assert not g.stages["decode"].numeric and g.stages["decode"].on_error == "skip"
    assert cloudpickle.loads(cloudpickle.dumps(g)).stages.keys() == g.stages.keys()
    report = g.run(device="cpu")  # an empty folder: nothing to do, no error
    assert report["rows"] == []


def test_jpeg_output_and_bad_parameters(mixed_dir, tmp_path):
    out = tmp_path / "out"
    th.run_job(mixed_dir, out, device="cpu", box=BOX, fmt="jpeg", suffixes=".png,.gif")
    rows = _read_csv(out / "stats.csv")
    assert [r["output"] for r in rows] == ["gray.jpg", "palette.jpg", "rgb.jpg", "sub/alpha.jpg"]
    with Image.open(out / "sub" / "alpha.jpg") as img:
        assert img.format == "JPEG" and img.mode == "RGB"
    assert _read_csv(out / "errors.csv") == [{"path": "truncated.png", "stage": "decode",
                                             "error": _read_csv(out / "errors.csv")[0]["error"]}]
    with pytest.raises(ValueError, match="fmt"):
        th.build(fmt="bmp")
    with pytest.raises(TypeError, match="unknown parameter"):
        th.run_job(mixed_dir, out, colour=True)


def test_colliding_names_keep_their_suffix():
    assert th.output_names(["a.jpg", "a.png", "b.gif"], "png") == {
        "a.jpg": "a.jpg.png", "a.png": "a.png.png", "b.gif": "b.png"}


def test_missing_input_folder_fails_clearly(tmp_path):
    with pytest.raises(fg.StageError) as info:
        th.run_job(tmp_path / "nope", tmp_path / "out", device="cpu")
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    eight = _rng_image(20, 30, None, seed=7)
    (tmp_path / "in").mkdir()
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "in" / "deep.png")
    Image.fromarray(eight).save(tmp_path / "in" / "flat.png")
    _, deep = th.decode(tmp_path / "in", "deep.png", "x")
    _, flat = th.decode(tmp_path / "in", "flat.png", "x")
    assert deep.dtype == np.uint8
    np.testing.assert_array_equal(deep, flat)
