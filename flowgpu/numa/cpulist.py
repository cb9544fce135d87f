"""The kernel's CPU-list notation (``0-3,8-11``), read and written.

This is the format of ``/sys/devices/system/node/node*/cpulist``,
``cpuset.cpus.effective`` and ``taskset -c``.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["parse_cpulist", "format_cpulist"]


def parse_cpulist(text: str) -> frozenset[int]:
    """Parse a CPU list such as ``"0-3,8-11"`` into a set of CPU numbers.

    Accepts single CPUs (``"5"``), ranges (``"0-3"``), the kernel's strided
    ranges (``"0-15:2/4"``: in each group of 4, the first 2), surrounding
    whitespace and a trailing newline. An empty or blank string is the empty
    set (a memory-only NUMA node's ``cpulist``).

    Raises ``ValueError`` on anything else: a negative number, a reversed
    range (``"3-1"``), an empty element (``"1,,2"``), a zero group size.
    """
    text = text.strip()
    if not text:
        return frozenset()
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"bad CPU list {text!r}: empty element")
        span, _, stride = part.partition(":")
        lo_s, dash, hi_s = span.partition("-")
        lo = _cpu_number(lo_s, text)
        hi = _cpu_number(hi_s, text) if dash else lo
        if hi < lo:
            raise ValueError(f"bad CPU list {text!r}: reversed range {part!r}")
        if not stride:
            cpus.update(range(lo, hi + 1))
            continue
        used_s, slash, group_s = stride.partition("/")
        used = _cpu_number(used_s, text)
        group = _cpu_number(group_s, text) if slash else used
        if group == 0 or used > group:
            raise ValueError(f"bad CPU list {text!r}: bad stride {stride!r}")
        cpus.update(c for c in range(lo, hi + 1) if (c - lo) % group < used)
    return frozenset(cpus)


def _cpu_number(s: str, text: str) -> int:
    s = s.strip()
    if not s.isdigit():  # also rejects "-1" and "" (isdigit is False for both)
        raise ValueError(f"bad CPU list {text!r}: {s!r} is not a CPU number")
    return int(s)


def format_cpulist(cpus: Iterable[int]) -> str:
    """The shortest CPU list naming ``cpus``: ``{0, 1, 2, 3, 8}`` -> ``"0-3,8"``.

    The empty set is ``""``. ``parse_cpulist(format_cpulist(s)) == s``.
    """
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)
