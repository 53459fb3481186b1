"""Benchmark suite behind `pixelwise bench`; results go to BENCHMARKS.md (see bench/run_all.py)."""
