#!/usr/bin/env bash
# Regenerates the golden torrents in testdata/torrents/ with real tools
# (mktorrent 1.1, transmission-create 4.x). Payload bytes are deterministic
# (SHA-1 counter stream), so the info-hashes never change between runs; the
# payload itself is built in a temporary folder and not committed.
# Usage: testdata/make-golden.sh   (from the repository root)
set -euo pipefail
cd "$(dirname "$0")"
out="$PWD/torrents"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# mktorrent refuses to overwrite, so start clean (bad/ is made by make-bad.py).
rm -f "$out"/*.torrent

# gen FILE SIZE SEED: SIZE deterministic bytes.
gen() {
  mkdir -p "$(dirname "$1")"
  python3 - "$1" "$2" "$3" <<'PY'
import hashlib, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
buf = bytearray()
i = 0
while len(buf) < size:
    buf += hashlib.sha1(f"{seed}:{i}".encode()).digest()
    i += 1
open(path, "wb").write(bytes(buf[:size]))
PY
}

cd "$work"

# 1. Single file, 4 pieces of 32 KiB (last one short).
gen single.bin 100000 single
mktorrent -d -l 15 -a http://tracker.example/announce -c "single file golden" \
  -o "$out/single.torrent" single.bin

# 2. Multi-file with nested folders; 16 KiB pieces, and file sizes chosen so
#    pieces straddle file boundaries.
gen multi/a.txt 10000 a
gen multi/sub/b.bin 30000 b
gen multi/sub/deeper/c.bin 5000 c
gen multi/z.dat 20001 z
transmission-create -s 16 -t http://tracker.example/announce -c "multi file golden" \
  -o "$out/multi.torrent" multi

# 2b. The same folder by mktorrent (no `private` key, unlike Transmission),
#     so tests can check that `btc create` gives the very same info-hash.
mktorrent -d -l 15 -a http://tracker.example/announce -o "$out/multi-mktorrent.torrent" multi

# 3. announce-list with tiers: [[a, b], [c]].
gen tiers.bin 40000 tiers
mktorrent -d -l 15 -a http://a.example/announce,http://b.example/announce \
  -a udp://c.example:6969/announce -o "$out/tiers.torrent" tiers.bin

# 4. Private flag.
gen private.bin 50000 private
mktorrent -d -p -l 15 -a http://private.example/announce -o "$out/private.torrent" private.bin

# 5. Web seeds (url-list).
gen webseed.bin 70000 webseed
mktorrent -d -l 15 -a http://tracker.example/announce \
  -w http://seed1.example/files/,http://seed2.example/files/ \
  -o "$out/webseed.torrent" webseed.bin

# 6. Non-ASCII names.
gen "Ünïcödé/日本語.txt" 12345 jp
gen "Ünïcödé/Ελληνικά/ñandú.bin" 23456 gr
transmission-create -s 16 -t http://tracker.example/announce \
  -o "$out/utf8.torrent" "Ünïcödé"

# 7. libtorrent 2.0's default: a v1+v2 hybrid whose files are aligned to
#    pieces by BEP 47 pad files (`attr` "p"); no creation date, so the
#    info-hash is stable.
gen hybrid/a.bin 100000 ha
gen hybrid/sub/b.bin 50000 hb
gen hybrid/c.bin 70000 hc
/usr/bin/python3 - "$out/hybrid-libtorrent.torrent" <<'PY'
import sys
import libtorrent as lt
fs = lt.file_storage()
lt.add_files(fs, "hybrid")
ct = lt.create_torrent(fs, 32768)
ct.set_creator("libtorrent")
lt.set_piece_hashes(ct, ".")
entry = ct.generate()
entry.pop(b"creation date", None)
open(sys.argv[1], "wb").write(lt.bencode(entry))
PY

# 8. The same folder as a BitTorrent v2-only torrent (no v1 `pieces`, no
#    pad files): btc reads its v2 half and refuses to download it yet.
/usr/bin/python3 - "$out/v2-libtorrent.torrent" <<'PY'
import sys
import libtorrent as lt
fs = lt.file_storage()
lt.add_files(fs, "hybrid")
ct = lt.create_torrent(fs, 32768, flags=lt.create_torrent.v2_only)
ct.set_creator("libtorrent")
lt.set_piece_hashes(ct, ".")
entry = ct.generate()
entry.pop(b"creation date", None)
open(sys.argv[1], "wb").write(lt.bencode(entry))
PY

for t in "$out"/*.torrent; do
  printf '%s ' "$(basename "$t")"
  case "$t" in
    # transmission 3.00 cannot read hybrid torrents; libtorrent says its v1 hash.
    *hybrid*|*v2-*) /usr/bin/python3 -c 'import sys, libtorrent as lt; h = lt.torrent_info(sys.argv[1]).info_hashes(); print("Hash v1:", h.v1, "v2:", h.v2)' "$t" ;;
    *) transmission-show "$t" | grep -E '^\s*Hash( v1)?:' ;;
  esac
done
