# Shared by scripts/demo.sh and scripts/bench.sh (sourced, not run): tool
# installation, process bookkeeping, free ports, log waits and a local
# opentracker. The caller defines say() and sets `set -euo pipefail`.

# install_missing PKG...: installs the Debian packages given (as root, with
# apt-get), or says which to install and exits.
install_missing() {
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$@" >/dev/null
  else
    echo "error: please install: $* (e.g. sudo apt-get install $*)" >&2
    exit 1
  fi
}

# Every process started in the background goes into PIDS; stop_all ends
# them by PID: TERM, up to 3 s, then KILL.
PIDS=()
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# A TCP port nobody listens on (and not handed out before).
USED=" "
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    case "$USED" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED="$USED$p "
      echo "$p"
      return
    fi
  done
}

# wait_log FILE TEXT PID SECS: waits until FILE contains TEXT; fails (and
# shows the file) if PID dies or SECS pass.
wait_log() {
  local file=$1 text=$2 pid=$3 secs=$4
  for _ in $(seq 1 $((secs * 10))); do
    grep -q -- "$text" "$file" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { echo "error: process $pid died; log:" >&2; cat "$file" >&2; return 1; }
    sleep 0.1
  done
  echo "error: timed out waiting for '$text' in $file" >&2
  cat "$file" >&2
  return 1
}

# start_opentracker PORT DIR LOG HASH...: opentracker on 127.0.0.1:PORT
# (HTTP and UDP) tracking only the HASHes, and waits until it listens.
# It chroots into DIR (needs root), drops to nobody and only then reads the
# whitelist relative to DIR, so both must be world-readable.
start_opentracker() {
  local port=$1 dir=$2 log=$3
  shift 3
  mkdir -p "$dir"
  printf '%s\n' "$@" >"$dir/whitelist"
  chmod 755 "$dir"
  chmod 644 "$dir/whitelist"
  local user=()
  [ "$(id -u)" = 0 ] && user=(-u nobody)
  opentracker -i 127.0.0.1 -p "$port" -P "$port" -d "$dir" -w whitelist \
    "${user[@]}" >"$log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
}
