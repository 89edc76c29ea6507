#!/usr/bin/python3
"""The client of `scripts/bench.sh rpc`: Transmission RPC calls to a
`btc daemon` over one keep-alive HTTP/1.1 connection (the session-id
handshake done once). Standard library only.

  rpc_bench.py add --rpc ADDR --list FILE
      torrent-add of every .torrent path in FILE (one per line, by
      `filename`); prints "ADDED n=N seconds=S".
  rpc_bench.py wait --rpc ADDR --n N [--timeout S]
      polls torrent-get (ids all) every 0.2 s until N torrents are listed
      and all seed (status 6); prints "SEEDING n=N seconds=S", exits 1 on
      timeout.
  rpc_bench.py latency --rpc ADDR --requests R
      R torrent-get calls, one after the other, with the fields
      `transmission-remote -l` asks for and no `ids` (all torrents);
      prints "LATENCY n=R torrents=T bytes=B p50=MS p90=MS p99=MS max=MS
      mean=MS" (milliseconds, from the request sent to the reply's last
      byte read; the JSON is parsed after, out of the timing).
"""
import argparse
import http.client
import json
import sys
import time

# What transmission-remote 3.00 asks for with -l (captured from its request).
LIST_FIELDS = [
    "error", "errorString", "eta", "id", "isFinished", "leftUntilDone", "name",
    "peersGettingFromUs", "peersSendingToUs", "rateDownload", "rateUpload",
    "sizeWhenDone", "status", "uploadRatio",
]
SEEDING = 6


class Rpc:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.session = ""

    def call(self, method, arguments=None):
        """Returns (reply object, reply bytes)."""
        data = self.raw(method, arguments)
        return json.loads(data), len(data)

    def raw(self, method, arguments=None):
        """Returns the reply's body, unparsed."""
        body = json.dumps({"method": method, "arguments": arguments or {}})
        for _ in range(2):
            self.conn.request("POST", "/transmission/rpc", body=body, headers={
                "X-Transmission-Session-Id": self.session,
                "Content-Type": "application/json",
            })
            r = self.conn.getresponse()
            data = r.read()
            if r.status == 409:
                self.session = r.getheader("X-Transmission-Session-Id")
                continue
            if r.status != 200:
                sys.exit("error: %s: HTTP %d %r" % (method, r.status, data[:200]))
            return data
        sys.exit("error: %s: 409 twice" % method)


def add(args):
    rpc = Rpc(args.rpc)
    t0 = time.monotonic()
    n = 0
    with open(args.list) as f:
        for line in f:
            path = line.strip()
            if not path:
                continue
            reply, _ = rpc.call("torrent-add", {"filename": path})
            if reply.get("result") != "success":
                sys.exit("error: torrent-add %s: %s" % (path, reply.get("result")))
            n += 1
    print("ADDED n=%d seconds=%.2f" % (n, time.monotonic() - t0), flush=True)


def wait(args):
    rpc = Rpc(args.rpc)
    t0 = time.monotonic()
    while True:
        reply, _ = rpc.call("torrent-get", {"fields": ["id", "status"]})
        ts = reply["arguments"]["torrents"]
        seeding = sum(1 for t in ts if t["status"] == SEEDING)
        if len(ts) >= args.n and seeding == len(ts):
            print("SEEDING n=%d seconds=%.2f" % (seeding, time.monotonic() - t0), flush=True)
            return
        if time.monotonic() - t0 > args.timeout:
            sys.exit("error: %d of %d seeding after %d s" % (seeding, args.n, args.timeout))
        time.sleep(0.2)


def latency(args):
    rpc = Rpc(args.rpc)
    rpc.call("session-get")  # the handshake, out of the measurement
    times = []
    torrents = size = 0
    for _ in range(args.requests):
        t0 = time.perf_counter()
        data = rpc.raw("torrent-get", {"fields": LIST_FIELDS})
        times.append((time.perf_counter() - t0) * 1000)
        # Parsed out of the timing (Python takes ~5 ms for 1,000 torrents).
        reply, size = json.loads(data), len(data)
        if reply.get("result") != "success":
            sys.exit("error: torrent-get: %s" % reply.get("result"))
        torrents = len(reply["arguments"]["torrents"])
    times.sort()

    def pct(p):
        return times[min(len(times) - 1, len(times) * p // 100)]

    print("LATENCY n=%d torrents=%d bytes=%d p50=%.2f p90=%.2f p99=%.2f max=%.2f mean=%.2f" % (
        len(times), torrents, size, pct(50), pct(90), pct(99), times[-1],
        sum(times) / len(times)), flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add")
    a.add_argument("--rpc", required=True)
    a.add_argument("--list", required=True)
    w = sub.add_parser("wait")
    w.add_argument("--rpc", required=True)
    w.add_argument("--n", type=int, required=True)
    w.add_argument("--timeout", type=int, default=600)
    lat = sub.add_parser("latency")
    lat.add_argument("--rpc", required=True)
    lat.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    {"add": add, "wait": wait, "latency": latency}[args.cmd](args)


if __name__ == "__main__":
    main()
