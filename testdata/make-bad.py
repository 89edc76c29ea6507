#!/usr/bin/env python3
"""Writes the hostile torrents in testdata/torrents/bad/.

Hand-built bencode, each file broken in exactly one way, so the tests can
check that the parser names that one problem. Deterministic: rerunning
rewrites identical bytes. Usage: python3 testdata/make-bad.py
"""
import hashlib
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "torrents", "bad")


def benc(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(benc(x) for x in v) + b"e"
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, x) for k, x in v.items())
        return b"d" + b"".join(benc(k) + benc(x) for k, x in items) + b"e"
    raise TypeError(type(v))


def pieces(n):
    return b"".join(hashlib.sha1(b"piece %d" % i).digest() for i in range(n))


def multi(files, piece_length=16384, n=None, name="folder"):
    total = sum(length for _, length in files)
    if n is None:
        n = max(1, -(-total // piece_length))
    return {
        "announce": "http://tracker.example/announce",
        "info": {
            "name": name,
            "piece length": piece_length,
            "pieces": pieces(n),
            "files": [{"length": length, "path": path} for path, length in files],
        },
    }


def single(length=100, piece_length=16384, n=1, name="file.bin", pieces_bytes=None):
    return {
        "announce": "http://tracker.example/announce",
        "info": {
            "name": name,
            "length": length,
            "piece length": piece_length,
            "pieces": pieces(n) if pieces_bytes is None else pieces_bytes,
        },
    }


def write(name, data):
    if not isinstance(data, bytes):
        data = benc(data)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


os.makedirs(OUT, exist_ok=True)
good = benc(single())
write("truncated.torrent", good[: len(good) // 2])
write("not-bencode.torrent", b"<html><body>404 Not Found</body></html>\n")
write("pieces-not-multiple-of-20.torrent", single(pieces_bytes=pieces(1) + b"abc"))
write("dotdot-path.torrent", multi([(["a.txt"], 10), (["..", "escape.txt"], 10)]))
write("absolute-path.torrent", multi([(["/etc/passwd"], 10)]))
write("empty-path-component.torrent", multi([(["sub", "", "a.txt"], 10)]))
write("empty-path-list.torrent", multi([([], 10)]))
write("piece-length-zero.torrent", single(piece_length=0))
write("piece-length-huge.torrent", single(piece_length=1 << 30))
# 128 MiB: over the 64 MiB cap (it passed the old 256 MiB one).
write("piece-length-128mib.torrent", single(piece_length=128 << 20))
write("zero-total-length.torrent", multi([(["a"], 0), (["b"], 0)], n=0))
write("duplicate-paths.torrent", multi([(["a.txt"], 10), (["a.txt"], 20)]))
write("file-and-folder.torrent", multi([(["a"], 10), (["a", "b.txt"], 20)]))
write("piece-count-mismatch.torrent", single(length=40000, n=2))
write("negative-length.torrent", single(length=-5))
write("dotdot-name.torrent", single(name=".."))
both = single()
both["info"]["files"] = [{"length": 100, "path": ["x"]}]
write("both-length-and-files.torrent", both)
neither = single()
del neither["info"]["length"]
write("neither-length-nor-files.torrent", neither)
write("missing-info.torrent", {"announce": "http://tracker.example/announce"})
# 1000 nested lists inside the info dict: must be refused, not overflow the stack.
deep = benc(single())
deep = deep.replace(b"4:infod", b"4:infod1:_" + b"l" * 1000 + b"e" * 1000, 1)
write("deep-nesting.torrent", deep)
