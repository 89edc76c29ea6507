#!/usr/bin/python3
"""Helpers for `scripts/bench.sh scale` (tens of thousands of torrents in
one btc process). Standard library only.

  scale.py make --n N --dir DIR [--tracker URL]
      writes N small payloads DIR/seed/sNNNNNN.bin (16 or 32 KiB: one or
      two 16 KiB pieces, distinct content) and their single-file torrents
      DIR/torrents/sNNNNNN.torrent, and DIR/all.list naming every torrent,
      one per line; prints "MADE n=N bytes=B seconds=S". Info-hashes are
      written to DIR/hashes.txt (hex, one per line, in list order).
  scale.py tracker --port P
      a counting HTTP tracker on 127.0.0.1:P: answers every announce with
      no peers and interval 1800, and prints "SECOND COUNT" once a second
      (announces received in that second of the Unix clock) while any
      arrive.
  scale.py peers --target IP:PORT --hashes FILE --n N [--ips K]
      holds N plaintext BitTorrent connections to IP:PORT, one per
      info-hash (the first N of FILE), from 127.0.0.10 up (K source
      addresses, default 50); each sends its handshake, an empty bitfield
      and INTERESTED, then reads and drops whatever comes and sends a
      keep-alive every 60 s; a closed one is reopened after 1 s. Prints
      "CONNECTED n" once a second.
"""
import argparse
import asyncio
import hashlib
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PIECE = 16 * 1024


def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        out = b"d"
        for k in sorted(v, key=lambda k: k.encode() if isinstance(k, str) else k):
            out += bencode(k) + bencode(v[k])
        return out + b"e"
    raise TypeError(type(v))


def make(args):
    t0 = time.time()
    seed = os.path.join(args.dir, "seed")
    tors = os.path.join(args.dir, "torrents")
    os.makedirs(seed, exist_ok=True)
    os.makedirs(tors, exist_ok=True)
    pool = os.urandom(1 << 20)
    total = 0
    with open(os.path.join(args.dir, "all.list"), "w") as lst, \
            open(os.path.join(args.dir, "hashes.txt"), "w") as hashes:
        for i in range(args.n):
            name = "s%06d" % i
            size = PIECE * (1 + i % 2)
            off = (i * 7919) % (len(pool) - size)
            data = bytearray(pool[off:off + size])
            data[0:8] = i.to_bytes(8, "little")  # distinct content per torrent
            data = bytes(data)
            with open(os.path.join(seed, name + ".bin"), "wb") as f:
                f.write(data)
            pieces = b"".join(hashlib.sha1(data[o:o + PIECE]).digest()
                              for o in range(0, size, PIECE))
            info = {"length": size, "name": name + ".bin",
                    "piece length": PIECE, "pieces": pieces}
            meta = {"info": info}
            if args.tracker:
                meta["announce"] = args.tracker
            path = os.path.join(tors, name + ".torrent")
            with open(path, "wb") as f:
                f.write(bencode(meta))
            lst.write(path + "\n")
            hashes.write(hashlib.sha1(bencode(info)).hexdigest() + "\n")
            total += size
    print("MADE n=%d bytes=%d seconds=%.1f" % (args.n, total, time.time() - t0), flush=True)


def tracker(args):
    counts = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            with lock:
                s = int(time.time())
                counts[s] = counts.get(s, 0) + 1
            body = bencode({"interval": 1800, "peers": b""})
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 1024
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    print("LISTENING", flush=True)
    while True:
        time.sleep(1)
        now = int(time.time())
        with lock:
            done = sorted(s for s in counts if s < now)
            for s in done:
                print("%d %d" % (s, counts.pop(s)), flush=True)


async def hold(target, ih, src, stop_at, state):
    host, port = target.rsplit(":", 1)
    pid = b"-PY0001-" + os.urandom(12)
    hs = b"\x13BitTorrent protocol" + bytes(8) + ih + pid
    while True:
        try:
            r, w = await asyncio.open_connection(host, int(port), local_addr=(src, 0))
        except OSError:
            await asyncio.sleep(1)
            continue
        counted = False
        try:
            w.write(hs)
            await w.drain()
            theirs = await asyncio.wait_for(r.readexactly(68), 10)
            if theirs[28:48] != ih:
                raise ConnectionError("wrong hash")
            # INTERESTED; no bitfield (we have nothing).
            w.write(b"\x00\x00\x00\x01\x02")
            await w.drain()
            state["n"] += 1
            counted = True
            last = time.monotonic()
            while True:
                try:
                    data = await asyncio.wait_for(r.read(65536), 5)
                except asyncio.TimeoutError:
                    data = b"-"
                if not data:
                    break
                if time.monotonic() - last > 60:
                    w.write(b"\x00\x00\x00\x00")
                    await w.drain()
                    last = time.monotonic()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            if counted:
                state["n"] -= 1
            w.close()
        await asyncio.sleep(1)


async def peers_main(args):
    with open(args.hashes) as f:
        hashes = [bytes.fromhex(l.strip()) for l in f if l.strip()][: args.n]
    state = {"n": 0}
    tasks = []
    for i, ih in enumerate(hashes):
        src = "127.0.0.%d" % (10 + i % args.ips)
        tasks.append(asyncio.ensure_future(hold(args.target, ih, src, None, state)))
    while True:
        await asyncio.sleep(1)
        print("CONNECTED %d" % state["n"], flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--n", type=int, required=True)
    m.add_argument("--dir", required=True)
    m.add_argument("--tracker")
    t = sub.add_parser("tracker")
    t.add_argument("--port", type=int, required=True)
    p = sub.add_parser("peers")
    p.add_argument("--target", required=True)
    p.add_argument("--hashes", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--ips", type=int, default=50)
    args = ap.parse_args()
    if args.cmd == "make":
        make(args)
    elif args.cmd == "tracker":
        tracker(args)
    else:
        asyncio.run(peers_main(args))


if __name__ == "__main__":
    sys.exit(main())
