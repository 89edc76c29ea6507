#!/usr/bin/env bash
# The sans-IO rule: the pure core (parsers, codec, picker, choker, tracker
# encodings, layout) must not touch sockets, files through tokio, timers,
# async code or the wall clock. Fails with the offending lines.
set -euo pipefail
cd "$(dirname "$0")/.."
pure=(
  src/id.rs src/bencode.rs src/metainfo.rs src/metainfo/v2.rs src/merkle.rs src/magnet.rs src/bitfield.rs
  src/geometry.rs src/picker.rs src/choker.rs
  src/peer/message.rs src/peer/codec.rs src/peer/handshake.rs src/peer/hashes.rs src/peer/hash_picker.rs src/peer/blame.rs
  src/peer/extension.rs src/peer/metadata.rs src/peer/state.rs src/peer/state/fast.rs
  src/peer/state/pex.rs src/peer/state/upload.rs src/peer/state/download.rs src/peer/state/pipeline.rs src/peer/swarm.rs
  src/tracker/announce.rs src/storage/layout.rs src/storage/writeback.rs src/webseed/plan.rs src/mse.rs src/lsd.rs
  src/utp/packet.rs src/utp/ledbat.rs src/utp/conn.rs
  src/portmap/pcp.rs src/portmap/natpmp.rs src/portmap/timing.rs src/portmap/gateway.rs
  src/utp/packet.rs src/utp/ledbat.rs src/utp/conn.rs src/proxy.rs
  src/dht/krpc.rs src/dht/table.rs src/dht/node.rs src/iface/link.rs src/dns.rs
  src/daemon/rpc.rs src/daemon/gate.rs
)
# tokio_util's codec traits are sync and allowed; anything else from tokio is not.
pattern='tokio::|async fn|\.await|reqwest|mainline|Instant::now\(\)|SystemTime::now\(\)|std::net::(TcpStream|UdpSocket|TcpListener)|std::fs::'
# Only code outside #[cfg(test)] modules counts.
bad=0
for f in "${pure[@]}"; do
  # reqwest::Url is only the `url` crate's pure parser, re-exported.
  hits=$(awk '/^#\[cfg\(test\)\]/{exit} {print FILENAME":"FNR": "$0}' "$f" | sed 's/reqwest::Url/Url/g' | grep -E "$pattern" || true)
  if [ -n "$hits" ]; then
    echo "$hits"
    bad=1
  fi
done
if [ "$bad" = 1 ]; then
  echo "check-layering: the pure core must stay free of I/O, async and clocks" >&2
  exit 1
fi
# Import direction: the layers below the session never reach up into it
# (the session implements their traits instead).
lower=(src/peer src/storage src/webseed)
up=$(find "${lower[@]}" -name '*.rs' ! -name 'tests.rs' ! -name '*_tests.rs' -print0 |
  xargs -0 awk '/^#\[cfg\(test\)\]/{nextfile} {print FILENAME":"FNR": "$0}' |
  grep -E 'crate::(session|cmd|ui)\b' || true)
if [ -n "$up" ]; then
  echo "$up"
  echo "check-layering: peer/, storage/ and webseed/ must not import session, cmd or ui" >&2
  exit 1
fi
echo "check-layering: ${#pure[@]} pure files clean; lower layers do not import the session"
