#!/usr/bin/python3
"""libtorrent (python3-libtorrent 2.0) with many torrents, for
`scripts/bench.sh many`.

  lt_many.py seed  --list FILE --save DIR --listen IP:PORT
      seeds every .torrent named in FILE (one path per line) from DIR;
      prints "SEEDING n=N seconds=S" once all are seeds, then seeds until
      killed.
  lt_many.py fetch --list FILE --save DIR --listen IP:PORT --peer IP:PORT
                   [--timeout SECS]
      downloads every .torrent named in FILE from the one peer, all at
      once; prints "DONE n=N seconds=S bytes=B" once every piece of every
      torrent is verified and exits 0, or "TIMEOUT ..." and exits 1.

Loopback only: DHT, LSD, UPnP, NAT-PMP and uTP are off; plaintext.
"""
import argparse
import sys
import time

import libtorrent as lt


def session(listen):
    ip = listen.rsplit(":", 1)[0]
    return lt.session({
        "listen_interfaces": listen,
        "outgoing_interfaces": ip,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "out_enc_policy": lt.enc_policy.disabled,
        "in_enc_policy": lt.enc_policy.enabled,
        # Every torrent active at once, however many.
        "active_downloads": -1,
        "active_seeds": -1,
        "active_limit": -1,
        "connections_limit": 4000,
        "alert_mask": lt.alert.category_t.error_notification,
        "user_agent": "btc-bench-libtorrent",
    })


def add_all(s, list_file, save):
    handles = []
    with open(list_file) as f:
        for line in f:
            t = line.strip()
            if not t:
                continue
            atp = lt.add_torrent_params()
            atp.ti = lt.torrent_info(t)
            atp.save_path = save
            handles.append(s.add_torrent(atp))
    return handles


def seed(args):
    start = time.time()
    s = session(args.listen)
    handles = add_all(s, args.list, args.save)
    for h in handles:
        h.force_recheck()
    while not all(h.status().is_seeding for h in handles):
        s.pop_alerts()
        time.sleep(0.2)
    print("SEEDING n=%d seconds=%.3f" % (len(handles), time.time() - start), flush=True)
    while True:
        s.pop_alerts()
        time.sleep(1)


def fetch(args):
    s = session(args.listen)
    ip, port = args.peer.rsplit(":", 1)
    start = time.time()
    handles = add_all(s, args.list, args.save)
    for h in handles:
        h.connect_peer((ip, int(port)))
    last_connect = time.time()
    while time.time() - start < args.timeout:
        s.pop_alerts()
        sts = [h.status() for h in handles]
        if all(st.is_seeding for st in sts):
            total = sum(h.torrent_file().total_size() for h in handles)
            print("DONE n=%d seconds=%.3f bytes=%d" % (len(handles), time.time() - start, total),
                  flush=True)
            s.pause()
            for h in handles:
                h.flush_cache()
            time.sleep(0.5)
            return 0
        if time.time() - last_connect > 3:
            for h, st in zip(handles, sts):
                if st.num_peers == 0 and not st.is_seeding:
                    h.connect_peer((ip, int(port)))
            last_connect = time.time()
        time.sleep(0.05)
    done = sum(1 for h in handles if h.status().is_seeding)
    print("TIMEOUT done=%d of %d" % (done, len(handles)), flush=True)
    return 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("seed")
    a.add_argument("--list", required=True)
    a.add_argument("--save", required=True)
    a.add_argument("--listen", required=True)
    b = sub.add_parser("fetch")
    b.add_argument("--list", required=True)
    b.add_argument("--save", required=True)
    b.add_argument("--listen", required=True)
    b.add_argument("--peer", required=True)
    b.add_argument("--timeout", type=float, default=300)
    args = p.parse_args()
    return {"seed": seed, "fetch": fetch}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
