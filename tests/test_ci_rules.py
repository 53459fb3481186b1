"""The suite's own rules: CI cannot pass with the browser tests skipped, and a hang fails.

`.ci/run` runs here with stand-in apt-get / make / chromium on a bare PATH, and the browser
tests run in a child pytest with no Chromium reachable, with and without CI set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


def _ci_run(tmp_path: Path, apt_body: str, with_chromium: bool = False) -> tuple[subprocess.CompletedProcess, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "chmod"):  # what .ci/run and the stand-ins below call
        (bin_dir / tool).symlink_to(f"/usr/bin/{tool}" if Path(f"/usr/bin/{tool}").exists() else f"/bin/{tool}")
    log = tmp_path / "log.txt"
    _stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {log}\n{apt_body}')
    _stub(bin_dir, "make", f'echo "make $* CI=$CI" >> {log}')
    if with_chromium:
        _stub(bin_dir, "chromium", "exit 0")
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}  # nothing else: no real chromium, no CI
    result = subprocess.run(["/bin/bash", str(REPO / ".ci" / "run")], env=env, capture_output=True, text=True,
                            timeout=60)
    return result, log


def test_ci_run_stops_loudly_when_the_chromium_install_fails(tmp_path):
    result, log = _ci_run(tmp_path, "exit 100")
    assert result.returncode != 0
    assert "could not install chromium" in result.stderr
    assert "make" not in log.read_text()  # the tests never ran half-equipped


def test_ci_run_stops_when_the_install_leaves_no_chromium_on_path(tmp_path):
    result, log = _ci_run(tmp_path, "exit 0")
    assert result.returncode != 0 and "not found" in result.stderr
    assert "make" not in log.read_text()


def test_ci_run_installs_when_missing_then_runs_the_tests_with_ci_set(tmp_path):
    # apt-get "installs" chromium by putting a stand-in next to itself on PATH.
    result, log = _ci_run(tmp_path, 'case "$*" in *install*) printf "#!/bin/sh\\n" > "$(dirname "$0")/chromium"; '
                                    'chmod +x "$(dirname "$0")/chromium";; esac')
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    assert any("install" in line and "chromium" in line for line in lines)
    assert lines[-1] == "make test CI=true"


def test_ci_run_with_chromium_present_skips_apt(tmp_path):
    result, log = _ci_run(tmp_path, "exit 100", with_chromium=True)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == ["make test CI=true"]


def _browser_tests_without_chromium(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PIXELWISE_CHROMIUM")}
    env["PATH"] = str(empty)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "report",
                           str(REPO / "tests" / "test_browser.py")],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=240)


def test_browser_tests_fail_in_ci_without_chromium(tmp_path):
    result = _browser_tests_without_chromium(tmp_path, ci="true")
    assert result.returncode == 1, result.stdout[-2000:]
    assert "1 error" in result.stdout and "the browser tests must run" in result.stdout


def test_browser_tests_skip_outside_ci_without_chromium(tmp_path):
    result = _browser_tests_without_chromium(tmp_path, ci=None)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 skipped" in result.stdout and "outside CI this skips" in result.stdout


def test_every_test_has_a_time_limit(pytestconfig):
    # pytest-timeout reads `timeout` from pyproject.toml: a hang fails instead of eating CI's 90 minutes.
    assert pytestconfig.pluginmanager.hasplugin("timeout")
    assert float(pytestconfig.getini("timeout")) == 300
