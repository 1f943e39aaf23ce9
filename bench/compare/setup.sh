#!/usr/bin/env bash
# Creates the virtual environment of the comparison benchmark (default bench/compare/.venv) and
# installs the pinned CPU PyTorch, JAX and NumPy of requirements.txt from PyPI. Idempotent.
#   bench/compare/setup.sh [VENV_DIR]        PYTHON=python3.12 to choose the interpreter
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-$here/.venv}"
python="${PYTHON:-python3}"

"$python" -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed"'
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
"$venv/bin/python" - <<'PY'
import sys, numpy, torch, jax, jaxlib
print(f"python {sys.version.split()[0]}  numpy {numpy.__version__}  torch {torch.__version__}  "
      f"jax {jax.__version__}  jaxlib {jaxlib.__version__}  jax devices {jax.devices()}")
PY
