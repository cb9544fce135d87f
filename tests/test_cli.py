"""The flowgpu command, called in-process through ``flowgpu.cli.main``."""

from __future__ import annotations

import csv
import pathlib
import textwrap

import numpy as np
import pytest

from flowgpu import cli
from flowgpu.device import gpu_status

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

GPU, GPU_REASON = gpu_status()


@pytest.fixture
def photos(tmp_path: pathlib.Path) -> pathlib.Path:
    src = tmp_path / "photos"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(src / "a.png")
    Image.fromarray(rng.integers(0, 256, (50, 30), dtype=np.uint8)).save(src / "b.png")
    return src


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_run_help_lists_the_graph_parameters(capsys):
    assert cli.main(["run", "thumbnails", "--help"]) == 0
    out = capsys.readouterr().out
    for name, kind, default in [("box", "int", "256"), ("sigma", "float", "0.8"),
                                ("edges", "bool", "False"), ("fmt", "str", "'png'")]:
        line = next(x for x in out.splitlines() if x.split()[:1] == [name])
        assert kind in line and default in line
    assert "--device" in out


def test_run_writes_thumbnails_with_converted_params(photos, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["run", "graphs/thumbnails.py" if pathlib.Path("graphs/thumbnails.py").is_file()
                   else "thumbnails", "--input", str(photos), "--output", str(out),
                   "--device", "cpu", "--param", "box=20", "--param", "edges=yes"])
    assert rc == 0
    assert "run of 'thumbnails' on cpu" in capsys.readouterr().out
    with open(out / "stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["path"], r["width"], r["height"]) for r in rows] == [
        ("a.png", "20", "13"), ("b.png", "12", "20")]
    assert (out / "a.edges.png").is_file()


@pytest.mark.parametrize("argv, needle", [
    (["--param", "colour=red"], "unknown parameter 'colour'"),
    (["--param", "box=big"], "not a valid int"),
    (["--param", "box"], "expected key=value"),
])
def test_usage_errors_are_one_line_and_exit_2(argv, needle, photos, tmp_path, capsys):
    rc = cli.main(["run", "thumbnails", "--input", str(photos), "--output", str(tmp_path)]
                  + argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert _lines(err) == [_lines(err)[0]] and needle in err and "Traceback" not in err


def test_missing_file_and_input_are_one_line(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path / "nope.py")]) == 2
    assert len(_lines(capsys.readouterr().err)) == 1
    assert cli.main(["run", "thumbnails", "--input", str(tmp_path / "no-dir")]) == 1
    err = capsys.readouterr().err
    assert len(_lines(err)) == 1 and "does not exist" in err


@pytest.mark.skipif(GPU, reason="this machine has a GPU (or the simulator is on)")
def test_device_gpu_without_one_names_the_reason(photos, tmp_path, capsys):
    rc = cli.main(["run", "thumbnails", "--input", str(photos), "--output", str(tmp_path),
                   "--device", "gpu"])
    err = capsys.readouterr().err
    assert rc == 1
    assert _lines(err) == [_lines(err)[0]]
    assert "gpu" in err and " ".join(GPU_REASON.split())[:30] in err
    assert not (tmp_path / "stats.csv").exists()


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        cli.main(["run", "thumbnails", "--input", str(tmp_path / "no-dir"), "--debug"])


def test_info_prints_every_section(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for section in ("Python", "NumPy", "Numba", "CUDA", "Simulator", "CPUs", "NUMA",
                    "NUMA nodes:"):
        assert section in out
    if not GPU:
        assert "none:" in out


def test_bench_shows_each_device(photos, capsys):
    assert cli.main(["bench", "thumbnails", "--input", str(photos), "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| device | seconds | items/s | MB/s | speedup vs cpu")
    cpu = next(r for r in rows if r.startswith("| cpu "))
    assert "1.00x" in cpu
    gpu = next(r for r in rows if r.startswith("| gpu "))
    if not GPU:
        assert "not available:" in gpu


def test_a_graph_file_by_path(tmp_path, capsys):
    path = tmp_path / "squares.py"
    path.write_text(textwrap.dedent("""
        import flowgpu as fg

        def build(n: int = 3, scale: float = 1.0):
            g = fg.Graph("squares")
            g.source(range(n)).map(lambda x: x * x * scale).collect("out")
            return g

        def finish(report, n=3, scale=1.0):
            print("total", sum(report["out"]))
    """))
    assert cli.main(["run", str(path), "--param", "n=4", "--param", "scale=0.5"]) == 0
    assert "total 7.0" in capsys.readouterr().out
    assert cli.main(["run", str(path), "--input", "x"]) == 2
    assert "no 'input' parameter" in capsys.readouterr().err


def test_demo_writes_into_its_output(tmp_path, capsys):
    pytest.importorskip("skimage")
    out = tmp_path / "demo"
    assert cli.main(["demo", "--output", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "images" in printed and "run of 'thumbnails'" in printed
    with open(out / "stats.csv", newline="") as f:
        paths = [r["path"] for r in csv.DictReader(f)]
    assert {"astronaut.png", "coffee.png", "rocket.jpg"} <= set(paths)


def test_graphs_imported_from_the_repository_root_are_flowgpu_graphs():
    # one source file under two module names would break Numba's on-disk cache
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", "from graphs import thumbnails, flights_etl; import graphs; "
         "print(thumbnails.__name__, flights_etl.__name__, graphs.__name__)"],
        cwd=root, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["flowgpu.graphs.thumbnails", "flowgpu.graphs.flights_etl", "flowgpu.graphs"]
