"""Windowed (Big/Geo)TIFF prediction: equal to in-memory tiling, georeferenced, resumable.

Input TIFFs are written with tifffile (the library the reader uses) in the layouts found in
practice: tiled + deflate (the GeoTIFF/COG norm), stripped + deflate, uncompressed, and one
big compressed strip (what naive writers produce), plus damaged files.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from pixelwise.errors import DataError
from pixelwise.inference import Predictor
from pixelwise.inference import raster as raster_module
from pixelwise.inference.raster import open_raster, predict_raster
from pixelwise.tasks import Task
from test_predictor import make_checkpoint

PIXELWISE = [sys.executable, "-m", "pixelwise"]
# A UTM 33N GeoTIFF: 0.5 m pixels, top-left corner at (500000, 4649776).
GEO_TAGS = [
    (33550, "d", 3, (0.5, 0.5, 0.0), True),
    (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4649776.0, 0.0), True),
    (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True),
]


def scene(height: int = 333, width: int = 410, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth blobs plus noise: tiles differ, so a misplaced window changes the labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 127 + 80 * np.sin(yy / 17.0)[..., None] * np.cos(xx[..., None] / 23.0 + np.arange(channels))
    return np.clip(base + rng.normal(0, 20, (height, width, channels)), 0, 255).astype(np.uint8)


def make_predictor(tmp_path: Path, task: Task = Task("multiclass", num_classes=4), **options) -> Predictor:
    make_checkpoint(tmp_path / "m.pt", task)
    options = {"tile": 96, "overlap": 24, **options}
    return Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", precision="fp32", **options)


@pytest.mark.parametrize("layout", ["tiled", "stripped", "uncompressed", "planar"])
def test_windowed_equals_in_memory_tiling(tmp_path, layout):
    image = scene()
    path = tmp_path / "scene.tif"
    if layout == "tiled":
        tifffile.imwrite(path, image, tile=(64, 64), compression="zlib", extratags=GEO_TAGS)
    elif layout == "stripped":
        tifffile.imwrite(path, image, rowsperstrip=16, compression="zlib")
    elif layout == "uncompressed":
        tifffile.imwrite(path, image)
    else:
        tifffile.imwrite(path, np.moveaxis(image, -1, 0), photometric="rgb", planarconfig="separate", tile=(64, 64),
                         compression="zlib")
    predictor = make_predictor(tmp_path)
    expected = predictor.predict(image, tiled=True).labels

    result = predict_raster(predictor, path, tmp_path / "out", progress=False)

    written = tifffile.imread(result.labels_path)
    assert written.dtype == np.uint8 and written.shape == image.shape[:2]
    np.testing.assert_array_equal(written, expected)
    shares = np.bincount(expected.reshape(-1), minlength=4) / expected.size
    np.testing.assert_allclose(result.shares, shares)
    assert result.overview_path.is_file()
    assert not (tmp_path / "out" / "labels" / ".scene.partial").exists()  # scratch cleaned up


def test_georeferencing_and_palette_survive(tmp_path):
    path = tmp_path / "geo.tif"
    tifffile.imwrite(path, scene(), tile=(64, 64), compression="zlib", extratags=GEO_TAGS)
    predictor = make_predictor(tmp_path)

    result = predict_raster(predictor, path, tmp_path / "out", progress=False)

    with tifffile.TiffFile(path) as src, tifffile.TiffFile(result.labels_path) as dst:
        page = dst.pages[0]
        assert page.is_tiled and int(page.compression) == 8  # deflate
        for code, *_ in GEO_TAGS:
            assert page.tags[code].value == src.pages[0].tags[code].value
        assert dst.geotiff_metadata == src.geotiff_metadata
        assert dst.geotiff_metadata["ProjectedCSTypeGeoKey"] == 32633
        # palette: class c is shown in the checkpoint's colour for c (16-bit colormap = 8-bit * 257)
        colormap = page.colormap
        for c, color in enumerate(predictor.colors):
            assert tuple(colormap[:, c] // 257) == tuple(color)


def test_multilabel_writes_one_band_per_class(tmp_path):
    image = scene(130, 150)
    path = tmp_path / "ml.tif"
    tifffile.imwrite(path, image, tile=(64, 64), compression="zlib")
    predictor = make_predictor(tmp_path, Task("multilabel", num_classes=3), tile=64, overlap=16)
    expected = predictor.predict(image, tiled=True).labels  # (K, H, W)

    result = predict_raster(predictor, path, tmp_path / "out", progress=False)

    written = tifffile.imread(result.labels_path)
    np.testing.assert_array_equal(np.moveaxis(written, -1, 0), expected)


def test_big_compressed_strip_is_refused_with_retile_command(tmp_path, monkeypatch):
    path = tmp_path / "one_strip.tif"
    tifffile.imwrite(path, scene(200, 200), rowsperstrip=200, compression="zlib")
    monkeypatch.setattr(raster_module, "MAX_BLOCK_BYTES", 10_000)  # 200*200*3 bytes in one strip
    with pytest.raises(DataError) as info:
        open_raster(path)
    message = str(info.value)
    assert str(path) in message and "compressed strip" in message
    assert "gdal_translate -co TILED=YES" in message


def test_not_a_tiff_and_damaged_tile_name_the_file(tmp_path):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00" + b"\xff" * 40)
    with pytest.raises(DataError) as info:
        open_raster(junk)
    assert str(junk) in str(info.value)

    # A tiled file whose second tile's deflate stream is overwritten with garbage.
    path = tmp_path / "damaged.tif"
    tifffile.imwrite(path, scene(128, 128), tile=(64, 64), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[1], tif.pages[0].databytecounts[1]
    data = bytearray(path.read_bytes())
    data[offset:offset + count] = b"\x00\x01" * (count // 2) + b"\x00" * (count % 2)
    path.write_bytes(bytes(data))
    predictor = make_predictor(tmp_path, tile=64, overlap=16)
    with pytest.raises(DataError) as info:
        predict_raster(predictor, path, tmp_path / "out", progress=False)
    assert str(path) in str(info.value) and "cannot decode" in str(info.value)


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pixelwise.inference import Predictor
    from pixelwise.inference.raster import predict_raster

    checkpoint, image, out, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", precision="fp32", tile=64, overlap=16)
    model_fn, calls = predictor.model_fn, [0]

    def counting(batch):
        calls[0] += 1
        if kill_after and calls[0] > kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # a real kill, between two forward passes
        return model_fn(batch)

    predictor.model_fn = counting
    result = predict_raster(predictor, image, out, progress=False)
    print("calls", calls[0], "resumed", result.resumed_from_tile_row)
""")


def test_killed_run_resumes_from_last_finished_tile_row(tmp_path):
    image = scene(300, 200)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, image, tile=(64, 64), compression="zlib")
    make_checkpoint(tmp_path / "m.pt", Task("multiclass", num_classes=4))
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = lambda out, kill: subprocess.run(  # noqa: E731
        [sys.executable, str(script), str(tmp_path / "m.pt"), str(path), str(out), str(kill)],
        capture_output=True, text=True, timeout=300, env=env)

    clean = run(tmp_path / "clean", 0)
    assert clean.returncode == 0, clean.stderr
    total_calls = int(clean.stdout.split()[1])  # 4 columns x 6 rows of 64-px tiles at stride 48
    assert total_calls == 4 * 6

    killed = run(tmp_path / "resumed", 13)  # dies inside the 4th row of tiles
    assert killed.returncode == -9
    state = tmp_path / "resumed" / "labels" / ".big.partial" / "state.json"
    assert state.is_file()
    assert not (tmp_path / "resumed" / "labels" / "big.tif").exists()

    resumed = run(tmp_path / "resumed", 0)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at tile row 4 of 6" in resumed.stderr
    calls, resumed_row = int(resumed.stdout.split()[1]), int(resumed.stdout.split()[3])
    assert resumed_row == 3
    # Rows 0-2 are not recomputed; row 2 is rerun only because its tiles reach into row 3's rows.
    assert calls == 4 * 4
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "resumed" / "labels" / "big.tif"),
                                  tifffile.imread(tmp_path / "clean" / "labels" / "big.tif"))


def test_changed_settings_start_over(tmp_path, capsys):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, scene(150, 150), tile=(64, 64), compression="zlib")
    predictor = make_predictor(tmp_path, tile=64, overlap=16)
    scratch = tmp_path / "out" / "labels" / ".s.partial"
    scratch.mkdir(parents=True)
    (scratch / "state.json").write_text('{"fingerprint": {"tile": 999}, "tile_rows_done": 2, "counts": [0,0,0,0]}')
    result = predict_raster(predictor, path, tmp_path / "out", progress=False)
    assert result.resumed_from_tile_row == 0
    assert "starting over" in capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(result.labels_path),
                                  predictor.predict(tifffile.imread(path), tiled=True).labels)


def test_cli_windowed_predict_writes_tiff_overview_and_csv(tmp_path):
    image = scene(180, 260)
    path = tmp_path / "field.tif"
    tifffile.imwrite(path, image, tile=(64, 64), compression="zlib", extratags=GEO_TAGS)
    make_checkpoint(tmp_path / "m.pt", Task("multiclass", num_classes=4))
    out = tmp_path / "out"
    proc = subprocess.run([*PIXELWISE, "predict", str(tmp_path / "m.pt"), str(path), "--out", str(out), "--windowed",
                           "--device", "cpu", "--precision", "fp32", "--tile", "96", "--overlap", "24",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", precision="fp32", tile=96, overlap=24)
    expected = predictor.predict(image, tiled=True).labels
    np.testing.assert_array_equal(tifffile.imread(out / "labels" / "field.tif"), expected)
    assert (out / "overlays" / "field.png").is_file()
    rows = list(csv.DictReader(open(out / "class_shares.csv")))
    assert [row["image"] for row in rows] == [path.as_posix()]
    assert (int(rows[0]["width"]), int(rows[0]["height"])) == (260, 180)
    np.testing.assert_allclose([float(rows[0][f"c{i}"]) for i in range(4)],
                               np.bincount(expected.reshape(-1), minlength=4) / expected.size, atol=1e-6)


def test_resume_is_bit_identical_in_process(tmp_path):
    """The tiler's resume path alone: blended logits after resuming equal an uninterrupted pass."""
    from pixelwise.inference.tiling import TileGrid, blended_rows

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 2, 5, padding=2)
    fn = lambda x: conv(x)  # noqa: E731
    image = scene(250, 130)
    grid = TileGrid.plan(250, 130, tile=64, overlap=20)
    with torch.no_grad():
        full = {top: chunk.clone() for _, top, _, chunk in blended_rows(fn, image, grid, batch_size=2)}
        resumed = {top: chunk.clone() for _, top, _, chunk in blended_rows(fn, image, grid, batch_size=2,
                                                                            resume_tile_row=3)}
    first_row = grid.ys[3]
    assert min(resumed) == first_row
    merged_full = torch.cat([full[t] for t in sorted(full)], dim=1)[:, first_row:]
    merged_resumed = torch.cat([resumed[t] for t in sorted(resumed)], dim=1)
    assert torch.equal(merged_full, merged_resumed)
