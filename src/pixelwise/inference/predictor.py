"""`Predictor`: a trained model plus everything needed to go from an image to a label map.

It owns preprocessing (channel handling, scaling, the checkpoint's mean/std), the model (a
PyTorch module or an exported ONNX file), test-time augmentation, tiling for large images,
and the task's activation and decoding. Images of any size and aspect go in; models pad
internally to their output stride and crop back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from pixelwise.errors import CheckpointError, ConfigError, DataError
from pixelwise.inference.tiling import Blend, predict_tiled
from pixelwise.inference.tta import View, parse_tta, with_tta
from pixelwise.runtime import Runtime, resolve_runtime
from pixelwise.tasks import Task
from pixelwise.data.classes import default_colors
from pixelwise.data.masks import class_pixel_counts

# Above this many pixels an image goes through tiling instead of one forward pass, and a
# batch of images is cut to stay under it. A full-width U-Net (base 64) measured on CPU needs
# ~1.2 KB of activations per pixel in bf16 and ~2.4 KB in fp32: 1 M pixels is ~1.2-2.5 GB.
DEFAULT_MAX_PIXELS = 1024 * 1024
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, RGB -> gray


@dataclass
class Prediction:
    """One image's result.

    labels: uint8 (H, W) class ids; multilabel: uint8 (C, H, W) 0/1 masks.
    probabilities: float32 (K, H, W) (softmax for multiclass, sigmoid per channel for binary
        (K=1, foreground) and multilabel), only when asked for.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None


@dataclass
class Preprocessing:
    """Raw image (H, W, C) uint8/uint16 -> normalised float (C_in, H, W)."""

    mean: Sequence[float]
    std: Sequence[float]
    in_channels: int
    normalize: bool = True  # False when an ONNX graph normalises itself (input stays raw)

    def channels(self, image: np.ndarray, name: str | None = None) -> np.ndarray:
        """Match the model's input channels: gray -> repeated, alpha dropped, RGB -> gray (luma)."""
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3:
            raise DataError(name, f"expected an image of shape (H, W) or (H, W, C), got {image.shape}")
        c, want = image.shape[2], self.in_channels
        if c == want:
            return image
        if c in (2, 4) and c - 1 == want:        # gray+alpha, RGBA: drop alpha
            return image[..., :want]
        if c in (1, 2) and want == 3:            # gray (+alpha) into an RGB model
            return np.repeat(image[..., :1], 3, axis=2)
        if c in (3, 4) and want == 1:            # colour into a gray model
            gray = image[..., :3].astype(np.float32) @ _LUMA
            return np.rint(gray).astype(image.dtype)[..., None]
        raise DataError(name, f"image has {c} channels but the model expects {want}")

    def __call__(self, tile: np.ndarray) -> Tensor:
        tile = self.channels(tile)
        if not tile.flags.writeable:  # e.g. np.asarray(PIL image); torch warns on read-only memory
            tile = tile.copy()
        x = torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1)  # (C, h, w)
        if not self.normalize:  # the ONNX graph scales and normalises uint8 itself
            return x if tile.dtype == np.uint8 else torch.from_numpy(_to_uint8(tile)).permute(2, 0, 1)
        scale = 255.0 if tile.dtype == np.uint8 else 65535.0 if tile.dtype == np.uint16 else 1.0
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return (x.float() / scale - mean) / std


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8)


def torch_model_fn(model: nn.Module, runtime: Runtime) -> Callable[[Tensor], Tensor]:
    """Normalised batch (N, C, H, W) on CPU -> float32 logits on CPU, no grad, run as `runtime` says."""
    model = runtime.prepare(model).eval()

    def run(x: Tensor) -> Tensor:
        x = runtime.to_device(x)
        with torch.inference_mode(), runtime.autocast():
            return model(x).float().cpu()

    return run


@dataclass
class Predictor:
    """Image(s) -> `Prediction`. Build with `from_checkpoint`, `from_onnx` or `from_model`."""

    model_fn: Callable[[Tensor], Tensor]       # preprocessed batch -> logits (or labels if decodes)
    task: Task
    preprocess: Preprocessing
    class_names: list[str]
    colors: list[tuple[int, int, int]]
    tta: list[View] = field(default_factory=lambda: [View()])
    tile: int = 512
    overlap: int = 128
    blend: Blend = "gaussian"
    batch_size: int = 4                        # whole images per forward pass
    tile_batch_size: int = 1                   # tiles per forward pass (bounds activation memory)
    max_pixels: int = DEFAULT_MAX_PIXELS
    decodes: bool = False                      # the model itself returns labels (ONNX with decoding)
    source: str = ""
    backend: str = ""                          # what runs the model, e.g. "torch bf16", "onnxruntime fp32"

    # ------------------------------------------------------------ builders
    @classmethod
    def from_model(cls, model: nn.Module, task: Task, *, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None, in_channels: int = 3,
                   class_names: Sequence[str] | None = None, colors: Sequence[Sequence[int]] | None = None,
                   device: str = "auto", precision: str = "auto", channels_last: str = "auto",
                   tta: Any = None, **options: Any) -> "Predictor":
        """Wrap an in-memory model returning logits (N, task.out_channels, H, W).
        `device`, `precision`, `channels_last`: the words of `pixelwise.runtime`."""
        runtime = resolve_runtime(device, precision, channels_last)
        dev = runtime.device
        names = list(class_names) if class_names else _default_names(task)
        # One 512x512 tile of a full-width U-Net holds ~300 MB (bf16) to ~600 MB (fp32) of
        # activations on CPU, where batching tiles gains little speed; GPUs gain from batches.
        if options.get("tile_batch_size") is None:
            options["tile_batch_size"] = 4 if dev.type == "cuda" else 1
        return cls(
            model_fn=torch_model_fn(model, runtime),
            backend=f"torch {runtime.precision}",
            task=task,
            preprocess=Preprocessing(list(mean or [0.0] * in_channels), list(std or [1.0] * in_channels), in_channels),
            class_names=names,
            colors=[tuple(int(v) for v in c) for c in (colors or default_colors(len(names)))],
            tta=parse_tta(tta),
            source="model",
            **options,
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", precision: str = "auto",
                        channels_last: str = "auto", tta: Any = None, **options: Any) -> "Predictor":
        """Load a pixelwise checkpoint (.pt) and rebuild its model, task, classes and preprocessing."""
        from pixelwise.checkpoint import load_model

        from pixelwise.inference.calibration import with_calibration

        model, meta = load_model(path)
        model = with_calibration(model, meta.temperature)  # logits / T when `pixelwise calibrate` ran
        predictor = cls.from_model(
            model, meta.task, mean=meta.mean, std=meta.std, in_channels=meta.in_channels,
            class_names=meta.class_names, colors=meta.class_colors,
            device=device, precision=precision, channels_last=channels_last, tta=tta, **options,
        )
        predictor.source = str(path)
        return predictor

    @classmethod
    def from_onnx(cls, path: str | Path, tta: Any = None, providers: Sequence[str] | None = None,
                  **options: Any) -> "Predictor":
        """Run an ONNX file written by `pixelwise export` (its metadata describes the rest)."""
        from pixelwise.inference.onnx_backend import OnnxModel

        onnx_model = OnnxModel(path, providers=providers)
        meta = onnx_model.metadata
        task = Task.from_dict(meta["task"])
        names = meta.get("class_names") or _default_names(task)
        views = parse_tta(tta)
        if onnx_model.decodes and views != [View()]:
            raise ConfigError(f"{path}: the graph ends in decoding (labels), so TTA cannot average probabilities; "
                              "export without --with-decoding to use TTA")
        if options.get("tile_batch_size") is None:
            options.pop("tile_batch_size", None)
        return cls(
            model_fn=onnx_model,
            task=task,
            preprocess=Preprocessing(meta["mean"], meta["std"], int(meta["in_channels"]),
                                     normalize=not onnx_model.preprocesses),
            class_names=list(names),
            colors=[tuple(int(v) for v in c) for c in (meta.get("colors") or default_colors(len(names)))],
            tta=views,
            decodes=onnx_model.decodes,
            source=str(path),
            backend="onnxruntime fp32",
            **options,
        )

    @classmethod
    def load(cls, path: str | Path, backend: str = "torch", **options: Any) -> "Predictor":
        """`from_onnx` for .onnx files, `from_checkpoint` otherwise.

        backend (checkpoints only): torch, onnxruntime (the checkpoint's cached export), or
        auto (the faster of the two measured on this machine; see `pixelwise.inference.backend`).
        """
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"{path}: no such file")
        if path.suffix.lower() == ".onnx":
            for key in ("device", "precision", "channels_last"):  # onnxruntime decides these itself
                options.pop(key, None)
            return cls.from_onnx(path, **options)
        if backend != "torch":
            from pixelwise.inference.backend import select

            choice, onnx_path = select(path, backend, options.get("device", "auto"), options.get("precision", "auto"),
                                       options.get("channels_last", "auto"))
            if onnx_path is not None:
                for key in ("device", "precision", "channels_last"):
                    options.pop(key, None)
                predictor = cls.from_onnx(onnx_path, providers=["CPUExecutionProvider"], **options)
                predictor.source, predictor.backend = str(path), f"onnxruntime {choice.precision}"
                return predictor
        return cls.from_checkpoint(path, **options)

    # ------------------------------------------------------------ predicting
    @property
    def num_classes(self) -> int:
        return self.task.num_classes

    def logits_fn(self) -> Callable[[Tensor], Tensor]:
        """Preprocessed batch -> logits, with TTA folded in (logits of averaged probabilities)."""
        return with_tta(self.model_fn, self.task, self.tta)

    def predict(self, image: np.ndarray | Sequence[np.ndarray], return_probabilities: bool = False,
                tiled: bool | None = None) -> Prediction | list[Prediction]:
        """Predict one image (H, W[, C]) -> Prediction, or a list of images -> list of Predictions.

        tiled: None = automatic (tiles when H*W exceeds `max_pixels`), True/False to force.
        Same-size images in a list run as one batch (chunks of `batch_size`, fewer when the
        chunk would exceed `max_pixels`).
        """
        if isinstance(image, np.ndarray) and image.ndim in (2, 3) and image.dtype != object:
            return self._predict_batch([image], return_probabilities, tiled)[0]
        images = list(image)
        results: list[Prediction | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(tuple(np.asarray(img).shape[:2]), []).append(i)
        for (height, width), indices in groups.items():
            per_batch = max(1, min(self.batch_size, self.max_pixels // max(height * width, 1)))
            for start in range(0, len(indices), per_batch):
                chunk = indices[start:start + per_batch]
                for i, pred in zip(chunk, self._predict_batch([images[i] for i in chunk], return_probabilities, tiled)):
                    results[i] = pred
        return results  # type: ignore[return-value]

    def _predict_batch(self, images: list[np.ndarray], return_probabilities: bool,
                       tiled: bool | None) -> list[Prediction]:
        height, width = images[0].shape[:2]
        if height == 0 or width == 0:
            raise DataError(None, f"empty image of size {height}x{width}")
        if return_probabilities and self.decodes:
            raise ConfigError(f"{self.source}: this ONNX graph outputs labels (exported with decoding); "
                              "probabilities are not available")
        use_tiles = tiled if tiled is not None else height * width > self.max_pixels
        if use_tiles and not self.decodes:
            return [self._predict_tiled(img, return_probabilities) for img in images]
        batch = torch.stack([self.preprocess(img) for img in images])
        out = self.logits_fn()(batch)
        if self.decodes:
            return [Prediction(labels=out[i].numpy().astype(np.uint8)) for i in range(len(images))]
        if out.shape[1] != self.task.out_channels:
            self.task.check_logits(out)  # raises a TaskError naming the channel mismatch
        probs = self.task.probabilities(out) if return_probabilities else None
        labels = self.task.decode(out).to(torch.uint8).numpy()
        return [
            Prediction(labels=labels[i], probabilities=None if probs is None else probs[i].numpy())
            for i in range(len(images))
        ]

    def _predict_tiled(self, image: np.ndarray, return_probabilities: bool) -> Prediction:
        kwargs = dict(tile=self.tile, overlap=min(self.overlap, self.tile - 1), blend=self.blend,
                      batch_size=self.tile_batch_size, task=self.task, preprocess=self.preprocess)
        fn = self.logits_fn()
        if not return_probabilities:
            return Prediction(labels=predict_tiled(fn, image, output="labels", **kwargs))
        probs = predict_tiled(fn, image, output="probabilities", **kwargs)  # full (K, H, W) map
        labels = self.task.decode_probabilities(torch.from_numpy(probs)[None])[0].to(torch.uint8).numpy()
        return Prediction(labels=labels, probabilities=probs)

    def predict_file(self, path: str | Path, return_probabilities: bool = False) -> tuple[np.ndarray, Prediction]:
        """Read an image file (DataError if unreadable) and predict it: (image, prediction)."""
        from pixelwise.data.io import read_image

        image = read_image(path)
        return image, self.predict(image, return_probabilities=return_probabilities)  # type: ignore[return-value]

    def class_counts(self, labels: np.ndarray) -> np.ndarray:
        """Pixels per class, int64 (num_classes,) (multilabel: positives per class).

        Counted in row blocks: a whole 8192x8192 map widened to int64 for bincount would be 512 MB.
        """
        rows = max(1, (1 << 22) // max(labels.shape[-1], 1))
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for top in range(0, labels.shape[-2], rows):
            if labels.ndim == 3:
                counts += (labels[:, top:top + rows] == 1).sum(axis=(1, 2), dtype=np.int64)
            else:
                counts += class_pixel_counts(labels[top:top + rows], self.num_classes)
        return counts

    def class_shares(self, labels: np.ndarray) -> np.ndarray:
        """Fraction of pixels per class, float64 (num_classes,) (multilabel: per-class coverage)."""
        pixels = labels.shape[-2] * labels.shape[-1]
        return self.class_counts(labels) / max(pixels, 1)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "task": self.task.to_dict(), "classes": self.class_names,
                "tta": [v.__dict__ for v in self.tta], "tile": self.tile, "max_pixels": self.max_pixels,
                "backend": self.backend}


def _default_names(task: Task) -> list[str]:
    if task.kind == "binary":
        return ["background", "foreground"]
    return [f"class_{i}" for i in range(task.num_classes)]


def iter_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files, folders (recursively) and glob patterns into a sorted list of image paths."""
    import glob

    from pixelwise.data.io import is_image_name

    found: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            # A looping or dangling symlink is not is_file(); keep it so reading it reports the
            # problem by name instead of the file silently vanishing from the batch.
            found += sorted(
                p for p in path.rglob("*") if (p.is_file() or p.is_symlink()) and is_image_name(p.name)
            )
        elif path.is_file():
            found.append(path)
        elif any(ch in text for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            files = [p for p in matches if p.is_file()]
            if not files:
                raise DataError(text, "the pattern matches no files")
            found += files
        else:
            raise DataError(text, "no such file or folder")
    return list(dict.fromkeys(found))
