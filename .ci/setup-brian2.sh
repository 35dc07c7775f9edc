#!/usr/bin/env bash
# Brian2 2.9 (the reference simulator of the brain workflow) in its own venv: it fails to import with
# numpy >= 2.4, which neurochunk itself uses. Idempotent; fast when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-brian2
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import brian2, sys; sys.exit(brian2.__version__ != '2.9.0')" 2>/dev/null; then
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "brian2==2.9.0" "numpy<2.4" "cython>=3" "setuptools"
"$VENV/bin/python" -c "import brian2; print('brian2', brian2.__version__, 'in', '$VENV')"
