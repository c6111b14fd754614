#!/usr/bin/env bash
# Isolated environment with the real mtcnn 1.0.0 package on TensorFlow: the reference
# the tests compare facekit's onnxruntime MTCNN with (facekit itself never imports
# TensorFlow). FACEKIT_MTCNN_TF_PYTHON overrides its python in the tests.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv="${1:-$here/.ci-venv-mtcnn-tf}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import mtcnn" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
      "mtcnn==1.0.0" "tensorflow-cpu==2.21.0" "opencv-python-headless==4.11.0.86"
fi
TF_CPP_MIN_LOG_LEVEL=3 "$venv/bin/python" -c "import importlib.metadata as md, tensorflow as tf, cv2; print('mtcnn', md.version('mtcnn'), 'tensorflow', tf.__version__)"
