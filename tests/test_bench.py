"""The benchmark suite: harness logic, area error handling, the JSON -> markdown generator,
and a real `pixelwise bench --quick --only matmul` run. No timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest


from pixelwise.bench import harness, make_benchmarks_md, run_all


# ------------------------------------------------------------------ harness


def test_summarize_median_min_max():
    s = harness.summarize([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.min, s.max, s.n) == (2.5, 1.0, 10.0, 4)
    with pytest.raises(ValueError):
        harness.summarize([])


def test_rate_inverts_times_and_swaps_extremes():
    r = harness.rate(harness.Stats(median=2.0, min=1.0, max=4.0, n=3), items=8)
    assert (r.median, r.min, r.max, r.n) == (4.0, 2.0, 8.0, 3)  # slowest call -> minimum rate


def test_interleave_runs_variants_in_alternating_rounds():
    calls: list[str] = []
    times = harness.interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                               warmup=1, repeats=3)
    assert calls == ["a", "b"] * 4  # one warm-up round, then three timed rounds: A B A B A B
    assert list(times) == ["a", "b"] and all(len(t) == 3 for t in times.values())
    assert all(t >= 0 for ts in times.values() for t in ts)


def test_interleave_within_budget_bounds_the_rounds():
    calls: list[str] = []
    variants = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = harness.interleave_within(variants, warmup=1, repeats=9, budget_s=0.0, min_repeats=2)
    assert all(len(t) == 2 for t in times.values())  # no budget: the minimum number of rounds
    assert calls == ["a", "b"] * 3  # the (timed) warm-up round, then 2 rounds
    times = harness.interleave_within(variants, warmup=2, repeats=5, budget_s=1e9)
    assert all(len(t) == 5 for t in times.values())  # ample budget: every repeat


def test_paired_ratio_uses_per_round_ratios():
    r = harness.paired_ratio([4.0, 9.0, 2.0], [2.0, 3.0, 2.0])
    assert (r.median, r.min, r.max) == (2.0, 1.0, 3.0)
    with pytest.raises(ValueError):
        harness.paired_ratio([1.0], [1.0, 2.0])


def test_machine_info_describes_the_machine():
    info = harness.machine_info()
    assert info["cpu_model"] and info["logical_cores"] >= 1 and info["torch_threads"] >= 1
    assert info["torch"].split(".")[0].isdigit() and "UTC" in info["date"]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_rss_of_a_subprocess_is_its_own_not_the_parents():
    # ru_maxrss survives fork + exec on Linux, so a child of a big parent would report the
    # parent's peak; the tiling benchmark relies on peak_rss_bytes() not doing that.
    ballast = b"\x01" * (300 * 1024**2)  # 300 MiB of touched pages in this (parent) process
    code = ("import resource; from pixelwise.bench.harness import peak_rss_bytes; "
            "print(peak_rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    own, maxrss = map(int, proc.stdout.split())
    del ballast
    assert own < 100 * 1024**2  # a bare interpreter; maxrss here is ~300 MiB on current kernels
    assert own <= maxrss


def test_context_command_reproduces_an_area():
    assert harness.make_context(True).command("matmul") == "pixelwise bench --only matmul --quick"
    ctx = harness.make_context(False, results={"matmul": {"status": "error"}})
    assert ctx.command("models") == "pixelwise bench --only models"
    assert ctx.earlier("matmul") is None and ctx.repeats > harness.make_context(True).repeats


def test_flop_count_of_a_depthwise_conv_backward_is_twice_its_forward():
    import torch

    from pixelwise.bench.model_steps import count_gflops

    for groups in (1, 16):  # dense: torch's own count; depthwise: torch overcounts 16x without the fix
        conv = torch.nn.Conv2d(16, 16, 3, padding=1, groups=groups)
        x = torch.randn(1, 16, 20, 20, requires_grad=True)
        forward = count_gflops(lambda: conv(x))
        assert forward == pytest.approx(2 * 16 * (16 // groups) * 9 * 400 / 1e9)  # 2 FLOPs per MAC
        assert count_gflops(lambda: conv(x).sum().backward()) == pytest.approx(3 * forward)


# ------------------------------------------------------------------ run_all


def test_parse_only_validates_area_names():
    assert run_all.parse_only(None) == list(run_all.AREAS)
    assert run_all.parse_only("matmul, confusion") == ["matmul", "confusion"]
    with pytest.raises(ValueError, match="nope"):
        run_all.parse_only("matmul,nope")


def test_missing_piece_reports_not_available(monkeypatch):
    monkeypatch.setitem(run_all.AREAS, "ghost", "pixelwise.bench.no_such_area_module")
    result = run_all.run_area("ghost", harness.make_context(True))
    assert result["status"] == "not available"
    assert "pixelwise.bench.no_such_area_module" in result["reason"] and result["rows"] == []


def test_failing_area_is_reported_and_the_next_still_runs(monkeypatch):
    broken = types.ModuleType("bench_broken_area")
    broken.run = lambda ctx: 1 / 0
    fine = types.ModuleType("bench_fine_area")
    fine.run = lambda ctx: harness.area_result(command=ctx.command("fine"), columns=[("x", "X")], rows=[{"x": 1}])
    monkeypatch.setitem(sys.modules, "bench_broken_area", broken)
    monkeypatch.setitem(sys.modules, "bench_fine_area", fine)
    monkeypatch.setattr(run_all, "AREAS", {"broken": "bench_broken_area", "fine": "bench_fine_area"})
    doc = run_all.run_benchmarks(quick=True, log=lambda line: None)
    assert doc["areas"]["broken"]["status"] == "error"
    assert "ZeroDivisionError" in doc["areas"]["broken"]["reason"]
    assert doc["areas"]["fine"]["status"] == "ok"
    assert doc["areas"]["fine"]["rows"] == [{"x": 1, "command": "pixelwise bench --only fine --quick"}]


def test_write_results_turns_nan_into_null(tmp_path):
    path = tmp_path / "r.json"
    run_all.write_results({"a": [float("nan"), 1.5], "b": {"c": float("nan")}}, path)
    assert json.loads(path.read_text()) == {"a": [None, 1.5], "b": {"c": None}}


# ------------------------------------------------------------------ confusion workload


def test_confusion_workload_has_ignored_pixels_and_matches_torchmetrics():
    pytest.importorskip("torchmetrics")
    from pixelwise.bench import bench_confusion

    pred, target = bench_confusion.make_batch((2, 32, 48))
    assert pred.dtype == target.dtype and str(pred.dtype) == "torch.uint8"
    ignored = (target == 255).float().mean().item()
    assert 0.01 < ignored < 0.1
    assert int(pred.max()) < bench_confusion.NUM_CLASSES
    try:
        from pixelwise.metrics import ConfusionMatrix  # noqa: F401
    except ImportError:
        pytest.skip("pixelwise.metrics.ConfusionMatrix not written yet")
    bench_confusion.check_identical(pred, target)  # raises if the two confusion matrices differ


# ------------------------------------------------------------------ markdown generator


def _sample_doc() -> dict:
    return {
        "schema": run_all.SCHEMA, "quick": False, "command": "pixelwise bench",
        "machine": {"cpu_model": "Test CPU 9000", "cpu_flags": ["avx512f"], "logical_cores": 2,
                    "usable_cores": 2, "memory_gib": 23.5, "torch": "2.13.0", "torch_threads": 2,
                    "python": "3.11", "platform": "Linux", "date": "2026-01-02 03:04 UTC"},
        "areas": {
            "matmul": harness.area_result(
                command="pixelwise bench --only matmul", columns=[("dtype", "dtype"), ("gflops", "GFLOP/s")],
                rows=[{"dtype": "bf16", "gflops": 612.345}], notes=["a note about matmul"]),
            "confusion": harness.area_result(
                command="pixelwise bench --only confusion", columns=[("impl", "update")],
                rows=[{"impl": "ours"}],
                goals=[harness.goal("confusion >= 10x", ">= 10x", 14.2, True, "x"),
                       harness.goal("made-up failing goal", ">= 3x", 1.25, False, "x")]),
            "onnx": harness.not_available("cannot import pixelwise.export", "pixelwise bench --only onnx"),
            "tiling": {"status": "error", "reason": "RuntimeError: boom", "command": "pixelwise bench --only tiling",
                       "rows": [], "goals": [harness.goal("RSS", "< 2 GiB", None, None)]},
        },
    }


def _fake_run(folder: Path, per_class: dict, miou: float, wall: float | None) -> Path:
    (folder / "eval").mkdir(parents=True)
    (folder / "eval" / "metrics.json").write_text(json.dumps({
        "miou": miou, "pixel_accuracy": 0.871, "mean_accuracy": 0.654, "mean_dice": 0.6, "per_class": per_class,
        "num_images": 233}))
    run = {"model": {"name": "unet", "kwargs": {}}, "dataset": "../shared/data/camvid", "epochs_run": 123,
           "command": f"pixelwise train --config configs/x.yaml --out {folder.name}"}
    if wall is not None:
        run["wall_time_s"] = wall
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "config.yaml").write_text("data: {crop_size: 256}\nmodel: {kwargs: {input_scale: 0.5}}\n")
    return folder


def test_markdown_has_header_machine_tables_goals_and_statuses(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_sample_doc()))
    out = tmp_path / "BENCHMARKS.md"
    assert make_benchmarks_md.main([str(results), str(out)]) == 0
    text = out.read_text()
    assert text.startswith("<!-- GENERATED FILE: do not edit by hand. -->")
    assert "make bench && make benchmarks-md" in text  # how to regenerate
    assert "| CPU | Test CPU 9000 |" in text and "2026-01-02 03:04 UTC" in text
    assert "| torch threads | 2 |" in text and "23.5 GiB" in text
    assert "| bf16 | 612 | `pixelwise bench --only matmul` |" in text  # 3 significant figures + command
    assert "- a note about matmul" in text
    assert "| confusion | confusion >= 10x | >= 10x | 14.2x | PASS |" in text
    assert "| confusion | made-up failing goal | >= 3x | 1.25x | FAIL |" in text
    assert "| tiling | RSS | < 2 GiB | — | not measured |" in text
    assert "*not available: cannot import pixelwise.export*" in text
    assert "*error: RuntimeError: boom*" in text
    assert "No quality runs recorded" in text
    assert "Quick run" not in text


def test_markdown_quality_rows_from_run_folders(tmp_path):
    camvid = _fake_run(tmp_path / "camvid", {f"c{i}": {"iou": 0.5} for i in range(11)}, miou=0.512, wall=3000.0)
    isbi = _fake_run(tmp_path / "isbi", {"cell": {"iou": 0.9, "dice": 0.95},
                                         "membrane": {"iou": 0.701, "dice": 0.824}}, miou=0.8, wall=None)
    doc = _sample_doc() | {"quick": True}
    results = tmp_path / "results.json"
    results.write_text(json.dumps(doc))
    out = tmp_path / "B.md"
    rc = make_benchmarks_md.main([str(results), str(out), "--quality", f"camvid={camvid}",
                                  "--quality", f"isbi={isbi}"])
    assert rc == 0
    text = out.read_text()
    assert "Quick run" in text
    camvid_row = next(line for line in text.splitlines() if line.startswith("| camvid |"))
    assert "| 51.2 | 87.1 | 65.4 |" in camvid_row and "50.0 min" in camvid_row and "| PASS |" in camvid_row
    assert "| 256x256 crops, network at 0.5x | 123 |" in camvid_row
    assert "- camvid: `pixelwise train --config configs/x.yaml --out camvid`" in text
    assert ("| SegNet-Basic (published, CamVid test) | CamVid 11 classes | segnet_basic | 480x360 | — | 46.3 | 82.8 | 62.3 |"
            in text)
    isbi_row = next(line for line in text.splitlines() if line.startswith("| isbi |"))
    assert "membrane: 70.1 / 82.4" in isbi_row and "| — |" in isbi_row  # no wall time, no SegNet comparison


def test_quality_from_json_section_and_missing_run_folder(tmp_path, capsys):
    camvid = _fake_run(tmp_path / "camvid", {}, miou=0.40, wall=60.0)
    doc = _sample_doc() | {"quality": {"camvid": make_benchmarks_md.read_quality_run("camvid", camvid)}}
    results = tmp_path / "results.json"
    results.write_text(json.dumps(doc))
    out = tmp_path / "B.md"
    assert make_benchmarks_md.main([str(results), str(out)]) == 0
    row = next(line for line in out.read_text().splitlines() if line.startswith("| camvid |"))
    assert "| 40.0 |" in row and "| FAIL |" in row  # below SegNet-Basic's 46.3
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert make_benchmarks_md.main([str(results), str(out), "--quality", f"x={empty}"]) == 2
    assert str(empty / "eval" / "metrics.json") in capsys.readouterr().err


def test_generator_reports_unreadable_results(tmp_path, capsys):
    assert make_benchmarks_md.main([str(tmp_path / "absent.json"), str(tmp_path / "B.md")]) == 2
    assert "absent.json" in capsys.readouterr().err and not (tmp_path / "B.md").exists()


# ------------------------------------------------------------------ the command, for real


def _pixelwise(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixelwise", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_bench_quick_matmul_end_to_end(tmp_path):
    out = tmp_path / "results.json"
    proc = _pixelwise("bench", "--quick", "--only", "matmul", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[1/1] matmul" in proc.stderr  # progress per area
    machine = next(line for line in proc.stderr.splitlines() if line.startswith("machine: "))
    assert all(f"{flag} " in machine for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16"))
    doc = json.loads(out.read_text())
    assert doc["schema"] == run_all.SCHEMA and doc["quick"] is True
    assert doc["command"] == "pixelwise bench --quick --only matmul"
    area = doc["areas"]["matmul"]
    assert area["status"] == "ok" and [r["dtype"] for r in area["rows"]] == ["fp32", "bf16"]
    assert all(r["gflops"] > 0 and r["min"] <= r["gflops"] <= r["max"] and r["threads"] >= 1 for r in area["rows"])
    md = tmp_path / "BENCHMARKS.md"
    gen = subprocess.run([sys.executable, "-m", "pixelwise.bench.make_benchmarks_md", str(out), str(md)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert gen.returncode == 0, gen.stderr
    assert "### Matmul peak" in md.read_text() and "## Machine: " in md.read_text() and "`pixelwise bench --only matmul --quick`" in md.read_text()


def test_bench_rejects_unknown_area_and_bad_quality_run(tmp_path):
    proc = _pixelwise("bench", "--only", "matmul,warp_drive", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error:" in proc.stderr and "warp_drive" in proc.stderr
    proc = _pixelwise("bench", "--only", "matmul", "--quality-runs", f"camvid={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "nowhere" in proc.stderr
    proc = _pixelwise("bench", "--quality-runs", "no-equals-sign", cwd=tmp_path)
    assert proc.returncode == 2 and "NAME=RUN_DIR" in proc.stderr


# ------------------------------------------------------------------ the product's own code paths


def test_benchmark_steps_run_the_training_loop_and_the_predictor(monkeypatch):
    import torch

    from pixelwise.bench import model_steps
    from pixelwise.inference import predictor
    from pixelwise.models import create_model
    from pixelwise.training import loop

    calls = {"train": 0, "infer": 0}
    real_train, real_fn = loop.train_one_epoch, predictor.torch_model_fn

    def spy_train(*args, **kwargs):
        calls["train"] += 1
        return real_train(*args, **kwargs)

    def spy_fn(*args, **kwargs):
        calls["infer"] += 1
        return real_fn(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", spy_train)
    monkeypatch.setattr(predictor, "torch_model_fn", spy_fn)
    torch.manual_seed(0)
    model = model_steps.prepare(create_model("unet", num_classes=3, base_channels=4, depth=2), fast=False)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model.train()(x), y).item()
    step = model_steps.train_step(model, x, y, fast=False)
    assert step() == pytest.approx(expected, rel=1e-5)  # the loss of the state before the step
    assert step() < expected                             # and the step trained the model
    logits = model_steps.infer_step(model, x, fast=False)()
    assert calls == {"train": 2, "infer": 1} and logits.shape == (2, 3, 32, 32)
    assert "resolve_runtime" in model_steps.fast_mode_source()
    assert model_steps.runtime_for(False).precision == "fp32" and not model_steps.runtime_for(False).channels_last


def test_quality_rows_and_markdown_carry_no_absolute_paths(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    data = tmp_path / "shared" / "camvid"
    data.mkdir(parents=True)
    run = _fake_run(repo / "runs" / "camvid", {}, miou=0.5, wall=60.0)
    info = json.loads((run / "run.json").read_text())
    info["dataset"] = {"root": "../../../shared/camvid", "train_images": 3}  # as train writes it: run-relative
    (run / "run.json").write_text(json.dumps(info))
    monkeypatch.chdir(repo)
    row = make_benchmarks_md.read_quality_run("camvid", run)
    assert row["run_dir"] == "runs/camvid" and row["dataset"] == "../shared/camvid"
    results = repo / "results.json"
    results.write_text(json.dumps(_sample_doc() | {"quality": {"camvid": row}}))
    assert make_benchmarks_md.main([str(results), str(repo / "B.md")]) == 0
    text = (repo / "B.md").read_text()
    assert str(tmp_path) not in text and "from `results.json`" in text
    assert "| camvid | ../shared/camvid |" in text


# ------------------------------------------------------------------ one section per machine


def _machine(doc: dict, cpu: str, flags: list[str], date: str = "2026-12-01 10:00 UTC") -> dict:
    return doc | {"machine": dict(doc["machine"], cpu_model=cpu, cpu_flags=flags, date=date)}


def test_machine_key_and_line_name_the_cpu_and_its_flags():
    machine = {"cpu_model": "Xeon X", "cpu_flags": ["avx2", "avx512f", "amx_tile", "amx_bf16"], "usable_cores": 8}
    assert harness.machine_key(machine) == "Xeon X (avx2, avx512f, amx_bf16)"
    assert harness.machine_line(machine) == "Xeon X; avx2 yes, avx512f yes, avx512_bf16 no, amx_bf16 yes; 8 cores"


def test_a_run_replaces_its_own_machine_section_and_keeps_the_others(tmp_path):
    results, out = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    first = _machine(_sample_doc(), "AVX2 Laptop", ["avx2"])
    first["areas"]["matmul"]["rows"][0]["gflops"] = 111.0
    results.write_text(json.dumps(first))
    assert make_benchmarks_md.main([str(results), str(out)]) == 0
    second = _machine(_sample_doc(), "AMX Server", ["avx2", "avx512f", "avx512_bf16", "amx_bf16"])
    results.write_text(json.dumps(second))
    assert make_benchmarks_md.main([str(results), str(out)]) == 0
    text = out.read_text()
    assert text.count("<!-- GENERATED FILE") == 1
    assert "## Machine: AMX Server (avx2, avx512f, avx512_bf16, amx_bf16)" in text
    assert "## Machine: AVX2 Laptop (avx2)" in text  # the earlier machine's section stays
    assert "| bf16 | 111 |" in text and "| bf16 | 612 |" in text
    assert text.index("AMX Server (avx2") < text.index("## Machine: AVX2 Laptop")  # this run first
    # The laptop again, with new figures: its section is replaced, the server's kept.
    first["areas"]["matmul"]["rows"][0]["gflops"] = 222.0
    results.write_text(json.dumps(first))
    assert make_benchmarks_md.main([str(results), str(out)]) == 0
    text = out.read_text()
    assert "| bf16 | 222 |" in text and "| bf16 | 111 |" not in text and "| bf16 | 612 |" in text
    assert text.count("<!-- machine: ") == 2 and text.count("<!-- end machine: ") == 2


def test_a_benchmarks_file_from_before_sections_becomes_its_machines_section():
    legacy = "\n".join(["<!-- GENERATED FILE: do not edit by hand. -->", "# Benchmarks", "", "Generated by x.", "",
                        "Measured 2026-11-21 19:30 UTC with `pixelwise bench`.", "", "## Machine", "",
                        "| Property | Value |", "|---|---|", "| CPU | AMD EPYC |",
                        "| CPU features | avx2, avx512f, avx512_bf16 |", "", "## Matmul peak", "", "| bf16 | 612 |"])
    [(key, body)] = make_benchmarks_md.earlier_sections(legacy)
    assert key == "AMD EPYC (avx2, avx512f, avx512_bf16)"
    assert "### Matmul peak" in body and "| bf16 | 612 |" in body and body[-1].startswith("<!-- end machine")
    text = make_benchmarks_md.render(_machine(_sample_doc(), "Other CPU", ["avx2"]), earlier=legacy)
    assert "## Machine: AMD EPYC (avx2, avx512f, avx512_bf16)" in text and "| bf16 | 612 |" in text


def test_merge_keeps_areas_not_rerun_on_the_same_machine_only():
    earlier = _machine(_sample_doc(), "CPU A", ["avx2"], date="2026-11-01 00:00 UTC")
    new = _machine({"schema": run_all.SCHEMA, "quick": False, "command": "pixelwise bench --only matmul",
                    "machine": dict(_sample_doc()["machine"]), "areas": {
                        "matmul": harness.area_result(command="c", columns=[("x", "X")], rows=[{"x": 2}])}},
                   "CPU A", ["avx2"], date="2026-12-01 00:00 UTC")
    merged = run_all.merge_results(earlier, new)
    assert merged["areas"]["matmul"]["rows"][0]["x"] == 2 and merged["areas"]["matmul"]["measured"] == "2026-12-01 00:00 UTC"
    assert set(merged["areas"]) == {"matmul", "confusion", "onnx", "tiling"}
    assert merged["areas"]["confusion"]["measured"] == "2026-11-01 00:00 UTC"
    text = make_benchmarks_md.render(merged)
    assert "Measured 2026-11-01 00:00 UTC (an earlier `pixelwise bench --only` run on this machine)." in text
    other = run_all.merge_results(_machine(earlier, "CPU B", ["avx2"]), new)
    assert set(other["areas"]) == {"matmul"}  # another machine's figures are never mixed in
    assert set(run_all.merge_results(earlier | {"quick": True}, new)["areas"]) == {"matmul"}


def test_defaults_area_reports_the_products_own_choices(monkeypatch):
    from pixelwise.bench import bench_defaults
    from pixelwise.inference import backend
    from pixelwise.runtime import resolve_runtime

    seen = []

    def fake_select(path, word, *args, **kwargs):
        seen.append((path.is_file(), word))
        return backend.Choice("onnxruntime", "fp32", "fastest on the probe batch (made up)"), None

    monkeypatch.setattr(backend, "select", fake_select)
    result = bench_defaults.run(harness.make_context(True, log=lambda line: None))
    assert seen == [(True, "auto")]  # a real checkpoint file, the commands' default word
    assert result["rows"][0]["chosen"] == resolve_runtime("auto", "auto", "auto").describe()
    assert result["rows"][1]["chosen"] == "onnxruntime fp32" and "made up" in result["rows"][1]["why"]


def test_script_rows_render_with_their_cpu_and_load_and_survive_regeneration(tmp_path):
    """Rows of scripts/bench_*.py appear once, naming the CPU, the load and the command."""
    from pixelwise.bench.make_benchmarks_md import earlier_sections, render, render_script_rows

    rows = [{"benchmark": "batch predict", "engine": "torchrun, 2 processes", "images": 200, "size": 256,
             "wall_s": 66.8, "images_per_s": 2.99, "overhead_ms_per_image": 119.6, "cpu": "Some CPU",
             "flags": ["avx2"], "cores": 2, "load_avg_1m": 7.5, "command": "python scripts/bench_batch_predict.py"},
            {"benchmark": "windowed raster predict", "model": "lraspp_mobilenetv3", "classes": 6, "width": 32768,
             "height": 512, "wall_s": 120.6, "mpixel_per_s": 0.14, "peak_rss_mib": 992, "cpu": "Some CPU",
             "flags": ["avx2"], "cores": 2, "load_avg_1m": 6.2, "command": "python scripts/bench_raster.py"}]
    text = "\n".join(render_script_rows(rows))
    assert "2.99 images/s" in text and "992 MiB" in text and "32768x512" in text
    assert text.count("Some CPU (avx2), 2 cores") == 2 and "`python scripts/bench_raster.py`" in text
    doc = {"machine": {"cpu_model": "Some CPU", "cpu_flags": ["avx2"]}, "areas": {}}
    once = render(doc, script_rows=rows)
    twice = render(doc, earlier=once, script_rows=rows)  # a regeneration keeps one copy
    assert twice.count("## Scale-out and large rasters") == 1
    assert [key for key, _ in earlier_sections(twice)] == [key for key, _ in earlier_sections(once)]
