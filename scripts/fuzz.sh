#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a bounded time each: scripts/fuzz.sh [seconds per target] [target…]
# CI runs 20 s per target. The corpus grows outside the checkout ($RAGVAULT_FUZZ_CORPUS), seeded from
# fuzz/seeds; a crash leaves its input in $CI_OUTPUT_DIR/fuzz (or /tmp) and fails the run.
# cargo fuzz needs nightly-only flags: RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. No sanitizer:
# ragvault forbids unsafe code, so what is fuzzed here is panics, overflows (checked), hangs and memory blow-ups.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(api_key widget_token sse json_body policy_file documents)
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${RAGVAULT_FUZZ_TARGET_DIR:-/var/tmp/ragvault-fuzz-target}"
corpus_root="${RAGVAULT_FUZZ_CORPUS:-/var/tmp/ragvault-fuzz-corpus}"
artifacts="${CI_OUTPUT_DIR:-${TMPDIR:-/tmp}}/fuzz"
mkdir -p "$artifacts"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
cargo fuzz build --sanitizer none --debug-assertions
found=0
for target in "${targets[@]}"; do
  corpus="$corpus_root/$target"
  mkdir -p "$corpus"
  max_len=4096
  [ "$target" = documents ] && max_len=262144
  log="$artifacts/$target.log"
  if cargo fuzz run --sanitizer none --debug-assertions "$target" "$corpus" "fuzz/seeds/$target" -- \
      -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 -timeout=10 \
      -artifact_prefix="$artifacts/$target-" >"$log" 2>&1; then
    runs=$(grep -Eo '^Done [0-9]+ runs' "$log" | awk '{print $2}' || true)
    echo "fuzz $target: ${runs:-?} runs in ${seconds}s, no crash (corpus $(ls "$corpus" | wc -l) inputs)"
  else
    found=1
    echo "fuzz $target: FAILED (see $log)"
    tail -40 "$log"
  fi
done
exit $found
