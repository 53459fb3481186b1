"""The HTML report on fake run folders written in the documented layout (no training needed)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.errors import DataError
from pixelwise.report import read_run, write_report
from pixelwise.report.gallery import compose_strip, select
from pixelwise.report.plots import normalized_confusion

CLASSES = ["background", "road", "car", "boat"]
COLORS = [[0, 0, 0], [128, 64, 128], [64, 0, 128], [0, 128, 192]]
# "boat" has no target and no predicted pixels: NaN (null) everywhere, by the absent-class rule.
PER_CLASS = {
    "background": {"iou": 0.8123, "dice": 0.8965, "accuracy": 0.9001, "precision": 0.8888, "support": 5000},
    "road": {"iou": 0.6543, "dice": 0.7910, "accuracy": 0.7002, "precision": 0.8100, "support": 3000},
    "car": {"iou": 0.2501, "dice": 0.4001, "accuracy": 0.3003, "precision": 0.5000, "support": 400},
    "boat": {"iou": None, "dice": None, "accuracy": None, "precision": None, "support": 0},
}
CONFUSION = [[4500, 400, 100, 0], [800, 2100, 100, 0], [200, 80, 120, 0], [0, 0, 0, 0]]
PER_IMAGE = [("img_a", 0.91), ("img_b", 0.35), ("img_c", 0.72), ("img_d", 0.12), ("img_e", 0.55)]


def make_run(root: Path, *, epochs: int = 3, with_eval: bool = True, with_gallery: bool = True) -> Path:
    """A run folder as `pixelwise train` + `evaluate` write it (docs/architecture.md)."""
    run = root / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("data:\n  root: /data/toy\nmodel:\n  name: unet\nepochs: 3\n")
    (run / "run.json").write_text(json.dumps({
        "wall_time_s": 3725.0, "hardware": {"device": "cpu", "threads": 2},
        "versions": {"torch": "2.x"}, "dataset": "toy", "model": "unet",
        "classes": {"names": CLASSES, "colors": COLORS, "ignore_index": 255},
    }))
    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "lr": 0.01 / e, "val_miou": 0.2 * e}
            for e in range(1, epochs + 1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if with_eval:
        ev = run / "eval"
        ev.mkdir()
        (ev / "metrics.json").write_text(json.dumps({
            "pixel_accuracy": 0.8273, "mean_accuracy": 0.6335, "miou": 0.5722, "fwiou": 0.7011,
            "mean_dice": 0.6959, "per_class": PER_CLASS, "per_image_miou": 0.5300,
            "miou_ci": [0.4412, 0.6633], "confusion_matrix": CONFUSION, "num_images": len(PER_IMAGE),
        }))
        (ev / "per_image.csv").write_text(
            "name,miou,pixel_accuracy\n" + "".join(f"{n},{m},{m + 0.05}\n" for n, m in PER_IMAGE))
        if with_gallery:
            gal = ev / "gallery"
            gal.mkdir()
            rng = np.random.default_rng(0)
            for name, _ in PER_IMAGE:
                Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(gal / f"{name}_image.png")
                target = rng.integers(0, 3, (12, 16), dtype=np.uint8)
                target[0, :] = 255
                Image.fromarray(target).save(gal / f"{name}_target.png")
                Image.fromarray(rng.integers(0, 3, (12, 16), dtype=np.uint8)).save(gal / f"{name}_pred.png")
    return run


def embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def table(page: str, table_id: str) -> str:
    match = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert match, f"table {table_id} missing"
    return match.group(1)


def test_full_report_has_all_sections_and_numbers(tmp_path):
    run = make_run(tmp_path)
    path = write_report(run)
    assert path == run / "report.html"
    page = path.read_text()
    # Self-contained: no external resources, every image is embedded and decodes as a PNG.
    assert not re.search(r'(src|href)="(?!data:)', page)
    images = embedded_images(page)
    # curves + bars + confusion + histogram + 4 best/1 worst gallery strips (5 images, k=4)
    assert len(images) == 4 + 5
    for blob in images:
        assert blob.startswith(b"\x89PNG")
    per_class = table(page, "per-class-table")
    for name, scores in PER_CLASS.items():
        assert name in per_class
        if scores["iou"] is not None:
            assert f"{scores['iou']:.4f}" in per_class and f"{scores['dice']:.4f}" in per_class
    assert re.search(r"boat</td>(<td class=\"num\">n/a</td>){4}", per_class)
    assert "rgb(128,64,128)" in per_class  # class colour swatch for "road"
    miou = table(page, "miou-table")
    for value in ("0.5722", "0.5300", "0.4412", "0.6633", "0.8273"):
        assert value in miou
    summary = table(page, "summary-table")
    assert "1h 02m 05s" in summary and "unet" in summary and "0.6000" in summary  # best val mIoU, epoch 3
    assert 'id="missing"' not in page
    for png in ("training_curves", "per_class", "confusion_matrix", "per_image_miou"):
        assert (run / "plots" / f"{png}.png").stat().st_size > 1000


def test_gallery_picks_best_and_worst_in_order(tmp_path):
    run = make_run(tmp_path)
    page = write_report(run, gallery_size=2).read_text()
    order = re.findall(r"<figcaption>(img_\w+): mIoU", page)
    assert order == ["img_a", "img_c", "img_d", "img_b"]  # best first, then worst first


def test_partial_run_without_eval_says_what_is_missing(tmp_path):
    run = make_run(tmp_path, epochs=1, with_eval=False)
    page = write_report(run).read_text()
    assert 'id="missing"' in page
    assert "eval/metrics.json not found" in page
    assert "No per-class scores yet" in page and "No gallery images" in page
    assert len(embedded_images(page)) == 1  # only the (one-epoch) training curves
    assert (run / "plots" / "training_curves.png").is_file()


def test_empty_run_folder_still_renders(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    page = write_report(run).read_text()
    assert "config.yaml not found" in page and "metrics.csv found" in page
    assert embedded_images(page) == []


def test_truncated_history_line_and_missing_gallery_are_noted(tmp_path):
    run = make_run(tmp_path, with_gallery=False)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"epoch": 4, "train_lo')  # training was killed mid-write
    data = read_run(run)
    assert [row["epoch"] for row in data.history] == [1.0, 2.0, 3.0]
    page = write_report(run).read_text()
    assert "line 4 is incomplete" in page and "no images in eval/gallery/" in page


def test_history_from_csv_when_jsonl_absent(tmp_path):
    run = make_run(tmp_path)
    (run / "metrics.jsonl").unlink()
    (run / "metrics.csv").write_text("epoch,train_loss,val_loss,lr,val_miou\n1,0.9,1.0,0.01,0.3\n2,0.5,nan,0.005,\n")
    data = read_run(run)
    assert data.history[0] == {"epoch": 1.0, "train_loss": 0.9, "val_loss": 1.0, "lr": 0.01, "val_miou": 0.3}
    assert np.isnan(data.history[1]["val_loss"]) and np.isnan(data.history[1]["val_miou"])
    write_report(run)


def test_colors_fall_back_to_checkpoint_then_palette(tmp_path):
    torch = pytest.importorskip("torch")
    from pixelwise.checkpoint import save_checkpoint

    run = make_run(tmp_path)
    info = json.loads((run / "run.json").read_text())
    del info["classes"]
    (run / "run.json").write_text(json.dumps(info))
    assert read_run(run).class_colors[1] != (128, 64, 128)  # default palette, names from eval
    assert read_run(run).class_names == CLASSES
    save_checkpoint(run / "checkpoints" / "best.pt", {
        "model": {"name": "x", "kwargs": {}}, "task": {"kind": "multiclass", "num_classes": 4},
        "classes": {"names": CLASSES, "colors": [[9, 8, 7]] * 4, "ignore_index": 255},
        "state_dict": {"w": torch.zeros(1)},
    })
    assert read_run(run).class_colors == [(9, 8, 7)] * 4


def test_not_a_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such run folder"):
        write_report(tmp_path / "nope")


def test_normalized_confusion_rows_sum_to_one_and_empty_row_is_nan():
    norm = normalized_confusion(np.array(CONFUSION))
    np.testing.assert_allclose(norm[:3].sum(axis=1), 1.0)
    assert norm[0, 1] == pytest.approx(400 / 5000)
    assert np.isnan(norm[3]).all()


def test_strip_panels_and_error_share():
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    target = np.array([[0, 1, 255], [2, 2, 1]], dtype=np.uint8)
    pred = np.array([[0, 2, 1], [2, 0, 1]], dtype=np.uint8)
    strip, share = compose_strip(image, target, pred, [(0, 0, 0), (255, 255, 255), (0, 255, 0)], panel_width=3)
    assert share == pytest.approx(2 / 5)  # 2 wrong of 5 labelled pixels; the ignored one not counted
    assert strip.shape == (2, 4 * 3 + 3 * 4, 3)
    np.testing.assert_array_equal(strip[0, 3 + 4 + 1], [255, 255, 255])  # target panel, class 1 colour
    np.testing.assert_array_equal(strip[0, 2 * (3 + 4) + 1], [0, 255, 0])  # prediction panel, class 2
    errors = strip[:, 3 * (3 + 4):]
    red = (errors == [255, 0, 0]).all(axis=2)
    np.testing.assert_array_equal(red, [[False, True, False], [False, True, False]])


def test_small_images_are_enlarged_by_a_whole_factor():
    image = np.zeros((10, 20, 3), dtype=np.uint8)
    labels = np.zeros((10, 20), dtype=np.uint8)
    strip, _ = compose_strip(image, labels, labels, [(0, 0, 0)], panel_width=256)
    assert strip.shape == (120, 4 * 240 + 3 * 4, 3)  # 12x nearest-neighbour


def test_select_skips_nan_and_missing_files():
    rows = [{"name": "a", "miou": 0.9}, {"name": "b", "miou": float("nan")}, {"name": "c", "miou": 0.1},
            {"name": "d", "miou": 0.5}]
    chosen = select(rows, ["a", "b", "c"], k=1)
    assert [(g, n) for g, n, _ in chosen] == [("best", "a"), ("worst", "c")]


def test_cli_report_command(tmp_path):
    run = make_run(tmp_path, with_eval=False)
    result = subprocess.run([sys.executable, "-m", "pixelwise", "report", str(run)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == run / "report.html"
    missing = subprocess.run([sys.executable, "-m", "pixelwise", "report", str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "no such run folder" in missing.stderr


def test_gallery_recomputed_from_checkpoint_when_evaluate_wrote_none(tmp_path):
    """No eval/gallery/: the report predicts the ranked images again with checkpoints/best.pt."""
    pytest.importorskip("torch")
    from pixelwise.models import create_model
    from pixelwise.tasks import Task
    from pixelwise.checkpoint import save_checkpoint, unwrapped_state_dict

    run = make_run(tmp_path, with_gallery=False)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    metrics.update({"data": "synthetic:shapes?n=8&size=32", "split": "val", "task": "multiclass"})
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    scores = {"shapes_val_00001": 0.9, "shapes_val_00004": 0.1, "shapes_val_00002": 0.5}
    (run / "eval" / "per_image.csv").write_text(
        "name,miou,pixel_accuracy\n" + "".join(f"{n},{m},{m}\n" for n, m in scores.items()))
    kwargs = {"num_classes": 5, "base_channels": 4, "depth": 1}
    save_checkpoint(run / "checkpoints" / "best.pt", {
        "model": {"name": "unet", "kwargs": kwargs}, "task": Task("multiclass", 5).to_dict(),
        "classes": {"names": ["background", "circle", "square", "triangle", "star"],
                    "colors": [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], "ignore_index": 255},
        "preprocess": {"mean": [0.5] * 3, "std": [0.25] * 3, "in_channels": 3, "crop_size": None},
        "state_dict": unwrapped_state_dict(create_model("unet", **kwargs)),
    })
    page = write_report(run, gallery_size=1).read_text()
    assert re.findall(r"<figcaption>(shapes_val_\d+): mIoU", page) == ["shapes_val_00001", "shapes_val_00004"]
    target = np.asarray(Image.open(run / "eval" / "gallery" / "shapes_val_00001_target.png"))
    assert target.shape == (32, 32) and target.max() <= 4


def summary_rows(summary: str) -> dict[str, str]:
    """{label: value cell HTML} of the run-summary table."""
    rows = re.findall(r'<tr><td>(.*?)</td><td(?: class="num")?>(.*?)</td></tr>', summary.split("<tbody>", 1)[1])
    return dict(rows)


def test_run_summary_shows_readable_rows_not_json(tmp_path):
    # run.json as the trainer writes it: nested dicts for data, model, hardware and precision.
    run = make_run(tmp_path)
    (run / "run.json").write_text(json.dumps({
        "wall_seconds": 65.0,
        "hardware": {"device": "cpu", "cpu": "AMD EPYC", "cpu_count": 2, "cuda": None},
        "precision": {"autocast": "torch.bfloat16", "channels_last": True},
        "dataset": {"root": "synthetic:shapes", "train_images": 256, "classes": CLASSES,
                    "task": {"kind": "multiclass", "num_classes": 4, "ignore_index": 255, "threshold": 0.5}},
        "model": {"name": "unet", "kwargs": {"base_channels": 16, "depth": 4}, "parameters": 1234567},
        "best_metric": {"val_miou": 0.61234567},
    }))
    summary = table(write_report(run).read_text(), "summary-table")
    rows = summary_rows(summary)
    assert '{"' not in summary and "&quot;" not in summary  # no raw JSON anywhere in the summary

    def lines(label: str) -> list[str]:
        return [re.sub(r"<[^>]+>", "", line) for line in rows[label].split("<br>")]

    assert lines("Data") == ["root: synthetic:shapes", "train images: 256",
                             "classes: background, road, car, boat", "task › kind: multiclass",
                             "task › num classes: 4", "task › ignore index: 255", "task › threshold: 0.5"]
    assert lines("Model") == ["name: unet", "kwargs › base channels: 16", "kwargs › depth: 4",
                              "parameters: 1234567"]
    assert lines("Hardware") == ["device: cpu", "cpu: AMD EPYC", "cpu count: 2", "cuda: n/a"]
    assert lines("Precision") == ["autocast: torch.bfloat16", "channels last: yes"]
    assert lines("Best metric") == ["val miou: 0.612346"]
    assert rows["Wall time"] == "1m 05s"
    assert '<span class="key">root</span>: synthetic:shapes' in rows["Data"]


def test_run_summary_escapes_values_and_shortens_long_lists(tmp_path):
    run = make_run(tmp_path)
    names = [f"c{i}" for i in range(30)]
    (run / "run.json").write_text(json.dumps({"dataset": {"root": "<script>x</script>", "classes": names}}))
    data_row = summary_rows(table(write_report(run).read_text(), "summary-table"))["Data"]
    assert "<script>" not in data_row and "&lt;script&gt;" in data_row
    assert "c0, c1," in data_row and "c11 … (18 more)" in data_row and "c12" not in data_row
