"""The plan: a pure function from (fingerprint, budget, measured speeds, fixed keys) to the
recipe keys it fills, each with a one-line reason.

    p = plan(fp, budget_minutes=8, speeds=probe(...), fixed={"model.name": "unet"})
    p.values      # {"model.name": ..., "data.crop_size": ..., "train.epochs": ..., ...}
    p.reasons     # {"model.name": "unet_resnet (resnet18): 310 steps fit ...", ...}

Nothing here reads a file, a clock or the machine: the speeds come in as numbers, so the
same inputs always give the same plan and every rule is testable with made-up machines.

The rules, in order:
- input: a square training crop, the largest multiple of 32 that fits the usual image (at most
  512), smaller only when the budget would otherwise give too few steps; never below what the
  smallest objects need (downscaling is limited so their area stays >= MIN_OBJECT_AREA pixels,
  and thin structures are never downscaled).
- model: the first candidate, in order of expected accuracy, that reaches MIN_STEPS optimizer
  steps in the budget at that crop; otherwise the combination with the most steps.
- loss: CE (BCE for binary/multilabel), plus a Dice term when the foreground is rare
  (< RARE_SHARE of the labelled pixels) or the classes are imbalanced (> IMBALANCED x).
- class weights: median-frequency balancing for a strongly imbalanced multiclass task.
- augmentation: strong under 50 training images, medium under 500, light above.
- schedule: AdamW with cosine decay and a warm-up of 5 % of the steps (at most 100).
- validation: every `val_every` epochs so that it runs about VALIDATIONS times in the budget
  and costs at most VAL_SHARE of it; epochs: as many as fill the training time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from pixelwise.planning.fingerprint import Fingerprint

MIN_STEPS = 300             # optimizer steps a model needs to be worth choosing
MIN_OBJECT_AREA = 64.0      # pixels a small object keeps after downscaling (8 x 8)
RARE_SHARE = 0.1            # foreground share below which a Dice term is added
IMBALANCED = 10.0           # class-share ratio above which a Dice term is added
WEIGHTED = 50.0             # class-share ratio above which class weights are used
VALIDATIONS = 8             # validations wanted over a run
VAL_SHARE = 0.15            # most of the training time validation may take
PROBE_SHARE = 0.05          # most of the budget the speed probe may take
TEST_SHARE = 0.05           # of the budget set aside for scoring the test split
SMALL_SET, MEDIUM_SET = 50, 500


@dataclass(frozen=True)
class Candidate:
    key: str                        # the probe's and the plan's name for it
    model: str                      # registry name
    kwargs: dict[str, Any]
    lr: float
    stride: int                     # the coarsest output stride before upsampling (detail)


# In order of expected accuracy on a user's data at equal steps (random init).
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("unet_resnet18", "unet_resnet", {"encoder": "resnet18"}, 1e-3, 32),
    Candidate("unet32", "unet", {"base_channels": 32, "depth": 4}, 2e-3, 16),
    Candidate("unet16", "unet", {"base_channels": 16, "depth": 4}, 3e-3, 16),
    Candidate("lraspp_mobilenetv3", "lraspp_mobilenetv3", {}, 1e-3, 16),
)


@dataclass(frozen=True)
class Speed:
    """Measured throughput of one candidate at `size` x `size` inputs (images per second)."""

    train: float
    eval: float
    size: int

    def train_at(self, size: int) -> float:
        # Convolution cost grows with pixels; scaling by the pixel ratio is what the probe's
        # small input makes necessary (and slightly pessimistic for larger inputs).
        return self.train * (self.size / size) ** 2

    def eval_at(self, pixels: float) -> float:
        return self.eval * self.size ** 2 / max(pixels, 1.0)


@dataclass
class Plan:
    values: dict[str, Any]                       # dotted recipe keys -> value
    reasons: dict[str, str]                      # dotted key -> one-line reason
    budget_minutes: float
    train_minutes: float                         # what the trainer's time budget gets
    estimate: dict[str, float] = field(default_factory=dict)  # steps, epoch seconds, ...

    def lines(self) -> list[str]:
        width = max((len(k) for k in self.values), default=0)
        return [f"{k:<{width}}  {_show(v)}   # {self.reasons.get(k, '')}" for k, v in self.values.items()]

    def to_dict(self) -> dict[str, Any]:
        return {"budget_minutes": self.budget_minutes, "train_minutes": self.train_minutes,
                "values": self.values, "reasons": self.reasons, "estimate": self.estimate}

    def overrides(self) -> list[str]:
        """The plan as dotted `key=value` overrides (YAML values)."""
        import yaml

        return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for k, v in self.values.items()]


def _show(value: Any) -> str:
    return str(value) if not isinstance(value, float) else f"{value:g}"


def crop_options(fp: Fingerprint) -> tuple[int, int]:
    """(largest, smallest) training crop: the usual image's shorter side, in multiples of 32
    (at most 512), down to where downscaling would lose the smallest objects' detail."""
    side = fp.image_size["median"] or 64
    largest = max(32, min(512, side // 32 * 32))
    keep = min_scale(fp)
    smallest = max(32, min(largest, int(math.ceil(side * keep / 32) * 32), 128))
    return largest, min(smallest, largest)


def min_scale(fp: Fingerprint) -> float:
    """The smallest downscale factor that keeps the small objects' detail (1 = none allowed)."""
    if fp.thin_share > 0.3:
        return 1.0
    area = fp.smallest_object_area
    if area is None or area <= 0:
        return 0.5
    return float(min(1.0, max(0.5, math.sqrt(MIN_OBJECT_AREA / area))))


def batch_for(crop: int, train_images: int) -> int:
    """Images per step: more for small crops (CPU throughput saturates), never more than the set."""
    batch = 16 if crop <= 128 else 8 if crop <= 256 else 4
    return max(1, min(batch, train_images))


def plan(fp: Fingerprint, budget_minutes: float, speeds: Mapping[str, Speed], fixed: Mapping[str, Any] | None = None,
         *, val_images: int | None = None, test_images: int = 0, probe_seconds: float = 0.0,
         max_epochs: int | None = None) -> Plan:
    """Fill the recipe keys not in `fixed` (dotted keys the user gave) for `budget_minutes`
    of wall time on a machine whose candidate speeds are `speeds` (see module docstring).
    `max_epochs` caps the epochs when a recipe is known to need no more (the quickstart)."""
    fixed = dict(fixed or {})
    values: dict[str, Any] = {}
    reasons: dict[str, str] = {}

    def choose(key: str, value: Any, reason: str) -> Any:
        if key in fixed:
            values[key], reasons[key] = fixed[key], "given"
            return fixed[key]
        values[key], reasons[key] = value, reason
        return value

    budget = budget_minutes * 60.0
    n = max(fp.num_images, 1)
    n_val = val_images if val_images is not None else max(1, n // 5)
    eval_pixels = max(fp.image_pixels_median, 1)

    # Time: the probe has run; the test split is scored after training.
    test_seconds = 0.0
    # (the probe may overrun its 5 % by one candidate's steps: what it spent is what is gone)
    train_seconds = max(budget - max(probe_seconds, 0.0) - TEST_SHARE * budget, 0.05 * budget)

    # Input and model, chosen together: the most accurate candidate with enough steps.
    largest, smallest = crop_options(fp)
    if "data.crop_size" in fixed and fixed["data.crop_size"] is not None:
        crops = [int(fixed["data.crop_size"])]
    else:
        crops = sorted({c for c in (largest, largest // 2 // 32 * 32, smallest) if smallest <= c <= largest},
                       reverse=True)
    pool = [c for c in CANDIDATES if c.key in speeds]
    if "model.name" in fixed:  # the given model's speed: its own candidate's, else its family's
        same = [c for c in pool if c.model == fixed["model.name"]]
        exact = [c for c in same if c.kwargs == fixed.get("model.kwargs", c.kwargs)]
        pool = exact or same or pool[:1]
    elif fp.thin_share > 0.3:  # stride-16 heads without a full decoder blur thin structures
        pool = [c for c in pool if c.model != "lraspp_mobilenetv3"] or pool
    if not pool:
        raise ValueError("plan needs a measured speed for at least one candidate")

    def steps_of(cand: Candidate, crop: int) -> tuple[float, int, float]:
        batch = int(fixed.get("data.batch_size") or batch_for(crop, n))
        ips = speeds[cand.key].train_at(crop)
        val_cost = n_val / max(speeds[cand.key].eval_at(eval_pixels), 1e-9)
        usable = train_seconds - test_seconds - min(VAL_SHARE * train_seconds, val_cost * VALIDATIONS)
        return max(usable, 0.0) * ips / batch, batch, val_cost

    chosen = None
    for cand in pool:
        for crop in crops:
            steps, batch, val_cost = steps_of(cand, crop)
            if steps >= MIN_STEPS:
                chosen = (cand, crop, steps, batch, val_cost, "enough")
                break
        if chosen:
            break
    if chosen is None:  # a slow machine or a short budget: the combination with the most steps
        best = max(((c, crop) for c in pool for crop in crops), key=lambda cc: steps_of(*cc)[0])
        steps, batch, val_cost = steps_of(*best)
        chosen = (best[0], best[1], steps, batch, val_cost, "fastest")
    cand, crop, steps, batch, val_cost, why = chosen
    # Scoring the test split has TEST_SHARE of the budget set aside; a longer one comes off training.
    test_seconds = test_images / max(speeds[cand.key].eval_at(eval_pixels), 1e-9)
    train_seconds = max(train_seconds - max(test_seconds - TEST_SHARE * budget, 0.0), 0.05 * budget)
    ips = speeds[cand.key].train_at(crop)
    name = choose("model.name", cand.model,
                  f"{cand.key}: ~{steps:.0f} steps fit the budget at {crop}px"
                  + (f" (>= {MIN_STEPS}: the most accurate candidate that does)" if why == "enough"
                     else f" (no candidate reaches {MIN_STEPS}: the one with the most steps)"))
    choose("model.kwargs", dict(cand.kwargs) if name == cand.model else {},
           f"the width of {cand.key}" if name == cand.model
           else f"{name}'s defaults (not a planner candidate: its time estimated from {cand.key}'s speed)")
    crop = choose("data.crop_size", crop,
                  f"usual image {fp.image_size['median']}px; smallest crop keeping small objects' detail {smallest}px")
    batch = choose("data.batch_size", batch, f"{batch} images per step at {crop}px on this machine")
    choose("data.val_batch_size", 1, "validation runs at full resolution; images may differ in size")

    # Augmentation: strength by data-set size, downscaling limited by the small objects.
    lo = min_scale(fp)
    if n < SMALL_SET:
        strength, augment = "strong", {"scale": [max(lo, 0.5), 2.0], "rotate": 30.0, "hflip": True, "vflip": True,
                                        "color_jitter": 0.3, "blur": 0.2}
    elif n < MEDIUM_SET:
        strength, augment = "medium", {"scale": [max(lo, 0.5), 1.5], "rotate": 10.0, "hflip": True, "vflip": False,
                                        "color_jitter": 0.2, "blur": 0.1}
    else:
        strength, augment = "light", {"scale": [max(lo, 0.75), 1.25], "rotate": 0.0, "hflip": True, "vflip": False,
                                       "color_jitter": 0.1, "blur": 0.0}
    choose("data.augment", augment, f"{strength}: {n} training images; downscaling stops at {lo:.2f}x "
                                    f"to keep small objects' detail")

    # Loss and class weights.
    sigmoid = fp.task in ("binary", "multilabel")
    base = "bce" if sigmoid else "ce"
    rare = fp.foreground_share < RARE_SHARE
    imbalanced = fp.imbalance > IMBALANCED
    if rare or imbalanced:
        why_dice = (f"foreground share {fp.foreground_share:.3f} < {RARE_SHARE}" if rare
                    else f"class imbalance {fp.imbalance:.0f}x > {IMBALANCED:g}x")
        choose("train.loss", f"{base}+dice", f"{why_dice}: a Dice term keeps rare classes from being ignored")
    else:
        choose("train.loss", base, f"classes reasonably balanced (imbalance {fp.imbalance:.1f}x)")
    if fp.task == "multiclass" and fp.imbalance > WEIGHTED:
        choose("data.class_weights", "median_frequency", f"imbalance {fp.imbalance:.0f}x > {WEIGHTED:g}x")
    else:
        choose("data.class_weights", None, "no weighting needed" if fp.task != "multilabel"
               else "class weights do not apply to multilabel tasks")

    # Schedule: length in steps, validation cadence by time, epochs to fill the budget.
    steps_per_epoch = max(1, n // batch) if n >= batch else 1
    epoch_seconds = steps_per_epoch * batch / max(ips, 1e-9)
    epochs_fit = (train_seconds - min(VAL_SHARE * train_seconds, val_cost * VALIDATIONS)) / max(epoch_seconds, 1e-9)
    epochs = max(1, int(epochs_fit))
    val_every = max(1, math.ceil(epochs / VALIDATIONS))
    # Validation must also cost at most VAL_SHARE of the time: validate less often if it is slow.
    while val_cost * math.ceil(epochs / val_every) > VAL_SHARE * train_seconds and val_every < epochs:
        val_every += 1
    epochs = max(1, int((train_seconds - val_cost * math.ceil(epochs / val_every)) / max(epoch_seconds, 1e-9)))
    if max_epochs is not None and epochs > max_epochs:
        epochs = choose("train.epochs", max_epochs, f"the recipe needs no more than {max_epochs} epochs "
                                                    f"({epoch_seconds:.1f} s each): the run ends before the budget")
    else:
        epochs = choose("train.epochs", epochs, f"{epoch_seconds:.1f} s per epoch ({steps_per_epoch} steps) "
                                                f"fill {train_seconds / 60:.1f} min")
    val_every = choose("train.val_every", min(val_every, epochs),
                       f"validation ({val_cost:.1f} s) about every {val_every * epoch_seconds:.0f} s "
                       f"({VALIDATIONS} in the run, at most {VAL_SHARE:.0%} of it)")
    choose("train.time_budget_minutes", round(train_seconds / 60, 3),
           "the trainer re-measures the first epochs and shortens the run if it is slower than planned")
    total_steps = epochs * steps_per_epoch
    lr = cand.lr if name == cand.model else 1e-3
    choose("optim.name", "adamw", "robust default across architectures")
    choose("optim.lr", lr, f"the usual AdamW rate for {cand.key if name == cand.model else name}")
    choose("schedule.name", "cosine", "decays to zero exactly at the planned end")
    choose("schedule.warmup_steps", min(100, max(0, total_steps // 20)), "5% of the steps, at most 100")
    validations = math.ceil(epochs / max(int(val_every), 1))
    total = probe_seconds + epochs * epoch_seconds + validations * val_cost + test_seconds
    estimate = {"steps": float(total_steps), "epoch_seconds": epoch_seconds, "val_seconds": val_cost,
                "total_seconds": total,
                "train_images_per_second": ips, "test_seconds": test_seconds, "probe_seconds": probe_seconds}
    return Plan(values=values, reasons=reasons, budget_minutes=budget_minutes,
                train_minutes=round(train_seconds / 60, 3), estimate=estimate)
