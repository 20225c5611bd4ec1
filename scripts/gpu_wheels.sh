#!/usr/bin/env bash
# Download the cp312 / manylinux x86-64 wheels of scripts/gpu_wheels.txt into .whl/, for
# scripts/gpu_check.sh on a GPU machine without network (Python 3.12, torch, torchvision).
# Run on any machine with pip and network access: bash scripts/gpu_wheels.sh [dest dir]
# A package published only as a source archive (antlr4-python3-runtime 4.9.3, which
# hydra-core 1.3 pins) is built into a wheel here: it is pure Python.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PY=${PYTHON:-python3}
mkdir -p "$DEST"
grep -v '^\s*#' scripts/gpu_wheels.txt | grep -v '^\s*$' | while read -r req; do
  $PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DEST" "$req" \
    || $PY -m pip wheel --no-deps -w "$DEST" "$req"  # sdist only (antlr4 4.9.3): pure Python
done
ls "$DEST"
