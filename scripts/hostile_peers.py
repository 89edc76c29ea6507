#!/usr/bin/python3
"""Hostile peers for `scripts/bench.sh hostile`: N connections (plain TCP
sockets, one thread each) to one BitTorrent peer, from 127.0.0.10 up to
127.0.0.29, each playing one of four attacks, round robin:

  reqflood  INTERESTED, then floods REQUESTs for random valid blocks and
            never reads (tiny receive buffer): a slow reader hogging an
            upload slot and the seeder's memory.
  metaflood an extension handshake offering ut_metadata, then tens of
            thousands of ut_metadata requests, never reading the answers.
  slowread  INTERESTED and REQUESTs, but reads only ~8 KiB/s.
  idle      handshakes, then sends nothing (holds a connection slot).

A closed connection is reopened after 0.5 s, so the pressure stays on.

  hostile_peers.py --target IP:PORT --info-hash HEX --total BYTES
                   --piece-length BYTES [--conns 200] [--duration SECS]

Runs for SECS (or until SIGTERM/SIGINT), then prints one line of counts.
"""
import argparse
import os
import random
import signal
import socket
import struct
import sys
import threading
import time

BLOCK = 16384
STOP = threading.Event()
LOCK = threading.Lock()
COUNTS = {"connects": 0, "refused": 0, "closed_by_peer": 0, "bytes_sent": 0}


def count(key, n=1):
    with LOCK:
        COUNTS[key] += n


def frame(msg_id, payload=b""):
    return struct.pack(">IB", 1 + len(payload), msg_id) + payload


def request(piece, offset, length):
    return frame(6, struct.pack(">III", piece, offset, length))


def extended(ext_id, payload):
    return frame(20, bytes([ext_id]) + payload)


class Geometry:
    def __init__(self, total, piece_length):
        self.total = total
        self.piece_length = piece_length
        self.pieces = (total + piece_length - 1) // piece_length

    def random_block(self, rng):
        piece = rng.randrange(self.pieces)
        plen = min(self.piece_length, self.total - piece * self.piece_length)
        b = rng.randrange((plen + BLOCK - 1) // BLOCK)
        return piece, b * BLOCK, min(BLOCK, plen - b * BLOCK)

    def requests(self, rng, n):
        return b"".join(request(*self.random_block(rng)) for _ in range(n))


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def open_peer(src, target, info_hash, rcvbuf):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(5)
    try:
        s.bind((src, 0))
        s.connect(target)
        peer_id = b"-HX0001-" + os.urandom(6).hex().encode()
        s.sendall(b"\x13BitTorrent protocol" + bytes([0, 0, 0, 0, 0, 0x10, 0, 0])
                  + info_hash + peer_id)
        hs = recv_exact(s, 68)
        if hs[28:48] != info_hash:
            raise ConnectionError("wrong torrent")
    except (OSError, ConnectionError):
        s.close()
        count("refused")
        return None
    count("connects")
    return s


def send(s, data):
    s.sendall(data)
    count("bytes_sent", len(data))


def attack(mode, src, target, info_hash, geo, seed):
    rng = random.Random(seed)
    while not STOP.is_set():
        small = mode in ("reqflood", "metaflood")
        s = open_peer(src, target, info_hash, 4096 if small else None)
        if s is None:
            STOP.wait(0.5)
            continue
        try:
            if mode == "reqflood":
                send(s, frame(2))
                while not STOP.is_set():
                    send(s, geo.requests(rng, 2000))
                    STOP.wait(1.0)
            elif mode == "metaflood":
                send(s, extended(0, b"d1:md11:ut_metadatai3ee1:v7:hostilee"))
                req = extended(1, b"d8:msg_typei0e5:piecei0ee")
                send(s, req * 20000)
                while not STOP.is_set():
                    send(s, req * 2000)
                    STOP.wait(2.0)
            elif mode == "slowread":
                send(s, frame(2))
                send(s, geo.requests(rng, 500))
                s.settimeout(0.5)
                while not STOP.is_set():
                    try:
                        if not s.recv(1024):
                            raise ConnectionError("closed")
                    except socket.timeout:
                        pass
                    STOP.wait(0.125)
                    if rng.random() < 0.05:
                        send(s, geo.requests(rng, 100))
            else:  # idle
                s.settimeout(1.0)
                while not STOP.is_set():
                    try:
                        if not s.recv(65536):
                            raise ConnectionError("closed")
                    except socket.timeout:
                        pass
        except socket.timeout:
            # A write that cannot proceed: the peer stopped reading us.
            # Hold the connection (never reading) until told to stop.
            STOP.wait()
        except (OSError, ConnectionError):
            count("closed_by_peer")
        finally:
            s.close()
        STOP.wait(0.5)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--info-hash", required=True)
    p.add_argument("--total", type=int, required=True)
    p.add_argument("--piece-length", type=int, required=True)
    p.add_argument("--conns", type=int, default=200)
    p.add_argument("--duration", type=float, default=600)
    a = p.parse_args()
    host, port = a.target.rsplit(":", 1)
    target = (host, int(port))
    info_hash = bytes.fromhex(a.info_hash)
    geo = Geometry(a.total, a.piece_length)
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    signal.signal(signal.SIGINT, lambda *_: STOP.set())
    modes = ["reqflood", "metaflood", "slowread", "idle"]
    threads = []
    for i in range(a.conns):
        src = "127.0.0.%d" % (10 + i % 20)
        t = threading.Thread(target=attack, daemon=True,
                             args=(modes[i % 4], src, target, info_hash, geo, i))
        t.start()
        threads.append(t)
    print("ATTACKING %d connections" % a.conns, flush=True)
    STOP.wait(a.duration)
    STOP.set()
    for t in threads:
        t.join(timeout=2)
    with LOCK:
        print(" ".join("%s=%d" % kv for kv in COUNTS.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
