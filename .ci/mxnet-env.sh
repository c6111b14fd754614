#!/usr/bin/env bash
# Isolated environment with the real mxnet 1.9.1, the compatibility judge for the
# RecordIO files facekit writes and reads.
# Usage: bash .ci/mxnet-env.sh [VENV]   (default .ci-venv-mxnet; PYTHON picks the interpreter)
#
# mxnet 1.9.1 uses the numpy aliases np.bool / np.int that numpy 1.24 removed (mxnet issue
# 21165), so it imports only with numpy < 1.24, which has no wheels past Python 3.11.
# - Python 3.8-3.11: numpy 1.23.5, nothing else.
# - Python 3.12: numpy 1.26.4 (the last numpy 1 release, wheels for 3.12) and a startup
#   shim in the venv (_mxnet_numpy_compat.py + a .pth line) that puts back the removed
#   aliases as the builtins they always were (np.bool is bool, np.int is int, ...); plus
#   setuptools, whose distutils stands in for the one 3.12 removed (mxnet imports
#   distutils.version).
# - Python 3.13+: no numpy 1.x wheels at all; refused (set PYTHON=python3.12).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv="${1:-$here/.ci-venv-mxnet}"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import mxnet" 2>/dev/null; then
  minor=$("$py" -c 'import sys; print(sys.version_info[0] * 100 + sys.version_info[1])')
  if [ "$minor" -ge 313 ]; then
    echo "mxnet-env.sh: $py is Python $((minor / 100)).$((minor % 100)); mxnet 1.9.1 needs numpy 1.x (Python <= 3.12): set PYTHON=python3.12 or python3.11" >&2
    exit 1
  fi
  pins=("numpy==1.23.5")
  [ "$minor" -ge 312 ] && pins=("numpy==1.26.4" "setuptools==84.2.1")
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
      "mxnet==1.9.1" "${pins[@]}" "opencv-python-headless==4.11.0.86"
  if [ "$minor" -ge 312 ]; then
    site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    cat >"$site/_mxnet_numpy_compat.py" <<'EOF'
"""Written by facekit's .ci/mxnet-env.sh: numpy >= 1.24 removed the aliases np.bool,
np.int, np.float, np.complex, np.object and np.str that mxnet 1.9.1 uses (mxnet issue
21165); put them back as the builtins they were. Imported at startup by a .pth line."""
try:
    import numpy as _np
except ImportError:  # numpy not installed (yet): nothing to patch
    pass
else:
    for _name, _type in (("bool", bool), ("int", int), ("float", float), ("complex", complex), ("object", object), ("str", str)):
        if _name not in _np.__dict__:
            setattr(_np, _name, _type)
EOF
    echo "import _mxnet_numpy_compat" >"$site/_mxnet_numpy_compat.pth"
  fi
fi
"$venv/bin/python" -c "import sys, mxnet, numpy; print('mxnet', mxnet.__version__, 'numpy', numpy.__version__, 'python', sys.version.split()[0])"
