"""Per model at 512x512: training and inference images/s in fp32 NCHW and in the default
fast mode (bf16 autocast + channels_last), GFLOPs counted with FlopCounterMode, and the
achieved GFLOP/s as a fraction of this machine's matmul peak in the same precision.
"""

from __future__ import annotations

from typing import Any

import torch

from pixelwise.bench.harness import Context, area_result, goal, interleave_within, paired_ratio, rate, summarize
from pixelwise.bench.model_steps import fast_mode_source, forward_and_backward_gflops, infer_step, \
    prepare, train_step

AREA = "models"
NUM_CLASSES = 11  # CamVid's label space
SKIP = {"sliding_window"}  # per-pixel patch classifier: its own area (bench_sliding_window)
MODES = ("fp32 NCHW", "fast (bf16 + channels_last)")


def plan(ctx: Context, available: list[str]) -> tuple[list[str], int, int, float]:
    """(models, image size, batch, seconds budget per model and phase) for this run mode."""
    if ctx.quick:
        return [m for m in ["unet"] if m in available], 256, 1, 10.0
    # Batch 1 and ~20 s per phase keep the full run near 6 minutes on 2 cores (U-Net is
    # ~390 GFLOP per 512x512 forward); each phase still gets at least 3 timed rounds.
    return [m for m in available if m not in SKIP], 512, 1, 20.0


def bench_model(name: str, size: int, batch: int, budget_s: float, ctx: Context) -> list[dict[str, Any]]:
    """Two rows (fp32 NCHW, fast) for one model."""
    from pixelwise.models import create_model

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (batch, size, size), generator=gen)
    base = create_model(name, num_classes=NUM_CLASSES)
    params = sum(p.numel() for p in base.parameters())
    fwd_gflops, train_gflops = forward_and_backward_gflops(
        lambda: create_model(name, num_classes=NUM_CLASSES), x, y)
    models = {mode: prepare(create_model(name, num_classes=NUM_CLASSES), fast=(mode != MODES[0]))
              for mode in MODES}
    for m in models.values():
        m.load_state_dict(base.state_dict())
    del base

    ctx.log(f"  {name}: inference")
    # The matmul peak is re-measured inside the same rounds, so "% of peak" compares figures
    # taken under the same load from neighbours (a peak taken minutes earlier may not be).
    n = 1024 if ctx.quick else 2048
    a32, b32 = torch.randn(n, n), torch.randn(n, n)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    variants = {mode: infer_step(models[mode], x, fast=(mode != MODES[0])) for mode in MODES}
    variants |= {"mm fp32": lambda: torch.mm(a32, b32), "mm bf16": lambda: torch.mm(a16, b16)}
    infer = interleave_within(variants, warmup=1, repeats=ctx.repeats, budget_s=budget_s)
    local_peak = {dtype: 2 * n**3 / 1e9 / summarize(infer[f"mm {dtype}"]).median for dtype in ("fp32", "bf16")}
    ctx.log(f"  {name}: training")
    train = interleave_within({mode: train_step(models[mode], x, y, fast=(mode != MODES[0])) for mode in MODES},
                              warmup=1, repeats=ctx.repeats, budget_s=budget_s)
    rows = []
    for mode in MODES:
        peak = local_peak["fp32" if mode == MODES[0] else "bf16"]
        inf_rate, tr_rate = rate(summarize(infer[mode]), batch), rate(summarize(train[mode]), batch)
        inf_speedup = paired_ratio(infer[MODES[0]], infer[mode])
        tr_speedup = paired_ratio(train[MODES[0]], train[mode])
        rows.append({
            "model": name, "mode": mode, "params_m": params / 1e6, "gflops_fwd": fwd_gflops / batch,
            "infer_ips": inf_rate.median, "infer_range": f"{inf_rate.min:.3g}–{inf_rate.max:.3g}",
            "infer_gflops_s": inf_rate.median * fwd_gflops / batch,
            "infer_peak_pct": 100 * inf_rate.median * fwd_gflops / batch / peak,
            "infer_speedup": inf_speedup.median,
            "train_ips": tr_rate.median, "train_range": f"{tr_rate.min:.3g}–{tr_rate.max:.3g}",
            "train_gflops_s": tr_rate.median * train_gflops / batch,
            "train_peak_pct": 100 * tr_rate.median * train_gflops / batch / peak,
            "train_speedup": tr_speedup.median,
            "peak": peak, "size": f"{batch}x3x{size}x{size}", "runs": f"{len(infer[mode])}/{len(train[mode])}",
            "threads": torch.get_num_threads(),
        })
    return rows


def unet_goals(rows: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    fast = next((r for r in rows if r["model"] == "unet" and r["mode"] == MODES[1]), None)
    if fast is None:
        return [goal(g, t, None, None) for g, t in [
            ("U-Net default mode vs fp32 NCHW, training", ">= 2.5x"),
            ("U-Net default mode vs fp32 NCHW, inference", ">= 2.5x"),
            ("U-Net bf16 forward GFLOP/s vs bf16 matmul peak", ">= 40 %")]]
    at = f" ({size}x{size})"
    return [
        goal("U-Net default mode vs fp32 NCHW, training" + at, ">= 2.5x", fast["train_speedup"],
             fast["train_speedup"] >= 2.5, "x"),
        goal("U-Net default mode vs fp32 NCHW, inference" + at, ">= 2.5x", fast["infer_speedup"],
             fast["infer_speedup"] >= 2.5, "x"),
        goal("U-Net bf16 forward GFLOP/s vs bf16 matmul peak" + at, ">= 40 %", fast["infer_peak_pct"],
             fast["infer_peak_pct"] >= 40, " %"),
    ]


def run(ctx: Context) -> dict[str, Any]:
    from pixelwise.models import list_models

    names, size, batch, budget = plan(ctx, list_models())
    if not names:
        raise ImportError(f"no model to measure: registered models are {list_models() or 'none'}")
    matmul = ctx.earlier("matmul")
    rows, failures = [], []
    for name in names:
        ctx.log(f"  {name} ...")
        try:
            rows += bench_model(name, size, batch, budget, ctx)
        except Exception as exc:  # one broken model must not hide the others
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    if not rows:
        raise RuntimeError("every model failed: " + "; ".join(failures))
    notes = [
        f"Images {size}x{size}, batch {batch}, {NUM_CLASSES} classes. Fast mode via {fast_mode_source()}. "
        "GFLOP/img is the fp32 forward counted by torch.utils.flop_counter.FlopCounterMode; training GFLOP/s "
        "uses the counted forward + backward (grouped-conv backward counted correctly). % of peak is against a "
        "square matmul of the same precision timed in the same interleaved rounds as the model's inference "
        "(see its column; the matmul area has the larger-matrix peak). Speed-ups are medians of per-round "
        "ratios of interleaved fp32/fast timings. Training step = forward, cross-entropy, backward, AdamW step.",
    ] + [f"Failed: {f}" for f in failures]
    return area_result(
        command=ctx.command(AREA),
        columns=[("model", "model"), ("mode", "mode"), ("params_m", "params (M)"),
                 ("gflops_fwd", "GFLOP/img (fwd)"), ("infer_ips", "inference img/s"), ("infer_range", "min–max"),
                 ("infer_gflops_s", "inference GFLOP/s"), ("infer_peak_pct", "% of peak"),
                 ("infer_speedup", "inference speed-up vs fp32"), ("train_ips", "training img/s"),
                 ("train_range", "min–max"), ("train_gflops_s", "training GFLOP/s"),
                 ("train_peak_pct", "% of peak"), ("train_speedup", "training speed-up vs fp32"),
                 ("peak", "matmul peak GFLOP/s (same rounds)"),
                 ("size", "batch shape"), ("runs", "runs (inf/train)"), ("threads", "threads")],
        rows=rows, goals=unet_goals(rows, size), notes=notes,
    ) | {"size": size, "batch": batch, "matmul_area_peak_gflops": matmul["peak_gflops"] if matmul else None}
