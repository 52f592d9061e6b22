#!/bin/sh
# Installs the Debian packages clad needs to build, test and run its demo.
# As root it runs apt-get; otherwise it prints the exact command and fails.
set -e
PKGS="build-essential pkg-config libuv1-dev libsqlite3-dev libopenblas-dev libjansson-dev libhttp-parser-dev zlib1g-dev libsystemd-dev dataset-fashion-mnist curl sqlite3"
# The PostgreSQL store backend (libpq) and its tests' throwaway cluster (initdb, pg_ctl).
PKGS="$PKGS libpq-dev postgresql"
# The report test renders the HTML report in headless Chromium (skipped, visibly, without it).
PKGS="$PKGS chromium"
# Test-only: the PyTorch reference for the interop tests (tests/interop/make_checkpoints.py).
PKGS="$PKGS python3-torch python3-numpy"
# The libFuzzer targets (make fuzz) need clang and its sanitizer runtime.
PKGS="$PKGS clang libclang-rt-14-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "clad: missing packages:$missing" >&2
    echo "run: sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
fi
echo "clad: installing$missing"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
