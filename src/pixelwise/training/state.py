"""What a run has done so far, and the small pure rules that decide what it does next.

`TrainState` holds every value derived while training (epochs done, steps, the best
metric, the planned epoch count a time budget may lower, early-stopping counters, RNG
states); it converts to and from the checkpoint's keys, so the recipe (`Config`) is never
written to. `plan_epochs`, `validation_due` and `improved` are pure functions of numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

# Checkpoint keys the state owns (the format of pixelwise-checkpoint/1; `planned_epochs` is
# new: older checkpoints kept the plan in config.train.epochs, which `from_checkpoint` reads).
STATE_KEYS = ("epoch", "global_step", "best_metric", "best_epoch", "bad_epochs", "planned_epochs", "rng")


@dataclass
class TrainState:
    planned_epochs: int                 # train.epochs, or fewer when a time budget shortened the run
    epoch: int = 0                      # epochs completed
    global_step: int = 0                # optimizer steps completed
    best_metric: float | None = None    # best value of the selection metric so far
    best_epoch: int | None = None       # 1-based epoch that reached it
    bad_epochs: int = 0                 # validations since the last improvement (early stopping)
    rng: dict[str, Any] | None = None   # RNG states captured at the last save (restored on resume)
    epoch_seconds: list[float] = field(default_factory=list)  # per-epoch cost measured for the time budget

    def to_checkpoint(self) -> dict[str, Any]:
        """The state's keys of a training checkpoint (the measured epoch costs stay in memory)."""
        return {"epoch": self.epoch, "global_step": self.global_step, "best_metric": self.best_metric,
                "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "planned_epochs": self.planned_epochs, "rng": self.rng}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], planned_epochs: int, keep_plan: bool = True) -> "TrainState":
        """The state saved in `ckpt`. `planned_epochs` is the recipe's train.epochs: the plan
        when `keep_plan` is False (a resumed run may be given more epochs), else the cap on
        the saved plan (a time budget's plan is kept on resume).

        Checkpoints written before `planned_epochs` existed kept a budget's plan in their
        recorded config's train.epochs, so that is read when the key is absent.
        """
        planned = ckpt.get("planned_epochs")
        if planned is None:
            planned = (ckpt.get("config") or {}).get("train", {}).get("epochs", planned_epochs)
        planned = min(int(planned), planned_epochs) if keep_plan else planned_epochs
        best = ckpt.get("best_metric")
        return cls(planned_epochs=planned, epoch=int(ckpt["epoch"]),
                   global_step=int(ckpt.get("global_step", 0)),
                   best_metric=None if best is None else float(best), best_epoch=ckpt.get("best_epoch"),
                   bad_epochs=int(ckpt.get("bad_epochs", 0)), rng=ckpt.get("rng"))


def plan_epochs(*, budget_seconds: float, elapsed_seconds: float, epoch_seconds: Sequence[float],
                epochs_done: int, max_epochs: int) -> int:
    """How many epochs in all fit a time budget, at most `max_epochs` and at least those done.

    The pace is the fastest measured epoch after the first: epoch 1 carries one-off costs
    (kernel selection, a cold file cache) and a busy machine can slow any single epoch. The
    time already spent is counted as spent; the rest of the budget is filled at that pace.
    """
    if not epoch_seconds:
        raise ValueError("plan_epochs needs at least one measured epoch")
    pace = max(min(epoch_seconds[1:] or epoch_seconds), 1e-9)
    more = int(max(budget_seconds - elapsed_seconds, 0.0) // pace)
    return max(epochs_done, min(epochs_done + more, max_epochs))


def validation_due(epoch: int, *, every: int, planned_epochs: int, budgeted: bool) -> bool:
    """Validate after 0-based `epoch`: every `every` epochs, after the last planned one, and
    after the first when a time budget is set (the plan needs validation's cost)."""
    return (epoch + 1) % every == 0 or epoch + 1 == planned_epochs or (budgeted and epoch == 0)


def improved(value: float | None, best: float | None, *, mode: str, min_delta: float) -> bool:
    """Whether `value` beats `best` by more than `min_delta` (mode "max" or "min"); NaN never does."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta
