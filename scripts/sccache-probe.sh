# Sourced by test.sh and fuzz.sh: use sccache as RUSTC_WRAPPER only if its server answers.
# A first start on a fresh machine can time out ("Timed out waiting for server startup"),
# and every rustc call would then fail; the build cache is optional, the build is not.
use_sccache_if_it_answers() {
    [ -z "${RUSTC_WRAPPER:-}" ] || return 0
    command -v sccache >/dev/null 2>&1 || return 0
    local try
    for try in 1 2 3; do
        sccache --start-server >/dev/null 2>&1 || true
        if sccache --show-stats >/dev/null 2>&1; then
            export RUSTC_WRAPPER=sccache
            return 0
        fi
        sleep 2
    done
    printf 'note: sccache did not answer; building without a build cache\n' >&2
}
