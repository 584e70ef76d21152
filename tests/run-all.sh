#!/bin/sh
# Sets up a fresh machine and runs every check: Debian packages for the real protocol peers
# (socat pty pairs for Modbus RTU, pcscd + vsmartcard-vpcd for PC/SC, swig + libpcsclite-dev
# to build pyscard), a venv with the pinned dependencies, then pytest, ruff and mypy.
set -eu
cd "$(dirname "$0")/.."
PKGS="socat pcscd vsmartcard-vpcd swig libpcsclite-dev"
missing=""
for p in $PKGS; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
fi
# pcscd is started by the tests themselves (private socket); do not let a system one interfere.
python3 -m venv .venv
.venv/bin/pip install -q -e '.[test,pcsc]'
.venv/bin/python -m pytest -q
.venv/bin/ruff check .
.venv/bin/mypy
