#!/usr/bin/env bash
# A separate environment for the PyTorch side of scripts/bench.py: .venv-bench with numpy and the CPU
# build of torch. torch is never a dependency of mnist-kit; this environment is only for comparisons.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-bench/bin/python ] || "$PY" -m venv .venv-bench
# Pinned: on the project's machines pip finds torch 2.13.0's CPU wheel on disk. Elsewhere, PyPI's Linux
# wheel is a multi-GB CUDA build; for the CPU one add --index-url https://download.pytorch.org/whl/cpu
.venv-bench/bin/pip install --quiet numpy "torch==${TORCH_VERSION:-2.13.0}" ${TORCH_PIP_ARGS:-}
.venv-bench/bin/python -c "import torch; print('torch', torch.__version__, 'ready in .venv-bench')"
