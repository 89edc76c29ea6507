#!/usr/bin/python3
"""libtorrent (python3-libtorrent, 2.0) driver for the btc integration tests.

  lt.py seed  --torrent T [--torrent T2 ...] --save DIR --listen IP:PORT
            [--tracker URL] [--upload-limit BYTES_PER_SEC]
            [--encryption default|require|plaintext] [--transport tcp|utp|both]
      checks the data in DIR, prints "SEEDING" once every torrent is a
      seed, then seeds
      until killed (stats every second); with --upload-limit, uploads at
      most that fast, loopback included (a slow seeder).
  lt.py fetch --magnet URI --save DIR --listen IP:PORT --peer IP:PORT
            [--timeout SECS] [--encryption ...] [--transport ...]
      fetches metadata and data from the magnet (and the given peer),
      prints "METADATA" when the info dict arrives and "DONE" once complete,
      then exits 0; exits 1 on timeout.
  lt.py create --path DIR --out T [--web-seed URL] [--piece-size N]
      makes a torrent of DIR the way libtorrent 2.0 does by default: a
      v1+v2 hybrid whose files are aligned by BEP 47 pad files.

Loopback only: DHT, LSD, UPnP and NAT-PMP are off.
"""
import argparse
import sys
import time

import libtorrent as lt


def log(*a):
    print(*a, flush=True)


# Encryption (MSE/PE) policies: "default" dials plaintext and accepts
# both; "require" forces RC4 both ways; "plaintext" speaks no MSE at all.
ENCRYPTION = {
    "default": {"out_enc_policy": lt.enc_policy.disabled,
                "in_enc_policy": lt.enc_policy.enabled},
    "require": {"out_enc_policy": lt.enc_policy.forced,
                "in_enc_policy": lt.enc_policy.forced,
                "allowed_enc_level": lt.enc_level.rc4,
                "prefer_rc4": True},
    "plaintext": {"out_enc_policy": lt.enc_policy.disabled,
                  "in_enc_policy": lt.enc_policy.disabled},
}


# Transports: "tcp" (the default: uTP off, so no dial waits for a uTP
# timeout), "utp" (TCP off both ways: incoming TCP is closed unread),
# "both".
TRANSPORT = {
    "tcp": {"enable_outgoing_utp": False, "enable_incoming_utp": False,
            "enable_outgoing_tcp": True, "enable_incoming_tcp": True},
    "utp": {"enable_outgoing_utp": True, "enable_incoming_utp": True,
            "enable_outgoing_tcp": False, "enable_incoming_tcp": False},
    "both": {"enable_outgoing_utp": True, "enable_incoming_utp": True,
             "enable_outgoing_tcp": True, "enable_incoming_tcp": True},
}


def session(listen, encryption="default", transport="tcp"):
    # outgoing_interfaces takes a bare address: "::1", not "[::1]".
    ip = listen.rsplit(":", 1)[0].strip("[]")
    s = lt.session({
        "listen_interfaces": listen,
        "outgoing_interfaces": ip,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "announce_to_all_trackers": True,
        "announce_to_all_tiers": True,
        # btc speaks plaintext BitTorrent.
        "out_enc_policy": lt.enc_policy.disabled,
        "in_enc_policy": lt.enc_policy.enabled,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.tracker_notification
        | lt.alert.category_t.peer_notification
        | lt.alert.category_t.connect_notification,
        "user_agent": "btc-test-libtorrent",
    })
    s.apply_settings(ENCRYPTION[encryption])
    s.apply_settings(TRANSPORT[transport])
    return s


def drain(s):
    for a in s.pop_alerts():
        if a.category() & (lt.alert.category_t.error_notification
                           | lt.alert.category_t.peer_notification
                           | lt.alert.category_t.connect_notification):
            log("alert: %.3f %s: %s" % (time.time(), type(a).__name__, a.message()))


def status_line(h):
    st = h.status()
    return "state=%s progress=%.3f peers=%d down=%d up=%d total_down=%d" % (
        st.state, st.progress, st.num_peers, st.download_rate, st.upload_rate,
        st.total_payload_download)


def enable_dht(s, nodes):
    """libtorrent's DHT on the listen interfaces, bootstrapped from `nodes`
    (HOST:PORT or [V6]:PORT) only, with the checks that drop loopback
    and same-address nodes turned off (every node of a test shares ::1)."""
    s.apply_settings({
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_prefer_verified_node_ids": False,
        "dht_ignore_dark_internet": False,
        "dht_enforce_node_id": False,
    })
    for n in nodes:
        host, port = n.rsplit(":", 1)
        s.add_dht_node((host.strip("[]"), int(port)))


def seed(args):
    s = session(args.listen, args.encryption, args.transport)
    if args.upload_limit:
        s.apply_settings({
            "upload_rate_limit": args.upload_limit,
            "ignore_limits_on_local_network": False,
        })
    handles = []
    for t in args.torrent:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(t)
        atp.save_path = args.save
        h = s.add_torrent(atp)
        for url in args.tracker or []:
            h.add_tracker({"url": url, "tier": 0})
        h.force_recheck()
        handles.append(h)
    if args.dht_node:
        enable_dht(s, args.dht_node)
    last_dht = 0.0
    announced = False
    seeding = False
    while True:
        drain(s)
        if not seeding and all(h.status().is_seeding for h in handles):
            seeding = True
            log("SEEDING", status_line(handles[0]))
        if seeding and not announced and args.tracker:
            for h in handles:
                h.force_reannounce()
            announced = True
        if seeding and args.dht_node and time.time() - last_dht > 5:
            # Announce again every few seconds: the first try may run
            # before the routing table holds the bootstrap node.
            for h in handles:
                h.force_dht_announce()
            last_dht = time.time()
        log(status_line(handles[0]))
        time.sleep(1 if seeding else 0.2)


def fetch(args):
    s = session(args.listen, args.encryption, args.transport)
    if args.torrent:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(args.torrent)
    else:
        atp = lt.parse_magnet_uri(args.magnet)
    atp.save_path = args.save
    h = s.add_torrent(atp)
    ip, port = args.peer.rsplit(":", 1)
    h.connect_peer((ip, int(port)))
    start = time.time()
    got_meta = False
    last_connect = start
    while time.time() - start < args.timeout:
        drain(s)
        st = h.status()
        if not got_meta and st.has_metadata:
            got_meta = True
            log("METADATA %.3f s" % (time.time() - start))
        if st.is_seeding or (got_meta and st.progress >= 1.0 and st.state == lt.torrent_status.seeding):
            log("DONE %.3f s" % (time.time() - start), status_line(h))
            # Let the files be flushed and closed.
            s.pause()
            h.flush_cache()
            time.sleep(0.5)
            return 0
        if time.time() - last_connect > 3 and st.num_peers == 0:
            h.connect_peer((ip, int(port)))
            last_connect = time.time()
        log(status_line(h))
        time.sleep(0.2)
    log("TIMEOUT", status_line(h))
    return 1


def create(args):
    import os
    fs = lt.file_storage()
    flags = lt.create_torrent.v2_only if args.v2_only else 0
    if args.symlinks:
        # BEP 47: symlinks stored as such (`attr` l, `symlink path`).
        flags |= lt.create_torrent.symlinks
        lt.add_files(fs, args.path, flags=flags)
    else:
        lt.add_files(fs, args.path)
    ct = lt.create_torrent(fs, args.piece_size, flags=flags)
    for url in args.web_seed or []:
        ct.add_url_seed(url)
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(args.path)))
    with open(args.out, "wb") as f:
        f.write(lt.bencode(ct.generate()))
    hashes = lt.torrent_info(args.out).info_hashes()
    log("CREATED", hashes.v2 if args.v2_only else hashes.v1)
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("seed")
    a.add_argument("--torrent", required=True, action="append")
    a.add_argument("--save", required=True)
    a.add_argument("--listen", required=True)
    a.add_argument("--tracker", action="append")
    a.add_argument("--upload-limit", type=int, default=0)
    a.add_argument("--dht-node", action="append",
                   help="enable the DHT, bootstrapped from this node")
    a.add_argument("--encryption", choices=sorted(ENCRYPTION), default="default")
    a.add_argument("--transport", choices=sorted(TRANSPORT), default="tcp")
    b = sub.add_parser("fetch")
    b.add_argument("--magnet")
    b.add_argument("--torrent", help="the .torrent instead of --magnet")
    b.add_argument("--save", required=True)
    b.add_argument("--listen", required=True)
    b.add_argument("--peer", required=True)
    b.add_argument("--timeout", type=float, default=120)
    b.add_argument("--encryption", choices=sorted(ENCRYPTION), default="default")
    b.add_argument("--transport", choices=sorted(TRANSPORT), default="tcp")
    c = sub.add_parser("create")
    c.add_argument("--path", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--web-seed", action="append")
    c.add_argument("--piece-size", type=int, default=32768)
    c.add_argument("--v2-only", action="store_true")
    c.add_argument("--symlinks", action="store_true")
    args = p.parse_args()
    return {"seed": seed, "fetch": fetch, "create": create}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
