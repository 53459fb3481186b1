# The two commands of the README: `make quickstart` and `make test`.
# Both set up .venv first when it is missing or pyproject.toml changed.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pixelwise-setup-done

.PHONY: setup quickstart test test-fast bench benchmarks-md clean

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/pixelwise quickstart --out runs/quickstart

test: $(STAMP)
	$(PY) -m pytest tests

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/pixelwise bench --out bench/results.json

benchmarks-md: $(STAMP)
	$(PY) -m pixelwise.bench.make_benchmarks_md bench/results.json BENCHMARKS.md

clean:
	rm -rf $(VENV) runs build src/*.egg-info
