#!/usr/bin/env bash
# onnx2tf's own virtual environment (TensorFlow pins numpy 1.26, which cannot live beside coldchain's).
# Used by the convert.litert pass as a subprocess. About 2.6 GB.
#   scripts/setup-onnx2tf.sh [VENV]      (default: .venv-onnx2tf, or $COLDCHAIN_ONNX2TF_VENV)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-${COLDCHAIN_ONNX2TF_VENV:-.venv-onnx2tf}}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if [ -x "$venv/bin/onnx2tf" ] && "$venv/bin/onnx2tf" -h >/dev/null 2>&1; then
    echo "onnx2tf ready in $venv"
    exit 0
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24" \
    2> >(grep -v "is ignored: it is neither" >&2)
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "onnx2tf==1.28.2" "tensorflow==2.19.0" "tf-keras==2.19.0" "onnx==1.22.0" "onnx-graphsurgeon==0.6.1" \
    "sng4onnx==2.0.1" "onnxruntime==1.32.0" "psutil==7.2.2" "ai-edge-litert==2.3.0" "numpy==1.26.4" \
    "protobuf==5.29.6" \
    2> >(grep -v "is ignored: it is neither" >&2)
"$venv/bin/onnx2tf" -h >/dev/null
echo "onnx2tf ready in $venv"
