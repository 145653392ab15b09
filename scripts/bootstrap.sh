# Sourced by scripts/demo and scripts/test: a virtualenv in .venv with fullduplex installed.
# PYTHON picks the interpreter (3.11 or newer); EXTRAS the optional dependency groups.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: $PYTHON not found; install Python 3.11 or newer (Debian: apt-get install python3 python3-venv)" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: fullduplex needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv || {
        echo "error: could not create a virtualenv (Debian: apt-get install python3-venv)" >&2
        exit 1
    }
fi
VENV_PY="$ROOT/.venv/bin/python"
# Reinstall only when the project metadata or the C speedups changed.
stamp=".venv/.fullduplex-${EXTRAS:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
    || [ fullduplex/protocol/_speedups.c -nt "$stamp" ]; then
    # pip's and setuptools' chatter goes to a log, shown only when the install fails.
    log=".venv/install.log"
    echo "fullduplex: installing into .venv${EXTRAS:+ with [$EXTRAS]} (log: $log)" >&2
    if ! { "$VENV_PY" -m pip install --quiet --upgrade pip \
            && "$VENV_PY" -m pip install --quiet -e ".${EXTRAS:+[$EXTRAS]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "error: installing fullduplex into .venv failed (the output above is in $log)" >&2
        exit 1
    fi
    touch "$stamp"
fi
