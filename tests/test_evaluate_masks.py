"""`pixelwise evaluate-masks`: real PNG files, a real subprocess, and the error cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.cli import main
from pixelwise.commands.evaluate_masks import evaluate_mask_folders, read_label_png
from pixelwise.errors import ConfigError, DataError

# The hand example of tests/test_metrics.py (matrix [[3,1,0],[1,3,0],[0,1,5]]):
# IoU 0.6, 0.5, 5/6; pixel accuracy 11/14.
TARGET = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 255], [2, 2, 2, 255]], dtype=np.uint8)
PRED = np.array([[0, 0, 1, 0], [0, 1, 1, 1], [2, 2, 1, 0], [2, 2, 2, 2]], dtype=np.uint8)
PALETTE = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12)


def _write(path: Path, labels: np.ndarray, palette: bool = False) -> None:
    if palette:  # the indices themselves, with a colour palette attached
        img = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.tobytes())
        img.putpalette(PALETTE)
    else:
        img = Image.fromarray(labels)
    img.save(path)
    assert Image.open(path).mode == ("P" if palette else "L")


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    pred, target = tmp_path / "pred", tmp_path / "target"
    pred.mkdir()
    target.mkdir()
    # Image "a": the hand example; "b": the same, predicted as a palette PNG; "c": all correct.
    _write(target / "a.png", TARGET)
    _write(pred / "a.png", PRED)
    _write(target / "b.png", TARGET)
    _write(pred / "b.png", PRED, palette=True)
    _write(target / "c.png", np.zeros((3, 5), np.uint8))
    _write(pred / "c.png", np.zeros((3, 5), np.uint8))
    return pred, target


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixelwise", "evaluate-masks", *args],
                          capture_output=True, text=True, timeout=300)


def test_json_through_a_real_subprocess(folders):
    pred, target = folders
    proc = _run("--pred", str(pred), "--target", str(target), "--num-classes", "4",
                "--class-names", "sky,road", "car", "boat", "--json", "--bootstrap", "100")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # Dataset level: a + b give 2x the hand matrix; c adds 15 right pixels of class 0.
    # class 0: tp 6 + 15 = 21, support 8 + 15 = 23, predicted 23 -> IoU 21 / 25
    assert result["confusion_matrix"][0] == [21, 2, 0, 0]
    assert result["per_class"]["sky"]["iou"] == pytest.approx(21 / 25)
    assert result["per_class"]["road"]["iou"] == pytest.approx(0.5)
    assert result["per_class"]["car"]["iou"] == pytest.approx(5 / 6)
    assert result["per_class"]["boat"]["iou"] is None  # absent everywhere: NaN -> null
    assert result["miou"] == pytest.approx((21 / 25 + 0.5 + 5 / 6) / 3)
    assert result["pixel_accuracy"] == pytest.approx((22 + 15) / (28 + 15))
    # Per image: a and b score the hand mIoU, c scores 1.0 (only class 0 present).
    hand = (0.6 + 0.5 + 5 / 6) / 3
    assert result["per_image_miou"] == pytest.approx((2 * hand + 1.0) / 3)
    assert result["num_images"] == 3
    low, high = result["miou_ci"]
    assert low <= result["miou"] <= high
    for key in ("mean_accuracy", "fwiou", "mean_dice", "mean_dice_ci"):
        assert key in result
    assert set(result["per_class"]["sky"]) >= {"iou", "dice", "accuracy", "precision"}


def test_table_through_a_real_subprocess(folders):
    pred, target = folders
    proc = _run("--pred", str(pred), "--target", str(target), "--num-classes", "3", "--bootstrap", "50")
    assert proc.returncode == 0, proc.stderr
    assert "mIoU" in proc.stdout and "95% CI" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if line.startswith("1 "))
    assert "0.5000" in row  # class 1 IoU


def test_missing_prediction_through_a_real_subprocess(folders):
    pred, target = folders
    (pred / "b.png").unlink()
    proc = _run("--pred", str(pred), "--target", str(target), "--num-classes", "3")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "no prediction for 1 target mask(s): b" in proc.stderr
    assert "Traceback" not in proc.stderr


def _cli_error(capsys, pred: Path, target: Path, *extra: str) -> str:
    code = main(["evaluate-masks", "--pred", str(pred), "--target", str(target), "--num-classes", "3", *extra])
    assert code == 2
    return capsys.readouterr().err


def test_unmatched_prediction(folders, capsys):
    pred, target = folders
    _write(pred / "zzz.png", PRED)
    assert "no target mask for 1 prediction(s): zzz" in _cli_error(capsys, pred, target)


def test_size_mismatch_names_both_files(folders, capsys):
    pred, target = folders
    _write(pred / "a.png", np.zeros((4, 6), np.uint8))
    err = _cli_error(capsys, pred, target)
    assert str(pred / "a.png") in err and str(target / "a.png") in err and "6x4" in err


def test_out_of_range_and_unreadable_files(folders, capsys):
    pred, target = folders
    bad = TARGET.copy()
    bad[0, 0] = 7
    _write(target / "a.png", bad)
    err = _cli_error(capsys, pred, target)
    assert str(target / "a.png") in err and "[7]" in err
    (pred / "b.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="b.png: cannot read as an image"):
        read_label_png(pred / "b.png")


def test_colour_masks_missing_folders_and_bad_options(folders, tmp_path):
    pred, target = folders
    Image.fromarray(np.dstack([PRED * 80, PRED, PRED])).save(pred / "a.png")
    with pytest.raises(DataError, match="colour"):
        evaluate_mask_folders(pred, target, 3)
    # A grey mask saved as RGB is read as its one channel.
    Image.fromarray(np.dstack([PRED] * 3)).save(pred / "a.png")
    assert read_label_png(pred / "a.png").tolist() == PRED.tolist()
    with pytest.raises(DataError, match="does not exist"):
        evaluate_mask_folders(tmp_path / "nope", target, 3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .png masks"):
        evaluate_mask_folders(empty, target, 3)
    with pytest.raises(ConfigError, match="2 class names given for 3 classes"):
        evaluate_mask_folders(pred, target, 3, class_names=["a", "b"])


def test_ignore_index_none_counts_every_pixel(folders):
    pred, target = folders
    with pytest.raises(DataError, match="not ignore_index=None"):
        evaluate_mask_folders(pred, target, 3, ignore_index=None)
    result = evaluate_mask_folders(pred, target, 256, ignore_index=None, n_resamples=10)
    assert sum(map(sum, result["confusion_matrix"])) == 2 * 16 + 15


def test_sixteen_bit_pngs(tmp_path):
    pred, target = tmp_path / "p", tmp_path / "t"
    pred.mkdir()
    target.mkdir()
    Image.fromarray(PRED.astype(np.uint16)).save(pred / "x.png")
    Image.fromarray(TARGET.astype(np.uint16)).save(target / "x.png")
    assert read_label_png(target / "x.png").dtype == np.uint16
    result = evaluate_mask_folders(pred, target, 3, n_resamples=10)
    assert result["confusion_matrix"] == [[3, 1, 0], [1, 3, 0], [0, 1, 5]]
