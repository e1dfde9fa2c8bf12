"""One progress protocol for every long job.

A caller hands in `progress(stage, fraction)` (fraction of the whole job, 0..1) and `cancel()`; work inside a stage
only says how far it got, as a `Fraction` callback (0..1 of that stage), and polls `cancel` between steps, answering
with `Cancelled`. `Tracker` is the one place that maps stages onto the bar and checks cancel.
"""

from __future__ import annotations

from typing import Callable, Mapping

from .errors import Cancelled

Progress = Callable[[str, float], None]  # (stage, overall fraction 0..1)
Fraction = Callable[[float], None]  # fraction of the current stage done, 0..1
Cancel = Callable[[], bool]


def check(cancel: Cancel | None) -> None:
    """Raise Cancelled if the user asked to stop."""
    if cancel is not None and cancel():
        raise Cancelled()


class Tracker:
    """Stages with shares of the bar (their rough cost). Inside a stage, `report` takes the fraction done, or
    `step` counts one of the `steps` the stage was opened with."""

    def __init__(self, progress: Progress | None, cancel: Cancel | None, shares: Mapping[str, float]):
        total = float(sum(shares.values()))
        self.progress, self.cancel = progress, cancel
        self.shares = {name: share / total for name, share in shares.items()}
        self.name, self.base, self.done = "", 0.0, 0.0
        self.steps, self.steps_done = 0, 0

    def stage(self, name: str, steps: int = 0) -> None:
        self.check()
        self.name, self.base = name, self.done
        self.done += self.shares[name]
        self.steps, self.steps_done = steps, 0
        self.report(0.0)

    def report(self, fraction: float) -> None:
        if self.progress is not None:
            self.progress(self.name, min(self.base + self.shares[self.name] * fraction, 1.0))

    def step(self) -> None:
        self.steps_done += 1
        self.check()
        self.report(min(1.0, self.steps_done / max(self.steps, 1)))

    def check(self) -> None:
        check(self.cancel)
