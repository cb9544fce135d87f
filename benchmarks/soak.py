"""Soak: many randomised fault-injection runs (the harness is tests/faultlib.py).

    python benchmarks/soak.py --runs 10000            # CPU stages
    python benchmarks/soak.py --runs 500 --gpu-sim    # GPU stages under the CUDA simulator
    python benchmarks/soak.py --seed 4242 --runs 1 -v # replay one seed

Prints every bad run (seed and graph) and the figures: runs, hangs, leaks,
lost and duplicated items. Exits 1 if any run broke a guarantee.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--gpu-sim", action="store_true",
                    help="include GPU stages, under the CUDA simulator")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run")
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="GIL switch interval in seconds (1e-5: threads interleave far "
                         "more often, which shakes out races)")
    args = ap.parse_args()
    if args.gpu_sim:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba is imported
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
    from faultlib import run_many

    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    figures, failures = run_many(range(args.seed, args.seed + args.runs), gpu=args.gpu_sim,
                                 verbose=args.verbose, out=sys.stdout)
    print(figures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
