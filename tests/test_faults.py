"""Randomised fault injection on the CPU (the harness is tests/faultlib.py).

300 seeded runs, twice (the second time with a tiny GIL switch interval),
each a random graph with one fault, each checked for hangs,
the right error naming the right stage, leaks, lost and duplicated items,
and a clean rerun. ``FLOWGPU_FAULT_SEED`` shifts the seeds; a failure prints
each bad run's seed and graph, and ``python benchmarks/soak.py --seed SEED
--runs 1 -v`` replays one.
"""

from __future__ import annotations

import io
import os
import sys

import pytest
from faultlib import run_many

BASE = int(os.environ.get("FLOWGPU_FAULT_SEED", "0"))
RUNS, CHUNK = 300, 50


@pytest.fixture(params=["default", "tiny"])
def switch_interval(request):
    """Half the chunks run with the GIL handed over every few microseconds,
    so that threads interleave far more often than they usually do: races
    between a producer and a consumer show up in hundreds of runs, not
    millions."""
    if request.param == "default":
        yield
        return
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.mark.parametrize("chunk", range(RUNS // CHUNK))
def test_random_faults(chunk, switch_interval):
    seeds = range(BASE + chunk * CHUNK, BASE + (chunk + 1) * CHUNK)
    log = io.StringIO()
    figures, failures = run_many(seeds, gpu=False, out=log)
    assert figures.runs == CHUNK
    assert not failures, f"{len(failures)} bad run(s) of seeds {seeds}:\n{log.getvalue()}"
    assert (figures.hangs, figures.leaks, figures.lost, figures.duplicated) == (0, 0, 0, 0)


def test_every_fault_and_shape_is_drawn():
    from faultlib import FAULTS, make_case

    cases = [make_case(BASE + s, gpu=False) for s in range(RUNS)]
    assert {c.fault.kind for c in cases} == set(FAULTS)
    assert {c.shape for c in cases} == {"chain", "diamond", "fanout", "zip", "batch"}
    assert {c.fault.stage for c in cases if c.fault.stage == "s0_source"}
    assert any(c.fault.stage == "sink" and c.fault.kind == "raise" for c in cases)
