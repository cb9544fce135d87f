"""The GPU benchmarks of `make gpu-check`, ending with one short table.

Runs each GPU benchmark in its own process (so that one crash or hang cannot
hide the others), with a time limit each, then prints what it found: the
device, the fused elementwise chain against a device copy, and the overlap
of upload, kernel and download. Exits 0 when no GPU is present, saying so.

    python benchmarks/gpu_check.py
"""

from __future__ import annotations

import datetime
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent

RUNS = [
    ("fused elementwise chain vs device copy", ["elementwise.py", "--device", "gpu",
                                                 "--repeat", "5"], 240),
    ("upload -> kernel -> download overlap", ["gpu_overlap.py", "--batches", "200",
                                               "--mb", "64"], 240),
]


def main() -> int:
    from flowgpu.device import gpu_status, is_simulator

    ok, reason = gpu_status()
    if not ok or is_simulator():
        print(f"gpu-check: no GPU here ({reason}); nothing to measure")
        return 0
    summary = [f"gpu-check {datetime.date.today()} on {reason}", ""]
    failed = 0
    for title, argv, limit in RUNS:
        print(f"== {title}", flush=True)
        try:
            out = subprocess.run([sys.executable, str(HERE / argv[0]), *argv[1:]],
                                 capture_output=True, text=True, timeout=limit)
            text = out.stdout + (out.stderr if out.returncode else "")
            status = "ok" if out.returncode == 0 else f"exit {out.returncode}"
        except subprocess.TimeoutExpired as exc:
            text = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else ""
            status = f"timed out after {limit} s"
        print(text, flush=True)
        failed += status != "ok"
        summary.append(f"### {title} ({status})")
        summary += [line for line in text.splitlines()
                    if line.startswith("|") or "total / max" in line]
        summary.append("")
    print("\n".join(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
