"""Progress of long work (hashing a run's files, storing them, getting them back), on stderr.

Domain code reports what it does through a `Progress`; whether anything is shown is the
command line's decision (`enable`, on when stderr is a terminal), so a library caller, a
pipe or a test sees nothing. Work that ends within `DELAY` seconds shows nothing either,
and tqdm (a well-kept bar, but a noticeable import) is imported only once work has run
that long: a short `roar run` pays for one timer thread and no more.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType

from roargit import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

# Seconds of work before a bar appears: a command that ends sooner prints nothing extra.
DELAY = 1.0
# How often the bar is redrawn, so that elapsed time moves even between updates.
TICK = 0.25

_enabled = False


def enable(on: bool = True) -> None:
    """Show progress bars from now on (the CLI turns this on when stderr is a terminal)."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


class Progress:
    """One piece of long work: `with Progress("storing", total=nbytes) as p: p.update(n)`.

    `total` None draws a counter with elapsed time (hashing, where sizes come only at the
    end). Also callable as `(done, total)`, the callback shape `push_blobs.upload` takes."""

    def __init__(self, label: str, total: int | None = None, unit: str = "B") -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self._bar: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if _enabled:
            self._started = time.monotonic()
            self._thread = threading.Thread(target=self._tick, name="roar-progress", daemon=True)
            self._thread.start()

    def update(self, n: int) -> None:
        self.done += n

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def _tick(self) -> None:
        if self._stop.wait(DELAY):
            return
        while True:
            with self._lock:
                if self._stop.is_set():
                    return
                self._draw()
            if self._stop.wait(TICK):
                return

    def _draw(self) -> None:
        if self._bar is None:
            from tqdm import tqdm  # lazy: only work long enough for a bar imports it

            self._bar = tqdm(
                desc=self.label,
                total=self.total,
                unit=self.unit,
                unit_scale=self.unit == "B",
                unit_divisor=1024 if self.unit == "B" else 1000,
                file=sys.stderr,
                leave=False,  # the command's own summary follows; the bar only kept company
                dynamic_ncols=True,
                mininterval=0,
                # Without a total there is nothing to count: the label and the time so far.
                bar_format="{desc}… {elapsed}" if self.total is None else None,
            )
            # Elapsed time from when the work began, not from when the bar appeared.
            self._bar.start_t -= time.monotonic() - self._started
        if self.total is not None and self._bar.total != self.total:
            self._bar.total = self.total
        self._bar.n = self.done
        self._bar.refresh()

    def close(self) -> None:
        if self._thread is None:
            return
        with self._lock:
            self._stop.set()
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        self._thread.join()
        self._thread = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
