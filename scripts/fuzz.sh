#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60), one
# after the other, each a single libFuzzer process, then prints a table of
# target / executions / crashes. Exits non-zero if any target crashed (the
# crashing input is in fuzz/artifacts/TARGET/).
#
# Needs nightly Rust and cargo-fuzz; says how to get them if missing.
# The checked-in corpus (fuzz/corpus/TARGET) is read but not written: new
# inputs go to a scratch folder. Minimize and check in by hand with
# `cargo +nightly fuzz cmin TARGET`.
#
# Targets are built without a sanitizer (btc forbids unsafe code, so
# AddressSanitizer would find nothing a panic does not, at twice the cost)
# and with debug assertions, so an arithmetic overflow is a crash.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   FUZZ_RUNS=N      stop each target after N executions (SECONDS stays the cap)
#   FUZZ_SCRATCH=DIR keep the new inputs in DIR/TARGET (default: a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "[fuzz] $*" >&2; }

secs=${1:-60}
shift || true
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
  say "SECONDS must be a positive number, got '$secs'"
  exit 2
fi
if ! command -v rustup >/dev/null 2>&1 || ! rustup toolchain list | grep -q '^nightly'; then
  say "needs the nightly toolchain: rustup toolchain install nightly"
  exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  say "needs cargo-fuzz: cargo install cargo-fuzz"
  exit 1
fi

# The fuzz crate keeps its own build in fuzz/target.
unset CARGO_TARGET_DIR
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
if [ -n "${FUZZ_SCRATCH:-}" ]; then
  scratch=$FUZZ_SCRATCH # kept, e.g. to minimize into fuzz/corpus later
  mkdir -p "$scratch"
else
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
fi

say "building ${#targets[@]} targets"
flags=(--sanitizer none --debug-assertions)
nice -n 15 cargo +nightly fuzz build "${flags[@]}" >&2

rows=()
failed=0
for t in "${targets[@]}"; do
  say "$t: ${secs}s"
  mkdir -p "$scratch/$t" "fuzz/corpus/$t"
  log="$scratch/$t.log"
  status=0
  runs=()
  [ -n "${FUZZ_RUNS:-}" ] && runs=(-runs="$FUZZ_RUNS")
  nice -n 15 cargo +nightly fuzz run "${flags[@]}" "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" "${runs[@]}" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  if [ -z "$execs" ]; then
    # A crash ends the run before the final stats; take the last status line.
    execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
  fi
  crashes=$(grep -c 'Test unit written to' "$log" || true)
  if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    crashes=1 # e.g. a build failure or an out-of-memory kill: show the log
  fi
  if [ "$crashes" -ne 0 ]; then
    failed=1
    tail -40 "$log" >&2
  fi
  rows+=("$(printf '%-18s %14s %8s' "$t" "${execs:-?}" "$crashes")")
done

printf '%-18s %14s %8s\n' target executions crashes
printf '%s\n' "${rows[@]}"
exit "$failed"
