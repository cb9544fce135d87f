"""Progress bars: items done per sink and the rate, with ``tqdm.auto``
(a widget in Jupyter when ipywidgets is installed, text in a terminal)."""

from __future__ import annotations

from typing import Any

from ..runtime.observe import Observer, RunView

__all__ = ["ProgressBars"]

_TERMINAL = ("sink", "collect")


class ProgressBars(Observer):
    """One tqdm bar per sink and collect, refreshed ten times a second.

    ``file``: where text bars go (tqdm's default, stderr, when None). The bars
    never start tqdm's own monitor thread, so nothing outlives the run.
    """

    interval = 0.1

    def __init__(self, file: Any = None, **tqdm_options: Any) -> None:
        self.file = file
        self.options = tqdm_options
        self.bars: dict[str, Any] = {}

    def on_start(self, view: RunView) -> None:
        from tqdm.auto import tqdm

        class Bar(tqdm):  # type: ignore[misc, valid-type]
            monitor_interval = 0  # no TMonitor thread: it would outlive the run

        sinks = [n for n, s in view.stages.items() if s.kind in _TERMINAL]
        for pos, name in enumerate(sinks):
            self.bars[name] = Bar(desc=name, unit="item", position=pos, leave=True,
                                  file=self.file, dynamic_ncols=True, **self.options)

    def on_tick(self, view: RunView) -> None:
        for name, bar in self.bars.items():
            done = view.items_out(name)
            if done != bar.n:
                bar.update(done - bar.n)

    def on_end(self, view: RunView, report: Any, error: BaseException | None) -> None:
        self.on_tick(view)
        for bar in self.bars.values():
            if error is not None:
                bar.set_postfix_str(f"stopped: {type(error).__name__}", refresh=False)
            bar.close()
