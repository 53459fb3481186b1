"""Data: layouts, mask decoding, synthetic sets, transforms, loaders, checks and statistics."""

from pixelwise.data.classes import ClassTable, MaskDecoder, infer_classes, load_class_table
from pixelwise.data.dataset import SegmentationDataset, dataset_classes, open_dataset, parse_spec
from pixelwise.data.io import read_image
from pixelwise.data.masks import read_mask
from pixelwise.data.layouts import Layout, Sample, scan_layout
from pixelwise.data.loader import build_loader
from pixelwise.data.normalization import dataset_mean_std
from pixelwise.data.transforms import SegmentationTransform, build_transforms

__all__ = [
    "ClassTable", "MaskDecoder", "infer_classes", "load_class_table", "SegmentationDataset", "dataset_classes",
    "open_dataset", "parse_spec", "read_image", "read_mask", "Layout", "Sample", "scan_layout", "build_loader",
    "dataset_mean_std", "SegmentationTransform", "build_transforms",
]
