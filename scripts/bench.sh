#!/usr/bin/env bash
# btc vs aria2c on loopback, same seeder, same run.
#
# Payloads: a 1 GiB single file and a many-file folder (2000 files in nested
# folders, ~512 MiB). For each payload one seeding btc is started (announcing
# to a local opentracker that whitelists the torrent); then btc
# (`--no-seed -q`) and aria2c (`--seed-time=0`) each download it in full,
# one after the other, under /usr/bin/time. Every download is checked with
# cmp (not timed) and deleted before the next one.
#
# Printed for each: wall seconds, MB/s (10^6 bytes), CPU seconds (user+sys),
# peak RSS, and btc/aria2c ratios, as a table and as CSV (also saved to
# $BENCH_CSV if set).
#
# Note: the page cache cannot be dropped fairly here; the seeder reads from
# a warm cache (both clients see the same), and the leechers write through
# the page cache.
#
# Environment: BENCH_DIR (parent of the temp folder; default /work if it has
# room, else /tmp), BENCH_SINGLE_MIB (1024), BENCH_MANY_FILES (2000),
# BENCH_MANY_MIB (512).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*" >&2; }
source scripts/lib.sh

need=()
command -v opentracker >/dev/null || need+=(opentracker)
command -v aria2c >/dev/null || need+=(aria2)
[ -x /usr/bin/time ] || need+=(time)
command -v cmp >/dev/null || need+=(diffutils)
install_missing "${need[@]}"

SINGLE_MIB="${BENCH_SINGLE_MIB:-1024}"
MANY_FILES="${BENCH_MANY_FILES:-2000}"
MANY_MIB="${BENCH_MANY_MIB:-512}"

say "building btc (release)"
cargo build --release >&2
BTC="${CARGO_TARGET_DIR:-$PWD/target}/release/btc"

# Room for the payloads plus one download at a time (and some slack).
NEED_KIB=$(((SINGLE_MIB + MANY_MIB) * 2 * 1024 + 512 * 1024))
pick_parent() {
  local d
  for d in ${BENCH_DIR:-} /work /tmp; do
    [ -d "$d" ] && [ -w "$d" ] || continue
    local avail
    avail=$(df -Pk "$d" | awk 'NR == 2 { print $4 }')
    if [ "$avail" -ge "$NEED_KIB" ]; then echo "$d"; return; fi
  done
  echo "error: no folder with $((NEED_KIB / 1024)) MiB free (set BENCH_DIR)" >&2
  exit 1
}
PARENT=$(pick_parent)
WORK=$(mktemp -d "$PARENT/btc-bench.XXXXXX")
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  stop_all
  rm -rf "$WORK"
  exit "$code"
}
trap cleanup EXIT INT TERM
say "work folder: $WORK"

# --- payloads ------------------------------------------------------------------
mkdir -p "$WORK/seed" "$WORK/logs"
say "making payload 1: one file of $SINGLE_MIB MiB"
head -c $((SINGLE_MIB * 1024 * 1024)) /dev/urandom >"$WORK/seed/single.bin"

say "making payload 2: $MANY_FILES files, ~$MANY_MIB MiB, nested folders"
# Sizes vary from 1/4 to 7/4 of the mean, deterministic per index.
MEAN=$((MANY_MIB * 1024 * 1024 / MANY_FILES))
head -c $((MANY_MIB * 1024 * 1024 * 2)) /dev/urandom >"$WORK/pool.bin"
off=0
for i in $(seq 0 $((MANY_FILES - 1))); do
  d="$WORK/seed/many/d$((i % 20))/e$((i % 7))"
  mkdir -p "$d"
  size=$((MEAN / 4 + (i * 7919 % 1000) * MEAN * 3 / 2 / 1000))
  dd if="$WORK/pool.bin" of="$d/f$i.bin" bs=64K iflag=skip_bytes,count_bytes skip="$off" count="$size" status=none
  off=$((off + size))
done
rm -f "$WORK/pool.bin"

TRACKER_PORT=$(free_port)
ANNOUNCE="http://127.0.0.1:$TRACKER_PORT/announce"
"$BTC" create "$WORK/seed/single.bin" -o "$WORK/single.torrent" --tracker "$ANNOUNCE" -q
"$BTC" create "$WORK/seed/many" -o "$WORK/many.torrent" --tracker "$ANNOUNCE" -q
H1=$("$BTC" info "$WORK/single.torrent" | awk '/^Info-hash:/ { print $2 }')
H2=$("$BTC" info "$WORK/many.torrent" | awk '/^Info-hash:/ { print $2 }')

say "starting opentracker on 127.0.0.1:$TRACKER_PORT"
start_opentracker "$TRACKER_PORT" "$WORK/tracker" "$WORK/logs/opentracker.log" "$H1" "$H2"

# --- measurements ----------------------------------------------------------------
RESULTS=()   # "payload client secs bytes cpu rss_kib"

# measure PAYLOAD CLIENT OUTDIR CMD...
measure() {
  local payload=$1 client=$2 out=$3
  shift 3
  rm -rf "$out"
  mkdir -p "$out"
  say "$payload: $client downloading"
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.txt" "$@" \
    >"$WORK/logs/$payload-$client.out" 2>"$WORK/logs/$payload-$client.err" || {
    echo "error: $client failed on $payload:" >&2
    tail -20 "$WORK/logs/$payload-$client.err" "$WORK/logs/$payload-$client.out" >&2
    exit 1
  }
  local e u s m
  read -r e u s m <"$WORK/time.txt"
  # Correctness (not timed).
  local src
  if [ "$payload" = single ]; then src="$WORK/seed/single.bin"; else src="$WORK/seed/many"; fi
  if [ -d "$src" ]; then
    diff -rq "$src" "$out/many" >&2 || { echo "error: $client: data differs" >&2; exit 1; }
  else
    cmp "$src" "$out/single.bin" || { echo "error: $client: data differs" >&2; exit 1; }
  fi
  local bytes
  bytes=$(du -sb "$src" | awk '{ print $1 }')
  if [ -d "$src" ]; then bytes=$(find "$src" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }'); fi
  RESULTS+=("$payload $client $e $bytes $(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }') $m")
  echo "   $e s wall, $u s user, $s s sys, $m KiB peak RSS" >&2
  rm -rf "$out"
}

for payload in single many; do
  SEED_PORT=$(free_port)
  say "$payload: starting the btc seeder on 127.0.0.1:$SEED_PORT"
  "$BTC" -o "$WORK/seed" "$WORK/$payload.torrent" --port "$SEED_PORT" --bind 127.0.0.1 --no-dht \
    >"$WORK/logs/seeder-$payload.out" 2>"$WORK/logs/seeder-$payload.err" &
  SEEDER=$!
  PIDS+=("$SEEDER")
  wait_log "$WORK/logs/seeder-$payload.err" "seeding" "$SEEDER" 600

  BTC_PORT=$(free_port)
  measure "$payload" btc "$WORK/out-btc" \
    "$BTC" -o "$WORK/out-btc" "$WORK/$payload.torrent" --no-seed -q --no-dht \
    --port "$BTC_PORT" --bind 127.0.0.1

  ARIA_PORT=$(free_port)
  measure "$payload" aria2c "$WORK/out-aria2c" \
    aria2c --seed-time=0 --enable-dht=false --enable-dht6=false --bt-enable-lpd=false \
    --enable-peer-exchange=false --disable-ipv6=true --file-allocation=none \
    --listen-port="$ARIA_PORT" --summary-interval=0 --console-log-level=warn \
    --bt-save-metadata=false --auto-save-interval=0 -d "$WORK/out-aria2c" "$WORK/$payload.torrent"

  kill -TERM "$SEEDER" 2>/dev/null || true
  wait "$SEEDER" 2>/dev/null || true
done

# --- report ------------------------------------------------------------------------
CSV="payload,client,seconds,MB_per_s,cpu_seconds,peak_rss_MiB"
printf '\n%-8s %-8s %9s %9s %9s %12s\n' payload client seconds "MB/s" "CPU s" "peak RSS MiB"
declare -A T C R
for r in "${RESULTS[@]}"; do
  read -r p c e b cpu m <<<"$r"
  mbps=$(awk -v b="$b" -v e="$e" 'BEGIN { printf "%.1f", b / 1e6 / (e > 0 ? e : 0.001) }')
  rss=$(awk -v m="$m" 'BEGIN { printf "%.1f", m / 1024 }')
  printf '%-8s %-8s %9s %9s %9s %12s\n' "$p" "$c" "$e" "$mbps" "$cpu" "$rss"
  CSV="$CSV
$p,$c,$e,$mbps,$cpu,$rss"
  T[$p.$c]=$e
  C[$p.$c]=$cpu
  R[$p.$c]=$m
done
printf '\nratios btc/aria2c (lower is better for btc):\n'
printf '%-8s %10s %10s %10s\n' payload time CPU "peak RSS"
for p in single many; do
  printf '%-8s %10s %10s %10s\n' "$p" \
    "$(awk -v a="${T[$p.btc]}" -v b="${T[$p.aria2c]}" 'BEGIN { printf "%.2f", a / (b > 0 ? b : 0.001) }')" \
    "$(awk -v a="${C[$p.btc]}" -v b="${C[$p.aria2c]}" 'BEGIN { printf "%.2f", a / (b > 0 ? b : 0.001) }')" \
    "$(awk -v a="${R[$p.btc]}" -v b="${R[$p.aria2c]}" 'BEGIN { printf "%.2f", a / (b > 0 ? b : 0.001) }')"
done
printf '\nCSV:\n%s\n' "$CSV"
if [ -n "${BENCH_CSV:-}" ]; then printf '%s\n' "$CSV" >"$BENCH_CSV"; fi
echo "(page cache not dropped: the seeder reads warm data; see the header of this script)"
