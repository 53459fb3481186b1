"""Planning a training run from the data and the machine (`pixelwise plan`, `pixelwise train DATA`).

    config, plan = plan_config({"data": {"root": "/data/cells"}}, minutes=8)

fingerprint (the data) + probe (this machine's speed) -> plan (a pure function) -> the recipe
keys the user did not give, each with a reason, recorded in the config's `plan` section. A
config that already has a `plan` section is returned unchanged: a run is planned once, and
resuming it never plans again.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from typing import Any, Callable

from pixelwise.planning.fingerprint import Fingerprint, fingerprint
from pixelwise.planning.plan import PROBE_SHARE, Plan, Speed, plan

__all__ = ["Fingerprint", "Plan", "Speed", "fingerprint", "plan", "plan_config", "fixed_keys", "DEFAULT_MINUTES"]

DEFAULT_MINUTES = 10.0      # the budget when neither --minutes nor train.time_budget_minutes is given


def fixed_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """The dotted keys a raw recipe gives (`section.key`; dict values such as data.augment
    count as one key), which the planner keeps."""
    out = {}
    for section, body in raw.items():
        if isinstance(body, dict):
            out.update({f"{section}.{k}": v for k, v in body.items()})
    return out


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    section, _, name = key.partition(".")
    raw.setdefault(section, {})[name] = value


def plan_config(raw: dict[str, Any], *, data: str | None = None, minutes: float | None = None,
                use_cache: bool = True, say: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
                max_epochs: int | None = None) -> tuple[Any, Plan | None]:
    """(validated Config, the Plan or None when `raw` was planned before). `data` and
    `minutes` are `pixelwise train DATA --minutes N`; every key of `raw` is kept;
    `max_epochs` caps the planned epochs (see `plan`)."""
    from pixelwise.runtime import resolve_runtime
    from pixelwise.training import distributed as D
    from pixelwise.training.builders import resolve_data_root
    from pixelwise.training.config import validate_config

    raw = copy.deepcopy(raw)
    if data is not None:
        _set(raw, "data.root", str(data))
    if raw.get("plan"):
        return validate_config(raw, "config"), None
    if minutes is not None:
        _set(raw, "train.time_budget_minutes", float(minutes))
    # Bad keys fail here, before any measuring. The crop is the planner's to choose; a
    # placeholder only satisfies the rule that rescaled batches need one.
    draft = copy.deepcopy(raw)
    draft.setdefault("data", {}).setdefault("crop_size", 64)
    given = validate_config(draft, "config")
    budget = given.train.time_budget_minutes or DEFAULT_MINUTES
    from pixelwise.errors import ConfigError
    from pixelwise.models import list_models

    if given.model.name not in list_models():  # before the data is read and the machine measured
        raise ConfigError(f"model.name: unknown model {given.model.name!r}; available: {', '.join(list_models())}")
    fixed = fixed_keys(raw)
    fixed.pop("train.time_budget_minutes", None)  # the budget is the planner's input, not a fixed key
    runtime = resolve_runtime(given.train.device, given.train.precision, given.train.channels_last)
    dist = D.init_distributed(runtime.device)
    record: list[Any] = [None]
    if dist.is_main:
        record[0] = _plan_here(given, resolve_data_root(given.data.root), budget, fixed, runtime, use_cache, say,
                               max_epochs)
    if dist.enabled:  # every process trains rank 0's plan
        import torch.distributed

        torch.distributed.broadcast_object_list(record, src=0)
    result: Plan = record[0]["plan"]
    for key, value in result.values.items():
        if key not in fixed:
            _set(raw, key, value)
    raw["plan"] = {"budget_minutes": budget, **{k: v for k, v in record[0].items() if k != "plan"},
                   "reasons": result.reasons, "estimate": result.estimate}
    return validate_config(raw, "planned config"), result


def _plan_here(given: Any, root: str, budget: float, fixed: dict[str, Any], runtime: Any, use_cache: bool,
               say: Callable[[str], None], max_epochs: int | None) -> dict[str, Any]:
    from pixelwise.data import open_dataset
    from pixelwise.planning.probe import cpu_model, probe

    fp = fingerprint(root, given.data.train_split, use_cache=use_cache)
    limit = given.data.limit
    if limit is not None and fp.num_images > limit:
        fp = dataclasses.replace(fp, num_images=limit)
    val_images = len(open_dataset(root, given.data.val_split))
    test_images = 0
    if given.data.test_split:
        try:
            test_images = len(open_dataset(root, given.data.test_split))
        except Exception:  # no test split: nothing to score after training
            test_images = 0
    if limit is not None:
        val_images, test_images = min(val_images, limit), min(test_images, limit)
    task = open_dataset(root, given.data.train_split).task
    speeds, spent, cached = probe(task, fp.channels, runtime, PROBE_SHARE * budget * 60, use_cache=use_cache, say=say)
    result = plan(fp, budget, speeds, fixed, val_images=val_images, test_images=test_images, probe_seconds=spent,
                  max_epochs=max_epochs)
    return {"plan": result, "fingerprint": fp.to_dict(), "machine": f"{cpu_model() if runtime.device.type == 'cpu' else runtime.device}, {runtime.describe()}",
            "speeds": {k: dataclasses.asdict(v) for k, v in speeds.items()},
            "probe_seconds": round(spent, 2), "speeds_from_cache": cached}
