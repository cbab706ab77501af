#!/usr/bin/env bash
# Install Crossbar.io, the third WAMP router of `ordo-bench --wamp`, into its own virtualenv
# bench/.crossbar-venv (never committed). Not part of scripts/setup.sh or CI: `pip install
# crossbar` pulls about 140 packages (twisted, web3, numpy, ...; 380 MB installed) as wheels;
# it took 85 s on the 2-core VM (2026-11-22).
#
#   scripts/crossbar-venv.sh            # install (idempotent: returns at once when installed)
#   bench/.crossbar-venv/bin/crossbar version
#
# Environment: PYTHON=/path/to/python3 (3.11 was used), CROSSBAR_VERSION (default pinned below).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/bench/.crossbar-venv"
version=${CROSSBAR_VERSION:-26.10.1}
python=${PYTHON:-python3}

say() { printf 'crossbar-venv: %s\n' "$*"; }

if [ -x "$venv/bin/crossbar" ] && "$venv/bin/python" -c "import crossbar, sys; sys.exit(crossbar.__version__ != '$version')" 2>/dev/null; then
    say "crossbar $version present in $venv"
    exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv with $python"
    "$python" -m venv "$venv"
fi
say "pip install crossbar==$version (~140 packages)"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input "crossbar==$version"
"$venv/bin/crossbar" version >/dev/null
say "done: $venv/bin/crossbar"
