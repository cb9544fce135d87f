"""Executes validated graphs: host stages on thread pools, device segments on GPUs."""

from __future__ import annotations

from .executor import run

__all__ = ["run"]
