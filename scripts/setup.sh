#!/usr/bin/env bash
# Create .venv and install pixelwise with everything its tests and quickstart need.
#
# Torch is installed first, on purpose: on a machine without CUDA we pin the CPU build
# (torch==2.13.0+cpu) so pip can never resolve a plain "torch" to the newest CUDA build
# (several GB of nvidia-* packages). Where the CPU wheel is not already available to pip
# (from its find-links or index), the official CPU index is used.
# GPU users: set PIXELWISE_TORCH=cuda (installs torch from PyPI, CUDA build) or install the
# torch build you want into .venv before running this script; an existing torch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
TORCH_VERSION=${PIXELWISE_TORCH_VERSION:-2.13.0}
TORCH_CPU_INDEX=${PIXELWISE_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# pip warns once per missing local mirror folder; that noise hides real errors.
# It returns the command's own status: a failed install must stop the set-up (under pipefail a
# `cmd | grep || true` pipeline would hide it).
quiet() {
  local log status=0
  log=$(mktemp)
  "$@" >"$log" 2>&1 || status=$?
  grep -v "is ignored: it is neither a file nor a directory" "$log" || true
  rm -f "$log"
  return "$status"
}

if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: keeping installed torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
else
  want=${PIXELWISE_TORCH:-auto}
  if [ "$want" = auto ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then want=cuda; else want=cpu; fi
  fi
  if [ "$want" = cuda ]; then
    echo "setup: CUDA found, installing torch==$TORCH_VERSION (CUDA build)"
    quiet "${PIP[@]}" install -q "torch==$TORCH_VERSION"
  else
    echo "setup: no CUDA, installing the CPU build torch==$TORCH_VERSION+cpu"
    quiet "${PIP[@]}" install -q "torch==$TORCH_VERSION+cpu" \
      || quiet "${PIP[@]}" install -q "torch==$TORCH_VERSION+cpu" --extra-index-url "$TORCH_CPU_INDEX"
  fi
fi

quiet "${PIP[@]}" install -q -e ".[all,dev]"
touch "$VENV/.pixelwise-setup-done"
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
