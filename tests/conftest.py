"""Test-wide guards: no test may leave a thread alive or a channel op blocked.

The per-test timeout (pytest-timeout, set in pyproject.toml) dumps every
thread's stack when a test hangs, so that a hang fails fast and says where.
"""

from __future__ import annotations

import os
import pathlib
import threading

import pytest

# Fixtures shared by the test modules: `parked` waits until n channel operations
# are parked (parking.py); `interrupt_main` delivers one Ctrl-C (interrupts.py).
from interrupts import interrupt_main  # noqa: F401
from parking import parked  # noqa: F401

from flowgpu import channel as _channel

ROOT = pathlib.Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")

# The simulator tests need NUMBA_ENABLE_CUDASIM=1 before numba is imported, so
# they run in their own pytest process (see the Makefile). `make gpu-check`
# runs the same files on a real GPU with --real-gpu, plus tests/gpu.
collect_ignore = []


def pytest_addoption(parser):
    parser.addoption("--real-gpu", action="store_true",
                     help="run tests/sim on the real GPU instead of the simulator")


def pytest_configure(config):
    if not SIMULATOR and not config.getoption("--real-gpu"):
        collect_ignore.append("sim")


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail a test that leaves a thread it started alive or a channel op blocked."""
    before = _threads()
    yield
    # A thread that has finished its target may still be between its last
    # line and its exit; join() (not sleep) waits for exactly that.
    leftover = [t for t in _threads() - before if t is not threading.current_thread()]
    for t in leftover:
        t.join(timeout=2.0)
    alive = [t.name for t in leftover if t.is_alive()]
    assert not alive, f"threads left alive: {alive}"
    blocked = _channel.blocked_operations()
    assert blocked == 0, f"{blocked} channel operation(s) still blocked"


@pytest.fixture
def kodak_dir() -> pathlib.Path:
    if not KODAK.is_dir():
        pytest.skip(f"the Kodak photos are not at {KODAK}")
    return KODAK
