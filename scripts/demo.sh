#!/usr/bin/env bash
# btc demo: a whole swarm on loopback, then a download from nothing but a
# magnet link.
#
#   1. builds btc (release)
#   2. makes a ~256 MiB payload and a .torrent for it
#   3. starts opentracker (whitelisting the torrent) and a local DHT node
#      (`btc dht`), then a seeding btc bootstrapped from that DHT node
#   4. downloads with a second btc given ONLY the magnet link, with the
#      progress bars, checks every byte with cmp and prints the timings
#
# Everything stays on 127.0.0.1; every process started here is stopped (by
# PID) and the temp folder removed on exit. Environment overrides:
#   DEMO_SIZE_MIB (default 256), DEMO_DIR (default: a new temp folder).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
source scripts/lib.sh

# --- tools ------------------------------------------------------------------
need=()
command -v opentracker >/dev/null || need+=(opentracker)
command -v cmp >/dev/null || need+=(diffutils)
command -v curl >/dev/null || need+=(curl)
install_missing "${need[@]}"
command -v cargo >/dev/null || { echo "error: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }

# --- build ------------------------------------------------------------------
say "building btc (cargo build --release)"
cargo build --release
BTC="${CARGO_TARGET_DIR:-$PWD/target}/release/btc"
[ -x "$BTC" ] || { echo "error: $BTC was not built" >&2; exit 1; }

# --- workspace and cleanup ---------------------------------------------------
WORK="${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/btc-demo.XXXXXX")}"
mkdir -p "$WORK"
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  stop_all
  if [ -z "${DEMO_DIR:-}" ]; then rm -rf "$WORK"; fi
  exit "$code"
}
trap cleanup EXIT INT TERM

TRACKER_PORT=$(free_port)
DHT_PORT=$(free_port)
SEED_PORT=$(free_port)
LEECH_PORT=$(free_port)
SIZE_MIB="${DEMO_SIZE_MIB:-256}"

# --- payload and torrent -----------------------------------------------------
say "making a ${SIZE_MIB} MiB payload in $WORK/seed/btc-demo"
mkdir -p "$WORK/seed/btc-demo/docs" "$WORK/out" "$WORK/logs"
t0=$(now)
head -c $((SIZE_MIB * 1024 * 1024 - 300000)) /dev/urandom >"$WORK/seed/btc-demo/big.bin"
head -c 300000 /dev/urandom >"$WORK/seed/btc-demo/docs/small.bin"
echo "btc demo payload, made $(date -u)" >"$WORK/seed/btc-demo/docs/README.txt"
echo "   $(elapsed "$t0" "$(now)") s"

ANNOUNCE="http://127.0.0.1:$TRACKER_PORT/announce"
say "btc create (tracker $ANNOUNCE)"
"$BTC" create "$WORK/seed/btc-demo" -o "$WORK/demo.torrent" --tracker "$ANNOUNCE" --comment "btc demo"
"$BTC" info "$WORK/demo.torrent"
HASH=$("$BTC" info "$WORK/demo.torrent" | awk '/^Info-hash:/ { print $2 }')
MAGNET=$("$BTC" info "$WORK/demo.torrent" | awk '/^Magnet:/ { print $2 }')
[ ${#HASH} = 40 ] || { echo "error: no info-hash from btc info" >&2; exit 1; }
# btc create makes a hybrid torrent: it is one torrent in two swarms, the v1
# one and the v2 one (announced by the first 20 bytes of the SHA-256 hash).
HASH_V2=$("$BTC" info "$WORK/demo.torrent" | awk '/^Info-hash v2:/ { print substr($3, 1, 40) }')

# --- tracker and DHT ---------------------------------------------------------
say "starting opentracker on 127.0.0.1:$TRACKER_PORT (HTTP+UDP, whitelist: $HASH ${HASH_V2:-})"
start_opentracker "$TRACKER_PORT" "$WORK/tracker" "$WORK/logs/opentracker.log" "$HASH" ${HASH_V2:+"$HASH_V2"}

say "starting a local DHT node: btc dht --port $DHT_PORT --no-bootstrap"
"$BTC" dht --port "$DHT_PORT" --bind 127.0.0.1 --no-bootstrap --state-dir "$WORK/dht-node" \
  >"$WORK/logs/dht.log" 2>&1 &
PIDS+=($!)
wait_log "$WORK/logs/dht.log" "listening" "${PIDS[-1]}" 20
cat "$WORK/logs/dht.log"

# --- seeder -------------------------------------------------------------------
say "starting the seeding btc on 127.0.0.1:$SEED_PORT (checks the data, then seeds; DHT via 127.0.0.1:$DHT_PORT)"
t0=$(now)
"$BTC" --no-port-mapping -o "$WORK/seed" "$WORK/demo.torrent" --port "$SEED_PORT" --bind 127.0.0.1 \
  --dht-bootstrap "127.0.0.1:$DHT_PORT" --state-dir "$WORK/state-seeder" \
  >"$WORK/logs/seeder.out" 2>"$WORK/logs/seeder.log" &
PIDS+=($!)
wait_log "$WORK/logs/seeder.log" "seeding" "${PIDS[-1]}" 300
SEED_READY=$(elapsed "$t0" "$(now)")
echo "   seeder ready after $SEED_READY s"

# --- the download: only the magnet link --------------------------------------
say "downloading with only the magnet link:"
echo "   $BTC '$MAGNET' -o $WORK/out --no-seed --port $LEECH_PORT --dht-bootstrap 127.0.0.1:$DHT_PORT"
t0=$(now)
"$BTC" --no-port-mapping "$MAGNET" -o "$WORK/out" --no-seed --port "$LEECH_PORT" --bind 127.0.0.1 \
  --dht-bootstrap "127.0.0.1:$DHT_PORT" --state-dir "$WORK/state-leecher"
DL=$(elapsed "$t0" "$(now)")

say "verifying every file with cmp"
n=0
while IFS= read -r -d '' f; do
  rel=${f#"$WORK/seed/"}
  cmp "$f" "$WORK/out/$rel"
  echo "   identical: $rel"
  n=$((n + 1))
done < <(find "$WORK/seed/btc-demo" -type f -print0)

say "done"
echo "   files verified:     $n"
echo "   seeder check:       $SEED_READY s"
echo "   magnet download:    $DL s for ${SIZE_MIB} MiB ($(awk -v s="$SIZE_MIB" -v t="$DL" 'BEGIN { printf "%.1f", s / t }') MiB/s, including DHT/tracker lookup and metadata)"
