#!/usr/bin/python3
"""An honest libtorrent (python3-libtorrent 2.0) leecher for `scripts/bench.sh`
(hostile and compare modes): downloads a .torrent from one peer and reports
how long it took.

  lt_leech.py --torrent T --save DIR --listen IP:PORT --peer IP:PORT
              [--timeout SECS] [--high-performance]

Prints "DONE seconds=S bytes=B" once every piece is verified and exits 0;
prints "TIMEOUT ..." and exits 1 after SECS. Polls every 50 ms. Loopback
only: DHT, LSD, UPnP, NAT-PMP and uTP are off (the session settings are
those of tests/integration/py/lt.py). --high-performance starts from
libtorrent's own high_performance_seed() settings pack (deeper request
queues, bigger disk queues and send buffers) and applies those on top.
"""
import argparse
import sys
import time

import libtorrent as lt


def session(listen, fast):
    ip = listen.rsplit(":", 1)[0]
    settings = lt.high_performance_seed() if fast else {}
    settings.update({
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
        "alert_mask": lt.alert.category_t.error_notification,
        "user_agent": "btc-bench-libtorrent",
    })
    return lt.session(settings)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--torrent", required=True)
    p.add_argument("--save", required=True)
    p.add_argument("--listen", required=True)
    p.add_argument("--peer", required=True)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--high-performance", action="store_true")
    a = p.parse_args()
    s = session(a.listen, a.high_performance)
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(a.torrent)
    atp.save_path = a.save
    h = s.add_torrent(atp)
    ip, port = a.peer.rsplit(":", 1)
    start = time.time()
    h.connect_peer((ip, int(port)))
    last_connect = start
    while time.time() - start < a.timeout:
        st = h.status()
        if st.is_seeding:
            el = time.time() - start
            print("DONE seconds=%.3f bytes=%d" % (el, st.total_wanted), flush=True)
            s.pause()
            h.flush_cache()
            time.sleep(0.3)
            return 0
        if time.time() - last_connect > 3 and st.num_peers == 0:
            h.connect_peer((ip, int(port)))
            last_connect = time.time()
        time.sleep(0.05)
    st = h.status()
    print("TIMEOUT progress=%.3f peers=%d" % (st.progress, st.num_peers), flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
