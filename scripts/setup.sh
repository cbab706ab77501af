#!/usr/bin/env bash
# Install what Ordo's builds and tests need on a Debian machine. Idempotent: a second run
# with everything in place only checks and returns in about a second.
#
#   apt:    libclang-dev (RocksDB bindings), mosquitto + mosquitto-clients (slow suite),
#           sccache (optional build cache; a failure to install it is only a warning)
#   python: <repo>/.venv with tests/slow/requirements.txt (pytest, paho-mqtt, autobahn, msgpack)
#   npm:    bench/peers (fox-wamp, the bench peer) and tests/slow/js (autobahn-js, wampy.js for
#           tests/slow/test_wamp_js.py), each pinned by its package-lock.json
#
# Works as root or with sudo, interactively or in CI (no stdin needed).
# Environment: PYTHON=/path/to/python3 picks the interpreter for the venv.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
requirements="$repo/tests/slow/requirements.txt"
peers="$repo/bench/peers"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- privileges
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo -n)
else
    as_root=()
fi

# ---------------------------------------------------------------- apt packages
required_pkgs=(libclang-dev mosquitto mosquitto-clients)
optional_pkgs=(sccache)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

missing=()
for p in "${required_pkgs[@]}" "${optional_pkgs[@]}"; do
    installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
    say "apt packages present: ${required_pkgs[*]} ${optional_pkgs[*]}"
else
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ] && [ "${#as_root[@]}" -eq 0 ]; then
        die "not root and no sudo; install by hand: ${missing[*]}"
    fi
    export DEBIAN_FRONTEND=noninteractive
    say "apt-get update (missing: ${missing[*]})"
    "${as_root[@]}" apt-get update -q >/dev/null
    req_missing=()
    for p in "${required_pkgs[@]}"; do
        installed "$p" || req_missing+=("$p")
    done
    if [ "${#req_missing[@]}" -gt 0 ]; then
        say "apt-get install ${req_missing[*]}"
        "${as_root[@]}" apt-get install -y -q --no-install-recommends "${req_missing[@]}" >/dev/null
    fi
    for p in "${optional_pkgs[@]}"; do
        if ! installed "$p"; then
            say "apt-get install $p (optional)"
            "${as_root[@]}" apt-get install -y -q --no-install-recommends "$p" >/dev/null \
                || say "warning: optional package $p did not install; builds work without it"
        fi
    done
fi

# The Debian mosquitto package enables a system broker on port 1883. The tests start their own
# brokers on free ports and never use it, so it is left as the package set it up.

# ---------------------------------------------------------------- python venv
python=${PYTHON:-}
if [ -z "$python" ]; then
    for candidate in python3 /usr/bin/python3; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import venv, ensurepip' 2>/dev/null; then
            python=$("$candidate" -c 'import sys; print(sys.executable)')
            break
        fi
    done
fi
if [ -z "$python" ]; then
    # Debian's python3 needs python3-venv for `python3 -m venv` with pip.
    say "apt-get install python3-venv (no python3 with venv+ensurepip found)"
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -q >/dev/null
    "${as_root[@]}" apt-get install -y -q --no-install-recommends python3-venv >/dev/null
    python=/usr/bin/python3
fi

[ -f "$requirements" ] || die "missing $requirements"
stamp="$venv/.requirements.sha256"
want=$( { sha256sum "$requirements" | cut -d' ' -f1; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)

if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    say "removing broken virtualenv $venv"
    rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
    say "creating virtualenv $venv with $python"
    "$python" -m venv "$venv"
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "python requirements up to date in $venv"
else
    say "installing python requirements from tests/slow/requirements.txt into $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$requirements"
    "$venv/bin/python" -c 'import pytest, paho.mqtt, autobahn, msgpack' \
        || die "python packages installed but do not import"
    printf '%s\n' "$want" >"$stamp"
fi

# ---------------------------------------------------------------- npm packages
# bench/peers: fox-wamp for ordo-bench; tests/slow/js: the JavaScript WAMP clients of the slow
# suite. Each is installed with `npm ci` from its lock file, skipped when node_modules matches.
npm_install() {
    local dir="$1" name="$2"
    [ -f "$dir/package.json" ] || return 0
    command -v npm >/dev/null 2>&1 || die "$name/package.json exists but npm is not installed"
    # npm writes node_modules/.package-lock.json on every install: it is newer than the lock
    # exactly when node_modules matches it.
    local marker="$dir/node_modules/.package-lock.json"
    if [ -f "$dir/package-lock.json" ]; then
        if [ -f "$marker" ] && [ ! "$dir/package-lock.json" -nt "$marker" ] && [ ! "$dir/package.json" -nt "$marker" ]; then
            say "$name node_modules up to date"
        else
            say "npm ci in $name"
            local ci_log
            if ! ci_log=$(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error 2>&1); then
                # npm ci refuses a lock that lacks an optional dependency for another platform
                # when the registry cannot resolve it (tests/slow/js: msgpackr-extract and
                # cbor-extract for darwin/win32/arm list versions the registry here lacks).
                # npm install --no-save installs the same locked versions and leaves the lock be.
                # Its usage text is long; the first "Missing:" line says enough.
                say "npm ci refused the lock in $name ($(printf '%s\n' "$ci_log" | grep -m1 -o 'Missing: .*' || printf '%s\n' "$ci_log" | grep -m1 'npm error')); npm install --no-save from the same lock"
                (cd "$dir" && npm install --no-save --no-audit --no-fund --loglevel=error)
            fi
        fi
    else
        if [ -f "$marker" ] && [ ! "$dir/package.json" -nt "$marker" ]; then
            say "$name node_modules up to date"
        else
            say "npm install in $name (no package-lock.json)"
            (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
        fi
    fi
}
npm_install "$peers" bench/peers
npm_install "$repo/tests/slow/js" tests/slow/js

say "done"
