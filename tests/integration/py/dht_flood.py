#!/usr/bin/env python3
"""A hostile DHT node on 127.0.0.1.

values mode (the default): it answers every get_peers with COUNT made-up
peers (127.2.x.y:DEAD, new ones each time, where nothing listens) and
every find_node with no nodes. Prints GET_PEERS N for each answer.

nodes mode: it answers every get_peers and find_node with 8 made-up nodes
(127.3.x.y:DEAD, new ones each time) whose ids share all but the last two
bytes with the target, so a lookup takes them for the closest nodes there
are, and a made-up token. Nothing answers at those nodes, but a socket on
port DEAD counts the queries that reach them: FAKE_QUERIED N.

usage: dht_flood.py PORT DEAD COUNT [values|nodes]
"""
import os
import select
import socket
import sys


def enc(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, bytes):
        return b"%d:" % len(x) + x
    if isinstance(x, list):
        return b"l" + b"".join(enc(i) for i in x) + b"e"
    if isinstance(x, dict):
        return b"d" + b"".join(enc(k) + enc(x[k]) for k in sorted(x)) + b"e"
    raise TypeError(x)


def dec(b, i=0):
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c == b"l":
        i += 1
        out = []
        while b[i:i + 1] != b"e":
            v, i = dec(b, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while b[i:i + 1] != b"e":
            k, i = dec(b, i)
            v, i = dec(b, i)
            out[k] = v
        return out, i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n], j + 1 + n


def fake_nodes(target, first, dead):
    """8 compact node infos close to TARGET at 127.3.x.y:DEAD."""
    out = b""
    for k in range(first, first + 8):
        node_id = target[:18] + os.urandom(2)
        out += node_id + bytes([127, 3, (k >> 8) & 255, k & 255]) + dead.to_bytes(2, "big")
    return out


def main():
    port, dead, count = (int(a) for a in sys.argv[1:4])
    mode = sys.argv[4] if len(sys.argv) > 4 else "values"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    sink = None
    if mode == "nodes":
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("0.0.0.0", dead))
    me = os.urandom(20)
    answered = 0
    queried = 0
    made = 0
    print("LISTENING", flush=True)
    while True:
        ready, _, _ = select.select([x for x in (s, sink) if x], [], [])
        if sink in ready:
            sink.recvfrom(65536)
            queried += 1
            print("FAKE_QUERIED", queried, flush=True)
        if s not in ready:
            continue
        data, addr = s.recvfrom(65536)
        try:
            m, _ = dec(data)
        except Exception:
            continue
        if not isinstance(m, dict) or m.get(b"y") != b"q":
            continue
        q = m.get(b"q")
        r = {b"id": me}
        a = m.get(b"a") if isinstance(m.get(b"a"), dict) else {}
        if mode == "nodes" and q in (b"get_peers", b"find_node"):
            target = a.get(b"info_hash") or a.get(b"target") or os.urandom(20)
            target = (target + bytes(20))[:20]
            r[b"nodes"] = fake_nodes(target, made, dead)
            made += 8
            if q == b"get_peers":
                r[b"token"] = os.urandom(8)
                answered += 1
                print("GET_PEERS", answered, flush=True)
        elif q == b"get_peers":
            first = answered * count
            r[b"token"] = b"tok"
            r[b"values"] = [
                bytes([127, 2, (k >> 8) & 255, k & 255]) + dead.to_bytes(2, "big")
                for k in range(first, first + count)
            ]
            answered += 1
            print("GET_PEERS", answered, flush=True)
        elif q == b"find_node":
            r[b"nodes"] = b""
        s.sendto(enc({b"t": m.get(b"t", b""), b"y": b"r", b"r": r}), addr)


if __name__ == "__main__":
    sys.exit(main())
