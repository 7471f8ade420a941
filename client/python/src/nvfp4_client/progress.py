"""A terminal progress bar for `Client.watch(..., on_progress=ProgressBar())`."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

from .client import Progress

__all__ = ["ProgressBar", "format_progress"]


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def _duration(s: Optional[float]) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def format_progress(p: Progress, width: int = 30) -> str:
    """One line: `[#######.......]  45% 12/40 tensors 3.1/12.0 MB ETA 0:05 RUNNING`."""
    if p.reattaching:
        return f"{p.job_id}: connection lost, re-attaching..."
    filled = int(round(p.fraction * width))
    bar = "#" * filled + "." * (width - filled)
    total = p.tensors_total if p.tensors_total else "?"
    line = (f"[{bar}] {100 * p.fraction:3.0f}% {p.tensors_done}/{total} tensors "
            f"{_mb(p.bytes_in)}/{_mb(p.bytes_in_total)} MB")
    if not p.finished:
        line += f" ETA {_duration(p.eta_seconds)}"
    if p.tensors_resumed:
        line += f" ({p.tensors_resumed} resumed)"
    return f"{line} {p.state}"


class ProgressBar:
    """Callable for `on_progress`: redraws one line in place on a terminal; elsewhere (CI logs)
    prints a line when the state changes or every `log_every` of progress, at most every
    `min_interval` seconds. Call close() (or use as a context manager) to end the line."""

    def __init__(self, label: str = "", stream: Optional[TextIO] = None, width: int = 30,
                 log_every: float = 0.1, min_interval: float = 0.2):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.log_every = log_every
        self.min_interval = min_interval
        self._last_state: Optional[str] = None
        self._last_fraction = -1.0
        self._last_time = 0.0
        self._open = False
        self.last: Optional[Progress] = None

    def __call__(self, p: Progress) -> None:
        self.last = p
        now = time.monotonic()
        changed = p.state != self._last_state or p.reattaching
        if not changed and not p.finished:
            if now - self._last_time < self.min_interval:
                return
            if not self.tty and p.fraction - self._last_fraction < self.log_every:
                return
        self._last_state, self._last_fraction, self._last_time = p.state, p.fraction, now
        text = (f"{self.label} " if self.label else "") + format_progress(p, self.width)
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self._open = True
            if p.finished:
                self.stream.write("\n")
                self._open = False
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
