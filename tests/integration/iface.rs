//! `--interface IFACE`, the kill-switch, in network namespaces: btc runs
//! in a "client" namespace with two links to the seeder's namespace (the
//! context's own): link A (`a0`, 10.1.0.0/24) and link B (`b0`,
//! 10.2.0.0/24). The seeder, its DHT node and an opentracker (HTTP and
//! UDP) listen on 10.99.0.1, an address on the seeder namespace's loopback
//! that the client reaches over either link: over B by the preferred route
//! (and the default route), over A by a second route of a worse metric. btc
//! is bound to A; an nftables counter in the client namespace counts every
//! packet sent out of B, which must stay 0 while A is taken down mid-
//! download and brought back, and the download completes byte-identical.
//! A `btc dht` node on 10.99.0.1 serves the DHT: the leecher's own IPv4
//! node must find the seeder through it, over A.
//! The trackers and the DHT bootstrap node are given by name, which
//! dnsmasq (on 10.99.0.1, the client's nameserver, also routed over B)
//! answers: btc must ask it over A.

use crate::util::*;
use std::fs;
use std::process::Stdio;

const MIB: u64 = 1024 * 1024;
/// The seeder's, its DHT node's and the tracker's address.
const SEED_IP: &str = "10.99.0.1";

/// The client namespace's two links, routes and the counter of link B.
struct TwoLinks {
    ns: Netns,
}

impl TwoLinks {
    fn new(ctx: &Ctx) -> TwoLinks {
        require_tool("nft");
        let seed_ns = ctx
            .netns
            .as_ref()
            .expect("a namespaced context")
            .name
            .clone();
        let ns = Netns::new();
        let c = ns.name.clone();
        let ip = |args: &[&str]| ns.ip(args);
        // No IPv6: its router solicitations and MLD reports are the
        // kernel's, not btc's, and would be counted on B.
        for k in ["all", "default"] {
            let ok = ns
                .command("sysctl")
                .args(["-qw", &format!("net.ipv6.conf.{k}.disable_ipv6=1")])
                .status()
                .unwrap()
                .success();
            assert!(ok, "sysctl disable_ipv6");
        }
        for (mine, theirs, net) in [("a0", "sa0", "10.1.0"), ("b0", "sb0", "10.2.0")] {
            ip(&[
                "-n", &c, "link", "add", mine, "type", "veth", "peer", "name", theirs, "netns",
                &seed_ns,
            ]);
            ip(&["-n", &c, "addr", "add", &format!("{net}.2/24"), "dev", mine]);
            ip(&["-n", &c, "link", "set", mine, "up"]);
            ip(&[
                "-n",
                &seed_ns,
                "addr",
                "add",
                &format!("{net}.1/24"),
                "dev",
                theirs,
            ]);
            ip(&["-n", &seed_ns, "link", "set", theirs, "up"]);
        }
        ip(&[
            "-n",
            &seed_ns,
            "addr",
            "add",
            &format!("{SEED_IP}/32"),
            "dev",
            "lo",
        ]);
        // B is the way the system would go: the better route to the seeder
        // and the default route.
        ip(&["-n", &c, "route", "add", "default", "via", "10.2.0.1"]);
        ip(&[
            "-n",
            &c,
            "route",
            "add",
            &format!("{SEED_IP}/32"),
            "via",
            "10.2.0.1",
            "metric",
            "10",
        ]);
        let links = TwoLinks { ns };
        links.route_a();
        let rules = "table inet btc_iface {\n  counter on_b { }\n  chain out {\n    \
                     type filter hook output priority 0; policy accept;\n    \
                     oifname \"b0\" counter name on_b drop\n  }\n}\n";
        let f = ctx.join("iface.nft");
        fs::write(&f, rules).unwrap();
        let out = links.ns.command("nft").arg("-f").arg(&f).output().unwrap();
        assert!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        links
    }

    /// The route to the seeder over A (the kernel drops it when A goes
    /// down).
    fn route_a(&self) {
        self.ns.ip(&[
            "-n",
            &self.ns.name,
            "route",
            "replace",
            &format!("{SEED_IP}/32"),
            "via",
            "10.1.0.1",
            "dev",
            "a0",
            "metric",
            "100",
        ]);
    }

    fn link_a(&self, state: &str) {
        self.ns
            .ip(&["-n", &self.ns.name, "link", "set", "a0", state]);
    }

    /// Packets btc's namespace sent out of link B.
    fn on_b(&self) -> u64 {
        let out = self
            .ns
            .command("nft")
            .args(["list", "counter", "inet", "btc_iface", "on_b"])
            .output()
            .unwrap();
        nft_packets(&String::from_utf8_lossy(&out.stdout))
    }
}

/// The `have` of the last `progress` line in `--json` output.
fn last_have(stdout: &str) -> u64 {
    stdout
        .lines()
        .rev()
        .filter(|l| l.contains("\"event\":\"progress\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["have"].as_u64())
        .unwrap_or(0)
}

#[test]
fn interface_kill_switch_blocks_and_resumes_without_leaving_by_another_link() {
    let ctx = Ctx::offline("iface-kill-switch", secs(240));
    require_tool("opentracker");
    let links = TwoLinks::new(&ctx);
    let size = 24 * MIB;
    let seed_dir = ctx.mkdir("seed");
    let root = Payload::single("bound.bin", size).write(&seed_dir, 4711);
    let torrent = ctx.join("bound.torrent");
    btc_create(&ctx, &root, &torrent, &[]);
    let hash = btc_info_hash(&ctx, s(&torrent));
    let tracker = Opentracker::start_at(&ctx, ctx.netns.as_ref(), SEED_IP, &[&hash]);
    let http = format!("http://{SEED_IP}:{}/announce", tracker.port);
    let udp = format!("udp://{SEED_IP}:{}/announce", tracker.port);
    let dns = start_dnsmasq(&ctx);
    fs::write(
        std::path::Path::new("/etc/netns")
            .join(&links.ns.name)
            .join("resolv.conf"),
        format!("nameserver {SEED_IP}\noptions timeout:1 attempts:1\n"),
    )
    .unwrap();
    let http_name = format!("http://tracker.test:{}/announce", tracker.port);
    let udp_name = format!("udp://tracker.test:{}/announce", tracker.port);
    // A DHT node that both bootstrap from: the seeder announces itself
    // there, the leecher's own node (in mainline's place) finds it over A.
    let dht_port = free_port();
    let _dht_node = start_btc_dht_on(&ctx, SEED_IP, dht_port);
    let dht_seed = format!("{SEED_IP}:{dht_port}");
    let seed_port = free_port();
    let _seeder = start_btc_seeder(
        &ctx,
        "seeder",
        &seed_dir,
        s(&torrent),
        seed_port,
        &[
            "--bind",
            SEED_IP,
            "--no-lsd",
            "--tracker",
            &http,
            "--tracker",
            &udp,
            "--dht-bootstrap",
            &dht_seed,
        ],
    );
    let dht = format!("dht.test:{dht_port}");
    let out = ctx.mkdir("leech");
    let args = [
        "-o",
        s(&out),
        s(&torrent),
        "--interface",
        "a0",
        "--json",
        // Debug lines say what the DHT lookups found.
        "-vv",
        "--tracker",
        &http_name,
        "--tracker",
        &udp_name,
        "--dht-bootstrap",
        &dht,
        "--download-limit",
        "2M",
        "--port",
        "0",
    ];
    let mut p = ctx.spawn("leech", ctx.btc_in(&links.ns, &args));
    // Mid-download: a quarter in, at 2 MiB/s.
    let mid = wait_for(secs(60), || {
        last_have(&p.stdout()) >= size / 4 || !p.is_running()
    });
    assert!(mid && p.is_running(), "no progress over A\n{}", p.tails());
    assert_eq!(
        links.on_b(),
        0,
        "sent out of B before the cut\n{}",
        p.tails()
    );

    links.link_a("down");
    p.wait_output("\"state\":\"blocked\"", secs(10));
    p.wait_output("\"blocked\":true", secs(10));
    let have_cut = last_have(&p.stdout());
    std::thread::sleep(secs(5));
    assert_eq!(
        links.on_b(),
        0,
        "sent out of B while A was down\n{}",
        p.tails()
    );
    assert!(p.is_running(), "a blocked run goes on\n{}", p.tails());
    assert!(have_cut < size, "the cut came too late to test anything");

    links.link_a("up");
    links.route_a();
    p.wait_output("\"state\":\"up\"", secs(15));
    p.wait_output("\"event\":\"seeding\"", secs(120));
    assert_same_tree(&seed_dir, &out);
    let stdout = p.stdout();
    let events: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("\"event\":\"interface\""))
        .collect();
    assert_eq!(events.len(), 2, "one event per change: {events:?}");
    assert!(events[0].contains("\"name\":\"a0\""), "{events:?}");
    // The tracker heard our completion, over A (B counts nothing).
    let magnet = format!("magnet:?xt=urn:btih:{hash}&tr={http}&tr={udp}");
    let mut scraped = String::new();
    let seen = wait_for(secs(60), || {
        scraped = ctx.run_btc(&["info", "--scrape", &magnet], secs(30)).stdout;
        scraped.matches(": 2 seeders").count() == 2
    });
    assert!(seen, "the tracker should count us as a seeder:\n{scraped}");
    // The DHT, on a device-bound socket, found the seeder.
    let found = wait_for(secs(30), || {
        p.stderr()
            .lines()
            .any(|l| l.contains("dht lookup done") && !l.contains("peers=0"))
    });
    assert!(
        found,
        "the DHT should find the seeder over A\n{}",
        p.tails()
    );
    // The names were asked over A (from A's address), once per tracker
    // at least.
    let asked = dns.output();
    assert!(
        asked.contains("query[A] tracker.test from 10.1.0.2"),
        "dnsmasq should have heard us over A:\n{asked}"
    );
    assert!(
        asked.contains("query[A] dht.test from 10.1.0.2"),
        "the DHT bootstrap name too:\n{asked}"
    );
    assert!(!asked.contains("from 10.2.0.2"), "{asked}");
    // Stopping announces `stopped`: over A too.
    p.terminate(secs(10));
    assert_eq!(links.on_b(), 0, "sent out of B\n{}", p.tails());
    // The counter does count: a datagram the system routes over B is seen.
    let _ = links
        .ns
        .command("bash")
        .args(["-c", &format!("echo stray >/dev/udp/{SEED_IP}/9")])
        .stderr(Stdio::null())
        .status();
    assert!(
        links.on_b() > 0,
        "the counting rule must see a stray packet"
    );
}

/// dnsmasq on [`SEED_IP`]:53 in the seeder's namespace, answering
/// `tracker.test` and `dht.test` with [`SEED_IP`] and logging every query to stderr.
fn start_dnsmasq(ctx: &Ctx) -> Proc {
    require_tool("dnsmasq");
    let mut c = ctx.command("dnsmasq");
    c.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--pid-file=",
        "--bind-interfaces",
        &format!("--listen-address={SEED_IP}"),
        "--log-queries",
        "--log-facility=-",
        &format!("--address=/tracker.test/{SEED_IP}"),
        &format!("--address=/dht.test/{SEED_IP}"),
    ]);
    let mut p = ctx.spawn("dnsmasq", c);
    let up = wait_for(secs(10), || {
        p.output().contains("started") || !p.is_running()
    });
    assert!(up && p.is_running(), "dnsmasq did not start\n{}", p.tails());
    p
}

/// A device that does not exist is one line and a failure, before
/// anything is sent; so is a name that is not a device name.
#[test]
fn a_missing_interface_is_one_line_and_a_failure() {
    let ctx = Ctx::offline("iface-missing", secs(30));
    let magnet = "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567";
    for name in ["btcnosuch9", "../lo"] {
        let out = ctx.run_btc(
            &["--interface", name, "-o", s(ctx.path()), magnet],
            secs(20),
        );
        assert!(!out.ok(), "{name}: must fail");
        assert_eq!(
            out.stderr.trim_end(),
            format!("error: --interface {name}: no such network interface"),
            "{name}"
        );
    }
}
