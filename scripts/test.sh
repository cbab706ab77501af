#!/usr/bin/env bash
# Ordo's test command (the README's second command; .ci/run runs exactly this).
#
#   setup (packages, venv, npm peers) -> fmt -> clippy -> Rust tests (unit,
#   integration, simulator, model) -> short fuzz runs -> slow suite with real clients
#
# One cargo profile (release) is used for everything, so RocksDB's C++ is built once.
# CARGO_TARGET_DIR defaults to ~/.cache/ordo/target so clones on one machine share it.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ordo/target}"
# shellcheck source=scripts/sccache-probe.sh
. "$repo/scripts/sccache-probe.sh"
step() { printf '\n== %s (%s)\n' "$*" "$(date +%H:%M:%S)"; }

step "setup"
scripts/setup.sh
# setup may have just installed sccache
use_sccache_if_it_answers

step "format"
cargo fmt --all --check

step "clippy"
cargo clippy --release --workspace --all-targets --locked -- -D warnings

step "rust tests"
cargo test --release --workspace --locked

step "loom (the router's replay seam)"
# Its own target dir: RUSTFLAGS changes would otherwise rebuild the main one.
RUSTFLAGS="--cfg ordo_loom" CARGO_TARGET_DIR="${CARGO_TARGET_DIR}-loom" \
    cargo test --release --locked -p ordo-router --test loom

step "fuzz (${ORDO_FUZZ_SECONDS:-15} s per target)"
scripts/fuzz.sh "${ORDO_FUZZ_SECONDS:-15}"

step "slow suite"
# the cluster tests run ordo-ndb and ordo-sync beside ordo-entry
cargo build --release --workspace --locked --bins
ORDO_ENTRY="$CARGO_TARGET_DIR/release/ordo-entry" .venv/bin/pytest -q tests/slow
