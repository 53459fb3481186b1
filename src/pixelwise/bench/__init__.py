"""Benchmark suite behind `pixelwise bench`; results go to BENCHMARKS.md (see run_all.py and make_benchmarks_md.py).

The top of the package: it drives training, prediction and serving through their own code
paths, and nothing in pixelwise imports it except the `bench` command."""
