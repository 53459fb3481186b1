"""Shared fixtures: where the real data sets are, and a skip with a reason when they are not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The commands' --backend default (auto) exports and times every new checkpoint; tests that
# are not about that choice run PyTorch directly. Subprocesses inherit this. tests/test_backend.py
# passes --backend explicitly.
os.environ["PIXELWISE_BACKEND"] = "torch"

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


def _shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (it sits beside the repo in CI)")
    return path


@pytest.fixture
def camvid_dir() -> Path:
    return _shared_path("data", "camvid")


@pytest.fixture
def isbi_dir() -> Path:
    return _shared_path("data", "isbi2012_membrane")


@pytest.fixture
def seed_examples_path() -> Path:
    return _shared_path("reference", "seed_examples.json")
