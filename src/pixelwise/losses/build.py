"""`build_loss`: a loss module from a spec string ("0.5*ce+1.0*dice") or a dict config."""

from __future__ import annotations

import inspect
import re
from typing import Any

from torch import Tensor, nn

from pixelwise.errors import ConfigError
from pixelwise.losses.modules import ALIASES, LOSS_FUNCTIONS, SegmentationLoss, WeightedSum
from pixelwise.tasks import Task

_TERM = re.compile(r"^(?:(?P<weight>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?(?P<name>[A-Za-z_]+)$")


def accepted_names() -> list[str]:
    return sorted(LOSS_FUNCTIONS) + sorted(ALIASES)


def _resolve(name: str) -> str:
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in LOSS_FUNCTIONS:
        raise ConfigError(f"unknown loss {name!r}; accepted: {', '.join(accepted_names())}")
    return key


def _options_of(name: str) -> set[str]:
    params = list(inspect.signature(LOSS_FUNCTIONS[name]).parameters)
    return set(params[3:])  # after (logits, target, task)


def _parse_string(spec: str) -> list[tuple[str, float, dict]]:
    terms = []
    for raw in spec.split("+"):
        match = _TERM.match(raw.strip())
        if not match:
            raise ConfigError(
                f"cannot read loss term {raw.strip()!r} in {spec!r}; write terms like 'ce', 'dice' or "
                f"'0.5*ce+1.0*dice'"
            )
        weight = float(match["weight"]) if match["weight"] else 1.0
        terms.append((_resolve(match["name"]), weight, {}))
    return terms


def _parse_term_dict(d: dict) -> tuple[str, float, dict]:
    d = dict(d)
    if "name" not in d:
        raise ConfigError(f"a loss term needs a 'name', got {d!r}")
    name = _resolve(d.pop("name"))
    weight = float(d.pop("weight", 1.0))
    return name, weight, d


def _parse_dict(spec: dict) -> list[tuple[str, float, dict]]:
    if "terms" in spec:
        if set(spec) != {"terms"} or not isinstance(spec["terms"], list):
            raise ConfigError("a loss config with 'terms' holds only a list of {name, weight, options}")
        return [_parse_term_dict(t) for t in spec["terms"]]
    if "name" in spec:
        return [_parse_term_dict(spec)]
    terms = []
    for name, value in spec.items():  # {"ce": 0.5, "dice": {"weight": 1.0, "smooth": 0.0}}
        if isinstance(value, dict):
            terms.append(_parse_term_dict({"name": name, **value}))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            terms.append((_resolve(name), float(value), {}))
        else:
            raise ConfigError(f"loss {name!r}: expected a weight or a dict of options, got {value!r}")
    return terms


def build_loss(spec: str | dict, task: Task, class_weights: Tensor | None = None, **options: Any) -> nn.Module:
    """A loss module `loss(logits, target) -> scalar` for `task`.

    spec: "ce", "dice", "ce+dice", "0.5*ce+1.0*dice", "focal", "tversky", "bce", "jaccard", or a
    dict: {"ce": 0.5, "dice": 1.0}, {"name": "focal", "gamma": 2.0} or {"terms": [{...}, ...]}.
    For a binary task "ce" is BCE-with-logits on the single channel, so one recipe fits all
    tasks. `class_weights` go to the terms that take them (ce, bce, focal). `options` (e.g.
    label_smoothing=0.1, smooth=1.0) go to every term that accepts them; an option no term
    accepts is a ConfigError.
    """
    if not isinstance(task, Task):
        raise ConfigError(f"build_loss needs a pixelwise Task, got {type(task).__name__}")
    if isinstance(spec, str):
        terms = _parse_string(spec)
    elif isinstance(spec, dict):
        terms = _parse_dict(spec)
    else:
        raise ConfigError(f"a loss spec is a string or a dict, got {type(spec).__name__}")
    if class_weights is not None:
        expected = 2 if task.kind == "binary" else task.num_classes
        if class_weights.ndim != 1 or class_weights.numel() != expected:
            raise ConfigError(f"class_weights must have {expected} values for this {task.kind} task, "
                              f"got shape {tuple(class_weights.shape)}")
    used: set[str] = set()
    modules, weights = [], []
    for name, weight, term_options in terms:
        accepted = _options_of(name)
        unknown = set(term_options) - accepted
        if unknown:
            raise ConfigError(f"loss {name!r} has no option(s) {sorted(unknown)}; accepted: {sorted(accepted - {'class_weights'})}")
        shared = {k: v for k, v in options.items() if k in accepted}
        used |= set(shared)
        cw = class_weights if "class_weights" in accepted else None
        modules.append(SegmentationLoss(name, task, cw, **{**shared, **term_options}))
        weights.append(weight)
    unused = set(options) - used
    if unused:
        accepted_all = sorted(set().union(*(_options_of(n) for n, _, _ in terms)) - {"class_weights"})
        raise ConfigError(f"loss option(s) {sorted(unused)} fit none of the terms; accepted: {accepted_all}")
    if len(modules) == 1 and weights[0] == 1.0:
        return modules[0]
    return WeightedSum(modules, weights)
