#!/usr/bin/env bash
# Isolated environment with the real mxnet 1.9.1, the compatibility judge for the
# RecordIO files facekit writes and reads. mxnet 1.9.1 imports only with numpy < 1.24.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv="${1:-$here/.ci-venv-mxnet}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import mxnet" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
      "mxnet==1.9.1" "numpy==1.23.5" "opencv-python-headless==4.11.0.86"
fi
"$venv/bin/python" -c "import mxnet, numpy; print('mxnet', mxnet.__version__, 'numpy', numpy.__version__)"
