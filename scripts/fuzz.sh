#!/usr/bin/env bash
# Run every cargo-fuzz target in fuzz/ for a short time; fail on any crash.
#
#   scripts/fuzz.sh [SECONDS]        # per target, default 20
#
# One summary line per target, then exit 0 only if no target crashed, hung or
# failed to build. On a crash the tail of libFuzzer's log (the panic message)
# and a command that replays the saved input are printed.
#
# Toolchain: cargo-fuzz wants nightly (-Zsanitizer=address); the machine has
# stable only, so RUSTC_BOOTSTRAP=1 unlocks the nightly flags on stable. ASan
# works that way without -Zbuild-std (the stable toolchain ships the ASan
# runtime; std itself is not instrumented, our crates are).
#
# Environment:
#   FUZZ_TARGET_DIR  cargo target dir, outside the repo so runs share builds
#                    (default ~/.cache/ordo-fuzz-target)
#   FUZZ_SANITIZER   address (default) or none
#   FUZZ_TARGETS     space-separated targets to run (default: all)
#   RUSTC_WRAPPER    build cache; sccache is used when found and this is unset
#
# Inputs: seeds in fuzz/seeds/<target>/ (read only) and the growing corpus in
# fuzz/corpus/<target>/; crashing inputs land in fuzz/artifacts/<target>/.
# The corpus and artifacts directories are git-ignored.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

say() { printf 'fuzz: %s\n' "$*"; }
die() { printf 'fuzz: error: %s\n' "$*" >&2; exit 2; }

seconds=${1:-20}
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a positive integer, got '$seconds'"
sanitizer=${FUZZ_SANITIZER:-address}
target_dir=${FUZZ_TARGET_DIR:-$HOME/.cache/ordo-fuzz-target}
mkdir -p "$target_dir/logs"

# shellcheck source=scripts/sccache-probe.sh
. "$(dirname "${BASH_SOURCE[0]}")/sccache-probe.sh"
use_sccache_if_it_answers

# ---------------------------------------------------------------- cargo-fuzz
if ! cargo fuzz --version >/dev/null 2>&1 </dev/null; then
    say "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    start=$SECONDS
    cargo install cargo-fuzz --locked </dev/null
    say "cargo-fuzz installed in $((SECONDS - start)) s"
fi
say "$(cargo fuzz --version </dev/null)"

# Set only now: cargo-fuzz itself builds on plain stable.
export RUSTC_BOOTSTRAP=1
fuzz=(cargo fuzz)
common=(--fuzz-dir fuzz --target-dir "$target_dir" --sanitizer "$sanitizer")

# ---------------------------------------------------------------- build
if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <("${fuzz[@]}" list --fuzz-dir fuzz </dev/null)
fi
[ "${#targets[@]}" -gt 0 ] || die "no fuzz targets found in fuzz/"

say "building ${targets[*]} (sanitizer $sanitizer, target dir $target_dir)"
start=$SECONDS
for t in "${targets[@]}"; do
    "${fuzz[@]}" build "${common[@]}" "$t" </dev/null || die "building $t failed"
done
say "built in $((SECONDS - start)) s"

# ---------------------------------------------------------------- run
# Pull one libFuzzer statistic ("stat::NAME: VALUE") out of a log.
stat() { sed -n "s/^stat::$1: *\([0-9]*\).*/\1/p" "$2" | tail -n 1; }

# Print what went wrong from a libFuzzer log: the panic message or the
# sanitizer / libFuzzer report, without the stack traces.
excerpt() {
    awk '/panicked at|==[0-9]+==ERROR|ALARM: working on the last Unit/ { n = 15 }
         /SUMMARY: libFuzzer/ { n = 1 }
         /^stack backtrace:/ { n = 0 }
         n > 0 { print; n-- }' "$1" | head -n 40
}

failed=()
for t in "${targets[@]}"; do
    log="$target_dir/logs/$t.log"
    corpus="fuzz/corpus/$t"
    seeds=()
    [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
    mkdir -p "$corpus"
    # -timeout: one input taking this long is a hang and fails the run.
    status=0
    "${fuzz[@]}" run "${common[@]}" "$t" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=25 -print_final_stats=1 \
        </dev/null >"$log" 2>&1 || status=$?

    runs=$(stat number_of_executed_units "$log")
    rate=$(stat average_exec_per_sec "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)
    units=$(find "$corpus" -type f | wc -l)
    if [ "$status" -eq 0 ]; then
        say "$t: ok, ${runs:-?} runs in ${seconds} s (${rate:-?} exec/s), cov ${cov:-?}, corpus $units"
    else
        failed+=("$t")
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        say "$t: FAILED (exit $status) after ${runs:-?} runs, input ${artifact:-none}; full log $log"
        excerpt "$log" | sed 's/^/    /'
        if [ -n "$artifact" ] && [ -f "$artifact" ]; then
            say "input ($(wc -c <"$artifact") bytes, hex, first 256):"
            head -c 256 "$artifact" | od -An -tx1 | sed 's/^/   /'
            say "replay: RUSTC_BOOTSTRAP=1 cargo fuzz run ${common[*]} $t $artifact"
        fi
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    say "FAILED: ${failed[*]}"
    exit 1
fi
say "all ${#targets[@]} targets ran ${seconds} s without a crash"
