#!/usr/bin/env bash
# Builds the Python extension into a virtual environment under the cargo
# target directory and runs the Python tests. CI-safe: reads no stdin,
# installs maturin, pytest, SQLAlchemy and aiosqlite into the venv itself when
# they are missing.
#
#   python/run-tests.sh [test files...] [pytest args...]
#
# PYTHON picks the interpreter (default: python3, CPython >= 3.9).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="$target/pyvenv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    # Debian's python3 lacks `venv` without the python3-venv package;
    # virtualenv (from pip) does the same job.
    if ! "$python" -m venv "$venv"; then
        rm -rf "$venv"
        "$python" -m pip install --quiet --disable-pip-version-check virtualenv
        "$python" -m virtualenv --quiet "$venv"
    fi
fi
# The SQLAlchemy tests (the optional extra `enforcelog[sqlalchemy]`) run
# against real SQLite databases, sync and asyncio (aiosqlite, greenlet): no
# test is skipped for want of a package. The standalone proof verifier
# (enforcelog/verify.py) checks Ed25519 signatures with `cryptography`.
if ! "$venv/bin/python" -c 'import maturin, pytest, sqlalchemy, aiosqlite, greenlet, cryptography' >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        'maturin>=1.5,<2' 'pytest>=7' 'sqlalchemy[asyncio]>=2.0' 'aiosqlite>=0.17' 'cryptography>=41'
fi
# The many-writers test (tests/test_many_writers.py) runs the CLI binary
# beside the package: the README's command has built it with `cargo test`;
# build it here when it is missing (or when ENFORCELOG_BIN names none).
if [ -z "${ENFORCELOG_BIN:-}" ]; then
    ENFORCELOG_BIN="$target/debug/enforcelog"
    if [ ! -x "$ENFORCELOG_BIN" ]; then
        (cd "$root" && cargo build --quiet --locked -p enforcelog-cli </dev/null)
    fi
fi
case "$ENFORCELOG_BIN" in /*) ;; *) ENFORCELOG_BIN="$PWD/$ENFORCELOG_BIN" ;; esac
export ENFORCELOG_BIN
export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"
export CARGO_TARGET_DIR="$target"
(cd "$here" && maturin develop --quiet --locked --release </dev/null)
cd "$here"
# Test files or directories given first (`tests/test_audit_verify.py`)
# are run alone; otherwise the whole suite, with any pytest options given.
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    exec python -m pytest -q -p no:cacheprovider "$@" </dev/null
fi
exec python -m pytest -q -p no:cacheprovider "$@" tests </dev/null
