"""`kernels/` and `graphs/` import as flowgpu.kernels / flowgpu.graphs from an
editable install and from a built wheel alike."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROBE = ("import flowgpu, flowgpu.kernels.image, flowgpu.graphs, flowgpu.runtime.gpu, "
         "flowgpu.numa, flowgpu.backends; print(flowgpu.kernels.image.__file__)")


def _probe(env_path: str | None = None, cwd: pathlib.Path | None = None) -> str:
    env = dict(os.environ)
    if env_path is not None:
        env["PYTHONPATH"] = env_path
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env=env, cwd=cwd, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_editable_install_maps_kernels_to_the_source_folder(tmp_path):
    # run from elsewhere, so that the repository root is not on sys.path
    path = _probe(cwd=tmp_path)
    assert pathlib.Path(path) == ROOT / "kernels" / "image.py"


@pytest.mark.slow
def test_built_wheel_contains_and_imports_every_package(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("flowgpu-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in ("flowgpu/kernels/image.py", "flowgpu/kernels/etl.py",
                 "flowgpu/graphs/__init__.py", "flowgpu/runtime/gpu/pool.py",
                 "flowgpu/numa/sysfs.py", "flowgpu/backends/cpu.py", "flowgpu/py.typed"):
        assert must in names, f"{must} missing from {wheel.name}"
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    path = _probe(env_path=str(target), cwd=tmp_path)
    assert pathlib.Path(path) == target / "flowgpu" / "kernels" / "image.py"


@pytest.mark.parametrize("module", ["flowgpu.backends.ops_elementwise",
                                    "flowgpu.backends.ops_index", "flowgpu.numeric",
                                    "flowgpu.kernels.etl", "flowgpu.graphs.thumbnails"])
def test_each_module_imports_first(module, tmp_path):
    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
