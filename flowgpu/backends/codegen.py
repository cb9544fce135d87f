"""Generated wrapper functions, written to files so that Numba's on-disk cache works.

Numba caches a compiled function next to its source file, keyed by the file's
stamp and the function's bytecode. A wrapper generated with ``exec`` has no
file, so it could not be cached; we write each generated source to
``$NUMBA_CACHE_DIR/flowgpu-gen`` (or ``~/.cache/flowgpu/gen``), named by a hash of the
source *and* of the user functions it calls. The user functions are part of
the name because Numba does not notice when a callee changes: a new version
of a kernel gets a new wrapper file, hence a fresh cache entry.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import sys
import tempfile
import threading
import types
from collections.abc import Callable
from typing import Any

__all__ = ["fingerprint", "build"]

_lock = threading.Lock()  # two threads may generate the same file at once


def _cache_dir() -> pathlib.Path | None:
    from numba.core import config as numba_config

    if numba_config.CACHE_DIR:
        path = pathlib.Path(numba_config.CACHE_DIR) / "flowgpu-gen"
    else:
        path = pathlib.Path.home() / ".cache" / "flowgpu" / "gen"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".probe"
        probe.touch()
        return path
    except OSError:  # a read-only home: run without the on-disk cache
        return None


def fingerprint(fn: Callable[..., Any]) -> str:
    """A hash of what a function computes: bytecode, constants, names, closure."""
    h = hashlib.sha256()
    code = getattr(fn, "__code__", None)
    if code is None:
        h.update(repr(fn).encode())
        return h.hexdigest()[:16]

    def feed(c) -> None:
        h.update(c.co_code)
        h.update(repr(c.co_names).encode())
        for const in c.co_consts:
            if hasattr(const, "co_code"):
                feed(const)
            else:
                h.update(repr(const).encode())

    feed(code)
    h.update(fn.__qualname__.encode())
    return h.hexdigest()[:16]


def build(source: str, name: str, env: dict[str, Any], key: str) -> tuple[Callable, bool]:
    """Execute ``source`` and return ``(function named name, has_file)``.

    ``env`` supplies the globals the source refers to (the user's compiled
    functions, ``prange``, ``cuda``...). ``has_file`` says whether the code
    lives in a real file, the condition for ``cache=True``.
    """
    digest = hashlib.sha256((source + key).encode()).hexdigest()[:20]
    directory = _cache_dir()
    filename = "<flowgpu-generated>"
    has_file = False
    if directory is not None:
        path = directory / f"{name}_{digest}.py"
        with _lock:
            if not path.exists():
                # write then rename, so that another process never reads half a file
                fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
                with os.fdopen(fd, "w") as f:
                    f.write(source)
                os.replace(tmp, path)
        filename, has_file = str(path), True
    # A cached function's environment is re-found by importing its module's
    # name, so the generated code lives in a module registered in sys.modules.
    modname = f"_flowgpu_generated_{name}_{digest}"
    module = sys.modules.get(modname)
    if module is None or any(module.__dict__.get(k) is not v for k, v in env.items()):
        module = types.ModuleType(modname)
        module.__file__ = filename
        module.__dict__.update(env)
        exec(compile(source, filename, "exec"), module.__dict__)
        sys.modules[modname] = module
    return module.__dict__[name], has_file
