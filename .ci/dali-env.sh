#!/usr/bin/env bash
# Isolated environment with the real NVIDIA DALI (CPU-only pipelines: device_id=None), the
# judge for the plain-layout RecordIO files and combined shard index facekit writes
# (fn.readers.mxnet + fn.decoders.image(device='cpu')). Kept apart from the main env: DALI
# wheels bring their own libraries and pin nothing of facekit's.
# Usage: bash .ci/dali-env.sh [VENV]   (default .ci-venv-dali; PYTHON picks the interpreter)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv="${1:-$here/.ci-venv-dali}"
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64 | Linux-aarch64) ;;
  *)  # DALI publishes Linux wheels only; the DALI tests skip (fail under CI=true) without it
    echo "dali-env.sh: no NVIDIA DALI wheels for $(uname -s)-$(uname -m); DALI env not built" >&2
    exit 0 ;;
esac
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import nvidia.dali" 2>/dev/null; then
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "nvidia-dali-cuda120==2.4.0"
fi
"$venv/bin/python" -c "import nvidia.dali, numpy; print('dali', nvidia.dali.__version__, 'numpy', numpy.__version__)"
