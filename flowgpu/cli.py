"""The ``flowgpu`` command: ``run``, ``demo``, ``info`` and ``bench``.

``flowgpu run FILE|NAME [--input DIR] [--output DIR] [--device auto|cpu|gpu] [--param k=v]``
    Runs a graph file (see :mod:`flowgpu.graphs` for what one exposes);
    ``flowgpu run FILE --help`` lists the graph's parameters and defaults.
``flowgpu demo``
    The thumbnail job on the photos shipped with scikit-image, into ``./demo-out``.
``flowgpu info``
    Versions, the GPU (or why there is none), CPUs and NUMA nodes.
``flowgpu bench FILE|NAME [--devices cpu,gpu] [--repeat N]``
    The same graph on each device, one table: items/s, MB/s, speedup.

A failure prints one line (``flowgpu: error: ...``) and exits non-zero: 2
for a usage error (unknown parameter, bad value), 1 for anything else.
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import os
import pathlib
import sys
import tempfile
import time
import typing
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "load_graph_module", "graph_params", "convert_param"]

DEVICES = ("auto", "cpu", "gpu")


class UsageError(Exception):
    """A mistake in the command line: exit status 2."""


# -- graph files ---------------------------------------------------------------------------

def load_graph_module(target: str) -> Any:
    """Import a graph file by path, or a shipped graph by name (``thumbnails``).

    Raises UsageError when there is no such file or it has no ``build``.
    """
    from . import graphs

    path = pathlib.Path(target)
    if not path.suffix and not path.exists() and target in graphs.NAMES:
        path = graphs.path_of(target)
    if not path.is_file():
        known = ", ".join(graphs.NAMES)
        raise UsageError(f"no graph file {target!r} (a path to a .py file, or one of: {known})")
    path = path.resolve()
    shipped = pathlib.Path(graphs.__file__).resolve().parent
    if path.parent == shipped:  # import by its package name, so that it pickles by reference
        module = importlib.import_module(f"flowgpu.graphs.{path.stem}")
    else:
        name = f"flowgpu_graph_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot import {str(path)!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    if not callable(getattr(module, "build", None)):
        raise UsageError(f"{str(path)!r} has no build(**params) function")
    return module


def graph_params(module: Any) -> dict[str, inspect.Parameter]:
    """``build``'s keyword parameters, with annotations resolved to types."""
    sig = inspect.signature(module.build)
    try:
        hints = typing.get_type_hints(module.build)
    except Exception:  # an annotation that does not resolve: keep the strings
        hints = {}
    return {name: p.replace(annotation=hints.get(name, p.annotation))
            for name, p in sig.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def convert_param(name: str, text: str, param: inspect.Parameter) -> Any:
    """``text`` converted to the parameter's annotated (or default's) type."""
    kind = param.annotation
    if kind is inspect.Parameter.empty and param.default is not inspect.Parameter.empty:
        kind = type(param.default)
    if isinstance(kind, str):
        kind = {"int": int, "float": float, "bool": bool, "str": str}.get(kind, str)
    try:
        if kind is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind in (int, float, str):
            return kind(text)
    except ValueError as exc:
        raise UsageError(f"--param {name}={text}: not a valid {kind.__name__} ({exc})") from None
    return text


def _type_name(p: inspect.Parameter) -> str:
    a = p.annotation
    if a is inspect.Parameter.empty:
        return type(p.default).__name__ if p.default is not inspect.Parameter.empty else "str"
    return getattr(a, "__name__", str(a))


def params_help(module: Any) -> str:
    lines = ["graph parameters (--param key=value; --input/--output set input/output):"]
    for name, p in graph_params(module).items():
        default = "required" if p.default is inspect.Parameter.empty else f"default {p.default!r}"
        lines.append(f"  {name:<12} {_type_name(p):<6} {default}")
    doc = inspect.getdoc(module.build)
    if doc:
        lines += ["", *doc.splitlines()]
    return "\n".join(lines)


def build_params(module: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments for ``build`` from ``--param``, ``--input``, ``--output``."""
    known = graph_params(module)
    params: dict[str, Any] = {}
    for item in args.param or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--param {item!r}: expected key=value")
        if key not in known:
            raise UsageError(f"unknown parameter {key!r}; {args.target} takes "
                             f"{', '.join(known) or 'none'}")
        params[key] = convert_param(key, value, known[key])
    for key in ("input", "output"):
        value = getattr(args, key, None)
        if value is None:
            continue
        if key not in known:
            raise UsageError(f"--{key}: {args.target} has no {key!r} parameter")
        params[key] = value
    if params.get("input"):
        src = pathlib.Path(params["input"])
        if not src.exists():
            raise FileNotFoundError(f"input {str(src)!r} does not exist")
    missing = [n for n, p in known.items() if p.default is inspect.Parameter.empty
               and n not in params]
    if missing:
        raise UsageError(f"{args.target} needs {', '.join(missing)} "
                         "(--param key=value, or --input/--output)")
    return params


def run_graph(module: Any, params: dict[str, Any], device: str) -> Any:
    """Build, run and finish a graph: the report. A progress bar on a terminal."""
    report = module.build(**params).run(device=device, progress=sys.stderr.isatty())
    finish = getattr(module, "finish", None)
    if callable(finish):
        finish(report, **params)
    return report


def _check_device(device: str) -> None:
    from .device import resolve

    resolve(device)  # DeviceUnavailable for "gpu" without one, before building anything


# -- commands ------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    module = load_graph_module(args.target)
    if args.help:
        print(_run_parser().format_help())
        print(params_help(module))
        return 0
    params = build_params(module, args)
    _check_device(args.device)
    report = run_graph(module, params, args.device)
    print(report.summary())
    for err in report.errors[:20]:
        print(f"skipped: {_one_line(err)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import skimage

    from .graphs import thumbnails

    _check_device(args.device)
    source = pathlib.Path(skimage.__file__).parent / "data"
    out = pathlib.Path(args.output)
    print(f"thumbnails of the photos in {source} -> {out}")
    with _progress(sys.stdout) as progress:
        report = thumbnails.run_job(source, out, device=args.device, progress=progress,
                                    suffixes=thumbnails.IMAGE_SUFFIXES)
    print(report.summary())
    rows = len(report["rows"])
    print(f"{rows} thumbnail(s) and stats.csv in {out}; {len(report.errors)} file(s) "
          f"skipped (listed in {out / 'errors.csv'})")
    return 0


@contextlib.contextmanager
def _progress(stream: Any) -> Any:
    """A ``progress(done, total)`` callback: a tqdm bar on a terminal, else a line
    every 10 images and at the end."""
    bar = None
    if stream.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            bar = tqdm(unit="img", file=stream)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()
        elif done and (done % 10 == 0 or done == total):
            print(f"{done}/{total} images", file=stream, flush=True)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


def cmd_info(args: argparse.Namespace) -> int:
    import platform

    import numba
    import numpy

    from .device import gpu_status, is_simulator
    from .numa import topology

    print(f"flowgpu {_version()}")
    print(f"Python  {platform.python_version()} ({sys.executable})")
    print(f"NumPy   {numpy.__version__}")
    print(f"Numba   {numba.__version__} (threading layer: {_threading_layer()}, "
          f"{numba.config.NUMBA_NUM_THREADS} threads)")
    ok, reason = gpu_status()
    print("CUDA    " + (_cuda_details() if ok and not is_simulator() else
                        ("simulator only: " if ok else "none: ") + " ".join(reason.split())))
    print(f"Simulator {'on' if is_simulator() else 'off'} (NUMBA_ENABLE_CUDASIM="
          f"{os.environ.get('NUMBA_ENABLE_CUDASIM', '0')})")
    print(f"CPUs    {os.cpu_count()} (this process may use {len(os.sched_getaffinity(0))})")
    print("NUMA")
    for line in topology().table().splitlines():
        print(f"  {line}")
    return 0


def _version() -> str:
    from . import __version__

    return __version__


def _threading_layer() -> str:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # not chosen until the first parallel function runs
        return f"not loaded yet, configured {numba.config.THREADING_LAYER!r}"


def _cuda_details() -> str:
    from numba import cuda

    try:
        version = cuda.cudadrv.driver.driver.get_version()
        lines = [f"driver {version[0]}.{version[1]}"]
        for dev in cuda.list_devices():
            cc = dev.compute_capability
            name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
            lines.append(f"device {dev.id}: {name} (compute capability {cc[0]}.{cc[1]})")
        return "; ".join(lines)
    except Exception as exc:  # noqa: BLE001 - info reports, never fails
        return f"available, but details failed: {type(exc).__name__}: {exc}"


def cmd_bench(args: argparse.Namespace) -> int:
    from .device import gpu_status

    module = load_graph_module(args.target)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    for d in devices:
        if d not in ("cpu", "gpu"):
            raise UsageError(f"--devices: {d!r} is not cpu or gpu")
    if args.repeat < 1:
        raise UsageError("--repeat must be >= 1")
    rows = []
    cpu_time = None
    with tempfile.TemporaryDirectory(prefix="flowgpu-bench-") as tmp:
        if args.output is None and "output" in graph_params(module):
            args.output = tmp
        params = build_params(module, args)
        size = _input_bytes(module, params)
        for device in devices:
            ok, reason = (True, "") if device == "cpu" else gpu_status()
            if not ok:
                rows.append((device, f"not available: {' '.join(reason.split())}"))
                continue
            run_graph(module, params, device)  # warm-up: compiles the kernels
            times = []
            report = None
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                report = run_graph(module, params, device)
                times.append(time.perf_counter() - t0)
            best = min(times)
            items = _source_items(report)
            if device == "cpu":
                cpu_time = best
            speedup = f"{cpu_time / best:.2f}x" if cpu_time else "n/a (no cpu row)"
            mbs = f"{size / best / 1e6:.1f}" if size else "n/a"
            rows.append((device, f"{best:.3f}", f"{items / best:.1f}", mbs, speedup))
    print(f"bench of {args.target}: best of {args.repeat} run(s) after a warm-up, "
          f"{items_label(module)}")
    print("| device | seconds | items/s | MB/s | speedup vs cpu |")
    print("|---|---|---|---|---|")
    for row in rows:
        if len(row) == 2:
            print(f"| {row[0]} | {row[1]} | | | |")
        else:
            print("| " + " | ".join(row) + " |")
    return 0


def items_label(module: Any) -> str:
    return "items = source items (files or CSV blocks), MB = input bytes"


def _source_items(report: Any) -> int:
    return sum(s.items_out for s in report.stages.values() if s.kind == "source")


def _input_bytes(module: Any, params: dict[str, Any]) -> int:
    src = params.get("input")
    if not src:
        default = graph_params(module).get("input")
        src = default.default if default is not None else None
        if not src and hasattr(module, "_default_input"):
            src = module._default_input()
    if not src:
        return 0
    path = pathlib.Path(src)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


# -- parsing and the error policy ---------------------------------------------------------

def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowgpu run", add_help=False,
                                description="Run a graph file (or a shipped graph by name).")
    _graph_args(p)
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where numeric stages run (default: auto)")
    p.add_argument("-h", "--help", action="store_true", help="show this help and the "
                   "graph's parameters")
    return p


def _graph_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="FILE", help="a graph file, or thumbnails / flights_etl")
    p.add_argument("--input", help="the graph's input parameter")
    p.add_argument("--output", help="the graph's output parameter")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="a build() parameter; repeat for several")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowgpu", description="flowgpu dataflow engine")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", add_help=False, parents=[_run_parser()],
                         help="run a graph file")
    run.set_defaults(func=cmd_run)
    demo = sub.add_parser("demo", help="thumbnails of scikit-image's photos into ./demo-out")
    demo.add_argument("--output", default="demo-out")
    demo.add_argument("--device", choices=DEVICES, default="auto")
    demo.add_argument("--debug", action="store_true", help="show tracebacks")
    demo.set_defaults(func=cmd_demo)
    info = sub.add_parser("info", help="Python, NumPy, Numba, CUDA, CPUs and NUMA nodes")
    info.add_argument("--debug", action="store_true", help="show tracebacks")
    info.set_defaults(func=cmd_info)
    bench = sub.add_parser("bench", help="the same graph on each device, side by side")
    _graph_args(bench)
    bench.add_argument("--devices", default="cpu,gpu", help="comma-separated (default cpu,gpu)")
    bench.add_argument("--repeat", type=int, default=3, help="timed runs per device")
    bench.set_defaults(func=cmd_bench)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({type(cause).__name__}: {' '.join(str(cause).split())})"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowgpu`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)  # argparse exits 2 with one line on its own errors
    debug = args.debug or "--debug" in argv
    try:
        return args.func(args)
    except UsageError as exc:
        if debug:
            raise
        print(f"flowgpu: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("flowgpu: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, unless --debug
        if debug:
            raise
        print(f"flowgpu: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
