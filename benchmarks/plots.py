"""Draw the PNG plots of BENCHMARKS.md from its own tables.

The tables are the record (each measured side by side in one run); this
script reads them back from BENCHMARKS.md and draws one figure per
comparison into ``benchmarks/figures/``, so a plot can never disagree with its
table. Run it after pasting new tables:

    python benchmarks/plots.py
"""

from __future__ import annotations

import pathlib
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "figures"


def tables(text: str) -> dict[str, list[list[str]]]:
    """The first table under each ``## `` heading: {heading: rows of cells}."""
    found: dict[str, list[list[str]]] = {}
    heading = None
    rows: list[list[str]] = []
    for line in text.splitlines() + [""]:
        if line.startswith("## "):
            heading, rows = line[3:].strip(), []
        elif line.startswith("|") and heading is not None:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif rows and heading is not None and heading not in found:
            found[heading] = rows
            rows = []
    return found


def number(cell: str) -> float:
    return float(re.sub(r"[^0-9.\-]", "", cell))


def table(found: dict[str, list[list[str]]], prefix: str) -> list[list[str]]:
    for heading, rows in found.items():
        if heading.startswith(prefix):
            return rows
    raise SystemExit(f"BENCHMARKS.md has no table under a heading starting {prefix!r}")


def bars(path: pathlib.Path, labels: list[str], values: list[float], xlabel: str,
         title: str, highlight: str = "flowgpu", log: bool = False) -> None:
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.2))
    colors = ["tab:orange" if label.startswith(highlight) else "tab:blue" for label in labels]
    ax.barh(labels, values, color=colors)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> list[pathlib.Path]:
    found = tables((ROOT / "BENCHMARKS.md").read_text())
    OUT.mkdir(exist_ok=True)
    made = []

    rows = table(found, "Per-item overhead")[1:]
    path = OUT / "overhead.png"
    bars(path, [r[0] for r in rows], [number(r[1]) for r in rows], "items/s (log scale)",
         "3 trivial stages over 200,000 ints", log=True)
    made.append(path)

    rows = table(found, "Image batch job")[1:]
    path = OUT / "images.png"
    bars(path, [r[0] for r in rows], [number(r[2]) for r in rows], "images/s",
         "thumbnail job, 240 Kodak photos, 2 cores")
    made.append(path)

    rows = table(found, "A stencil")[1:]
    path = OUT / "stencil.png"
    bars(path, [f"{r[0]}, sigma {r[1]}" for r in rows], [number(r[4]) for r in rows],
         "flowgpu speed / scipy.ndimage speed (1 = level)",
         "Gaussian blur against scipy.ndimage", highlight="\0")
    made.append(path)

    rows = table(found, "Scaling")[1:]
    items = [number(r[0]) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.loglog(items, [number(r[1]) for r in rows], "o-")
    left.set_xlabel("items")
    left.set_ylabel("seconds")
    left.set_title("time: linear in the input")
    right.semilogx(items, [number(r[3]) for r in rows], "o-")
    right.set_ylim(bottom=0)
    right.set_xlabel("items")
    right.set_ylabel("peak RSS MB")
    right.set_title("memory: flat")
    fig.tight_layout()
    path = OUT / "scaling.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    made.append(path)
    for p in made:
        print(p.relative_to(ROOT))
    return made


if __name__ == "__main__":
    main()
