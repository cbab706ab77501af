#!/usr/bin/env bash
# Run the 3 sync + 3 ndb + 3 entry cluster on this machine under supervisord.
#
#   scripts/cluster.sh            prepare $ORDO_ROOT and run supervisord in the foreground
#   scripts/cluster.sh --prepare  only write the cluster file and certificates
#
# Environment: ORDO_ROOT (default ./ordo-cluster): cluster file, certificates, data and logs.
#              ORDO_BIN (default ${CARGO_TARGET_DIR:-target}/release): where the binaries are.
# Builds the release binaries first when ORDO_BIN has none. Entries listen for MQTT on
# 127.0.0.1:1881-1883 and WAMP on ws://127.0.0.1:9031-9033/.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ORDO_ROOT=$(realpath -m "${ORDO_ROOT:-ordo-cluster}")
export ORDO_BIN=$(realpath -m "${ORDO_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release}")

if [ ! -x "$ORDO_BIN/ordo-sync" ] || [ ! -x "$ORDO_BIN/ordo-ndb" ] || [ ! -x "$ORDO_BIN/ordo-entry" ]; then
    echo "cluster: building release binaries into $ORDO_BIN"
    (cd "$repo" && cargo build --release --locked --bins)
fi
mkdir -p "$ORDO_ROOT/log" "$ORDO_ROOT/data"
if [ ! -f "$ORDO_ROOT/cluster.toml" ]; then
    "$ORDO_BIN/ordo-entry" generate-cluster --base 7000 > "$ORDO_ROOT/cluster.toml"
    echo "cluster: wrote $ORDO_ROOT/cluster.toml"
fi
[ -f "$ORDO_ROOT/certs/ca.pem" ] || "$ORDO_BIN/ordo-entry" cluster-certs --cluster "$ORDO_ROOT/cluster.toml"
[ "${1:-}" = "--prepare" ] && exit 0

supervisord=$(command -v supervisord || true)
[ -n "$supervisord" ] || supervisord="$repo/.venv/bin/supervisord"
[ -x "$supervisord" ] || { echo "cluster: supervisord not found; run scripts/setup.sh" >&2; exit 1; }
echo "cluster: starting 9 processes; logs in $ORDO_ROOT/log; Ctrl-C stops them all"
exec "$supervisord" -n -c "$repo/supervisord/masterfree.supervisord.ini"
