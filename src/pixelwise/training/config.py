"""The training recipe: a YAML file plus dotted command-line overrides, validated by pydantic.

Like timm, the YAML sets the values, `key.sub=value` arguments override them, unknown keys
and impossible values are errors (`ConfigError` naming the key), and the resolved recipe is
written into the run folder so a run can always be repeated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pixelwise import atomic
from pixelwise.errors import ConfigError


class _Section(BaseModel):
    # extra="forbid" is what turns a typo such as `optim.lrr` into an error.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    root: str = Field(description="dataset folder or 'synthetic:shapes?n=..&size=..'")
    train_split: str = "train"
    val_split: str = "val"
    test_split: str | None = Field(default="test", description="scored with the best checkpoint after training; null to skip")
    crop_size: int | None = Field(default=None, gt=0, description="random training crop; null trains on whole images")
    batch_size: int = Field(default=8, gt=0)
    val_batch_size: int = Field(default=1, gt=0, description="validation runs at full resolution, images may differ in size")
    num_workers: int = Field(default=0, ge=0)
    mean: list[float] | None = Field(default=None, description="per channel, 0..1 scale; null = from the data")
    std: list[float] | None = None
    limit: int | None = Field(default=None, gt=0, description="use only the first N images of each split (smoke tests)")
    class_weights: Literal["median_frequency", "inverse_frequency", "inverse_log_frequency"] | None = None
    augment: dict[str, Any] = Field(default_factory=dict,
                                    description="training augmentation options of build_transforms (scale, rotate, hflip, ...)")

    @model_validator(mode="after")
    def _check_stats(self) -> "DataConfig":
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both data.mean and data.std, or neither")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("data.std values must be > 0")
        if self.mean is not None and len(self.mean) != len(self.std or []):
            raise ValueError("data.mean and data.std must have the same length")
        scale = tuple(self.augment.get("scale", (0.5, 2.0)))  # build_transforms' default rescales
        if self.crop_size is None and self.batch_size > 1 and scale != (1.0, 1.0):
            raise ValueError("data.crop_size is required when batch_size > 1 and training images are rescaled "
                             "(set data.crop_size, or data.augment.scale=[1.0,1.0] for same-size images)")
        return self


class ModelConfig(_Section):
    name: str = "unet"
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra create_model arguments")
    encoder_weights: str | None = Field(
        default=None, description="pretrained encoder from the weights catalogue: 'imagenet' or a name from "
                                  "`pixelwise weights list`; must be fetched first. Its mean/std become the run's "
                                  "unless data.mean/std are set")

    @model_validator(mode="after")
    def _one_place_for_weights(self) -> "ModelConfig":
        from pixelwise.weights.catalogue import is_catalogue_reference

        inner = self.kwargs.get("encoder_weights")
        if isinstance(inner, str) and is_catalogue_reference(inner):
            raise ValueError(f"write model.encoder_weights: {inner}, not model.kwargs.encoder_weights "
                             "(only the first gives the run the weights' normalisation and records them)")
        return self


class OptimConfig(_Section):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD only")
    betas: tuple[float, float] = (0.9, 0.999)


class ScheduleConfig(_Section):
    name: Literal["poly", "cosine", "constant"] = "poly"
    warmup_steps: int = Field(default=0, ge=0, description="linear warm-up from warmup_factor*lr")
    warmup_factor: float = Field(default=0.1, gt=0, le=1)
    power: float = Field(default=0.9, gt=0, description="poly decay exponent")
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1, description="floor as a fraction of lr")


class EarlyStoppingConfig(_Section):
    patience: int | None = Field(default=None, gt=0, description="epochs without improvement; null disables")
    min_delta: float = Field(default=0.0, ge=0)


class TrainConfig(_Section):
    epochs: int = Field(default=10, gt=0)
    loss: str = Field(default="auto", description="loss spec such as 'ce', 'ce+dice'; auto = ce or bce by task")
    seed: int = 0
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto: bf16 where it is a measured speed-up (fp16 on GPUs without bf16)")
    channels_last: Literal["auto", "on", "off"] = Field(default="auto", description="auto: on with bf16/fp16")
    compile: bool = False
    grad_clip: float | None = Field(default=None, gt=0, description="max gradient norm")
    accumulate: int = Field(default=1, gt=0, description="gradient accumulation steps")
    max_steps_per_epoch: int | None = Field(default=None, gt=0, description="cap optimizer steps per epoch (smoke tests)")
    select_metric: str = Field(default="miou", description="validation metric for best.pt and early stopping")
    select_mode: Literal["max", "min"] = "max"
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    sync_batchnorm: bool = False
    log_every: int = Field(default=10, gt=0, description="steps between plain progress lines")
    val_every: int = Field(default=1, gt=0, description="validate every N epochs (and after the last)")
    time_budget_minutes: float | None = Field(
        default=None, gt=0, description="after epoch 1, lower train.epochs to what fits this budget and "
                                        "stretch the schedule over it; null trains train.epochs")

    @model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, raw: Any) -> Any:
        """`train.amp` (the old key) becomes `train.precision`; old words are read with a note.
        The words themselves are the runtime resolver's, so config and command line agree."""
        if not isinstance(raw, dict):
            return raw
        from pixelwise.runtime import deprecation_note, normalize_channels_last, normalize_precision

        raw = dict(raw)
        if "amp" in raw:
            if "precision" in raw:
                raise ValueError("give train.precision only (train.amp is its old name)")
            value = raw.pop("amp")
            word = normalize_precision(value, "train.amp", note=False)
            deprecation_note(f"train.amp={'off' if value is False else value}", f"train.precision={word}")
            raw["precision"] = word
        try:
            if "precision" in raw:
                raw["precision"] = normalize_precision(raw["precision"], "train.precision")
            if "channels_last" in raw:
                raw["channels_last"] = normalize_channels_last(raw["channels_last"], "train.channels_last")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return raw


class Config(_Section):
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    plan: dict[str, Any] | None = Field(
        default=None, description="the planner's record (budget, a reason per key, measured speeds); its values "
                                  "are already in the sections above, and a run with a plan is never re-planned")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "config"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key"
    if kind == "missing":
        return f"{key}: required key is missing"
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def validate_config(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a plain dict into a `Config`; every problem reported at once, by key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (data, model, optim, schedule, train)")
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides; the value is read as YAML (`3`, `0.01`, `null`, `[1,2]`)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.epochs=3")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from None
        parts = key.split(".")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def read_config(path: str | Path) -> dict[str, Any]:
    """A YAML recipe as a plain dict (not yet validated: the planner fills it in first)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe (or start empty), apply overrides, validate."""
    raw: dict[str, Any] = read_config(path) if path is not None else {}
    raw = apply_overrides(raw, list(overrides or []))
    return validate_config(raw, str(path) if path is not None else "overrides")


def save_config(config: Config, path: str | Path) -> Path:
    """Write the resolved recipe as YAML (the run folder's config.yaml)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path
