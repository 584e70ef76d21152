#!/bin/sh
# Sets up a fresh machine and runs every check: Debian packages for the real protocol peers
# (socat pty pairs for Modbus RTU, pcscd + vsmartcard-vpcd for PC/SC, swig + libpcsclite-dev
# to build pyscard, chromium + chromium-driver for the status page's browser test, systemd for
# `systemd-analyze verify` of the unit files, debootstrap + systemd-container to boot Debian
# under a real systemd in tests/ops/test_systemd_nspawn.py), a venv with
# the pinned dependencies, the npm packages of the independent conformance CSMS (Node.js and npm
# must be installed), then pytest, ruff, mypy and the import-linter layer contracts.
set -eu
cd "$(dirname "$0")/.."
PKGS="socat pcscd vsmartcard-vpcd swig libpcsclite-dev chromium chromium-driver systemd debootstrap systemd-container"
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
# The independent OCPP 1.6 CSMS (npm ocpp-rpc, strict schema validation) for conformance tests.
(cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error)
# The browser test, the unit file check and the container boot fail (instead of skipping) when
# their tool is missing. The container's root is cached in /var/cache/evsed-test.
EVSED_REQUIRE_BROWSER=1 EVSED_REQUIRE_SYSTEMD_ANALYZE=1 EVSED_REQUIRE_NSPAWN=1 \
    .venv/bin/python -m pytest -q
.venv/bin/ruff check .
.venv/bin/mypy
# The layers (core, runtime, storage, ocpp16, leaves) as .importlinter states them.
.venv/bin/lint-imports --no-cache
