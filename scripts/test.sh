#!/usr/bin/env bash
# The README's test command: installs what the tests need (as root, with
# apt-get) on a fresh machine, then runs every test with `cargo test --release`.
# Without root it names the missing packages and exits non-zero.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "[test] $*" >&2; }
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# Each tool the tests run, and the Debian package that has it.
need=()
check() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
check opentracker opentracker
check transmission-cli transmission-cli
check transmission-daemon transmission-daemon
check transmission-create transmission-cli
check aria2c aria2
check qbittorrent-nox qbittorrent-nox
check mktorrent mktorrent
check /usr/bin/time time
check ip iproute2
check nginx nginx-light
check mount mount
check fincore util-linux-extra
check umount mount
# Port mapping: miniupnpd is the router (nftables backend), upnpc and
# natpmpc look at it from the LAN, nft builds and reads its ruleset.
check miniupnpd miniupnpd-nftables
check upnpc miniupnpc
check natpmpc natpmpc
check nft nftables
check danted dante-server
check tinyproxy tinyproxy
# --interface looks names up itself: dnsmasq answers them in its test.
check dnsmasq dnsmasq-base
# btc daemon's web page, driven in headless Chromium over WebDriver.
check chromium chromium
check chromedriver chromium-driver
/usr/bin/python3 -c 'import libtorrent' >/dev/null 2>&1 || need+=(python3-libtorrent)
if [ ${#need[@]} -gt 0 ]; then
  # De-duplicate (transmission-cli is named twice).
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  install_missing "${need[@]}"
fi
exec cargo test --release "$@"
