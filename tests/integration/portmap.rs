//! Port mapping against a real router: Debian's miniupnpd (nftables
//! backend) in a namespace of its own between a LAN namespace, where a btc
//! seeds, and a WAN namespace, where a btc downloads from the router's
//! external address through the mapped ports (once over TCP, once over
//! uTP). Four routers: UPnP IGDv2, UPnP IGDv1, PCP (miniupnpd's
//! `enable_natpmp` serves PCP and NAT-PMP), and NAT-PMP alone (the router
//! drops PCP's version-2 packets). Each checks the mapping while btc runs,
//! the `port_mapping` JSON events, and that no mapping is left once btc
//! exits on SIGINT.
//!
//! Also here: the check that nothing in `tests/` or `scripts/` starts a
//! btc outside a namespace of its own with port mapping on.

use crate::util::*;
use std::path::Path;
use std::process::Command;

/// The router's WAN address. 11.0.0.0/8 is neither private nor reserved,
/// so miniupnpd takes it for a public address (it refuses to map on a
/// private one); it never leaves the test's namespaces.
const ROUTER_WAN: &str = "11.0.0.1";
const WAN_PEER: &str = "11.0.0.2/24";
const ROUTER_LAN: &str = "10.0.0.1";
const LAN_HOST: &str = "10.0.0.2/24";
/// The seeder's listen port (its own namespace: always free).
const PORT: u16 = 6881;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    IgdV2,
    IgdV1,
    Pcp,
    NatPmp,
}

/// Three namespaces (LAN, router, WAN) joined by veth pairs; the
/// namespaces (and with them the links) go when this drops.
struct Topology {
    lan: Netns,
    router: Netns,
    wan: Netns,
}

impl Topology {
    /// With `default_route` false the LAN reaches the WAN by a route of
    /// its own, not a default route: no gateway to find in
    /// `/proc/net/route` (so btc needs `--gateway`).
    fn new(default_route: bool) -> Topology {
        let t = Topology {
            lan: Netns::new(),
            router: Netns::new(),
            wan: Netns::new(),
        };
        let (l, r, w) = (&t.lan.name, &t.router.name, &t.wan.name);
        // Links made inside the namespaces: names need only be unique there.
        t.lan.ip(&[
            "link", "add", "lan0", "netns", l, "type", "veth", "peer", "name", "lan0", "netns", r,
        ]);
        t.router.ip(&[
            "link", "add", "wan0", "netns", r, "type", "veth", "peer", "name", "wan0", "netns", w,
        ]);
        let router_lan = format!("{ROUTER_LAN}/24");
        let router_wan = format!("{ROUTER_WAN}/24");
        for (ns, dev, addr) in [
            (l, "lan0", LAN_HOST),
            (r, "lan0", router_lan.as_str()),
            (r, "wan0", router_wan.as_str()),
            (w, "wan0", WAN_PEER),
        ] {
            t.lan.ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            t.lan.ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        let to = if default_route {
            "default"
        } else {
            "11.0.0.0/24"
        };
        t.lan.ip(&["-n", l, "route", "add", to, "via", ROUTER_LAN]);
        let fwd = t
            .router
            .command("sysctl")
            .args(["-qw", "net.ipv4.ip_forward=1"])
            .status()
            .unwrap();
        assert!(fwd.success(), "ip forwarding in the router namespace");
        t
    }

    /// `nft` in the router namespace; its stdout.
    fn nft(&self, args: &[&str], stdin: Option<&str>) -> String {
        nft_in(&self.router, args, stdin)
    }

    /// The router's port forwards (miniupnpd's DNAT rules).
    fn forwards(&self) -> Vec<String> {
        self.nft(
            &["list", "chain", "inet", "btc_nat", "prerouting_miniupnpd"],
            None,
        )
        .lines()
        .filter(|l| l.contains("dnat"))
        .map(|l| l.trim().to_string())
        .collect()
    }
}

/// `nft ARGS` (with `stdin`) in `ns`; its stdout.
fn nft_in(ns: &Netns, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut c = ns.command("nft");
    c.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("nft (nftables) is installed");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The router's firewall and NAT: forwarding dropped but for the LAN's own
/// connections and what miniupnpd opens in its chain, masquerade out of
/// the WAN, and the chains miniupnpd adds its rules into (the names its
/// configuration below gives).
const RULESET: &str = r#"
table inet btc_filter {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "wan0" accept
    jump miniupnpd
  }
  chain miniupnpd {
  }
}
table inet btc_nat {
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
    oifname "wan0" masquerade
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
}
"#;

/// For the NAT-PMP-only router: drop PCP (version 2) requests, so only
/// NAT-PMP answers (the first payload byte is the version).
const NO_PCP: &str = r#"
table inet btc_no_pcp {
  chain input {
    type filter hook input priority 0; policy accept;
    udp dport 5351 @th,64,8 2 drop
  }
}
"#;

/// `system_uptime`: the epoch counts from the machine's boot (as on a
/// router, where they are the same); else from miniupnpd's start.
fn miniupnpd_conf(mode: Mode, dir: &Path, system_uptime: bool) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let upnp = matches!(mode, Mode::IgdV1 | Mode::IgdV2);
    format!(
        "ext_ifname=wan0\nlistening_ip=lan0\nhttp_port=0\n\
         enable_natpmp={}\nenable_upnp={}\nforce_igd_desc_v1={}\n\
         secure_mode=yes\nsystem_uptime={}\nlease_file={}\n\
         upnp_table_name=btc_filter\nupnp_nat_table_name=btc_nat\n\
         upnp_forward_chain=miniupnpd\nupnp_nat_chain=prerouting_miniupnpd\n\
         upnp_nat_postrouting_chain=postrouting_miniupnpd\n\
         uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\n\
         allow 1024-65535 10.0.0.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
        yes(!upnp),
        yes(upnp),
        yes(mode == Mode::IgdV1),
        yes(system_uptime),
        dir.join("miniupnpd.leases").display(),
    )
}

/// Starts miniupnpd in the router namespace, in the foreground (`-d`),
/// and waits until it listens.
fn start_router(ctx: &Ctx, topo: &Topology, mode: Mode) -> Proc {
    start_router_with(ctx, topo, mode, true)
}

/// [`start_router`], with its epoch counting from `system_uptime`.
fn start_router_with(ctx: &Ctx, topo: &Topology, mode: Mode, system_uptime: bool) -> Proc {
    require_tool("miniupnpd");
    topo.nft(&["-f", "-"], Some(RULESET));
    if mode == Mode::NatPmp {
        topo.nft(&["-f", "-"], Some(NO_PCP));
    }
    let dir = ctx.mkdir("router");
    let conf = dir.join("miniupnpd.conf");
    std::fs::write(&conf, miniupnpd_conf(mode, &dir, system_uptime)).unwrap();
    let mut c = topo.router.command("miniupnpd");
    c.args(["-4", "-d", "-f", s(&conf), "-P", s(&dir.join("pid"))]);
    let mut router = ctx.spawn("miniupnpd", c);
    let ready = match mode {
        Mode::IgdV1 | Mode::IgdV2 => "HTTP listening",
        Mode::Pcp | Mode::NatPmp => "Listening for NAT-PMP/PCP",
    };
    router.wait_output(ready, secs(10));
    router
}

/// The `port_mapping` events among a process's JSON lines.
fn mapping_events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "port_mapping")
        .collect()
}

/// Downloads the torrent from the WAN namespace through `external`, over
/// `--no-utp` (TCP) or `--no-tcp` (uTP).
fn download_from_wan(ctx: &Ctx, topo: &Topology, t: &Path, external: &str, only: &str) {
    let out = ctx.mkdir(format!("out{only}"));
    let state = ctx.join(format!("state-wan{only}"));
    let args = [
        "-o",
        s(&out),
        s(t),
        "--peer",
        external,
        only,
        "--no-seed",
        "--no-dht",
        "--no-lsd",
        "--no-port-mapping",
        "-q",
        "--state-dir",
        s(&state),
    ];
    let mut leecher = ctx.spawn("btc-wan", ctx.btc_in(&topo.wan, &args));
    leecher.expect_success(secs(30));
}

/// One test's network: the three namespaces, the router, and a 1 MiB
/// torrent to seed from the LAN. Fields drop in order: the router before
/// its namespaces, the context (and its folder) last.
struct Lab {
    router: Proc,
    topo: Topology,
    root: std::path::PathBuf,
    seed_dir: std::path::PathBuf,
    torrent: std::path::PathBuf,
    ctx: Ctx,
}

impl Lab {
    fn new(name: &str, mode: Mode, seed: u64) -> Lab {
        let ctx = Ctx::new(name, secs(75));
        // The NAT-PMP router is named by --gateway, as a VPN's would be.
        let topo = Topology::new(mode != Mode::NatPmp);
        let router = start_router(&ctx, &topo, mode);
        let seed_dir = ctx.mkdir("seed");
        let root = Payload::single("pm.bin", 1 << 20).write(&seed_dir, seed);
        let torrent = ctx.join("pm.torrent");
        btc_create(&ctx, &root, &torrent, &[]);
        Lab {
            router,
            topo,
            root,
            seed_dir,
            torrent,
            ctx,
        }
    }

    /// Starts the seeding btc in the LAN on [`PORT`] (with `extra`
    /// arguments) and waits for `mappings` `port_mapping` events.
    fn seed(&self, extra: &[&str], mappings: usize) -> (Proc, Vec<serde_json::Value>) {
        let port = PORT.to_string();
        let state = self.ctx.join("state-lan");
        let mut args = vec![
            "-o",
            s(&self.seed_dir),
            s(&self.torrent),
            "--port",
            &port,
            "--no-lsd",
            "--json",
            "-v",
            "--state-dir",
            s(&state),
        ];
        args.extend_from_slice(extra);
        let t0 = std::time::Instant::now();
        let mut seeder = self
            .ctx
            .spawn("btc-lan", self.ctx.btc_in(&self.topo.lan, &args));
        self.ctx.wait_for("the port mappings", secs(30), || {
            mapping_events(&seeder.stdout()).len() >= mappings || !seeder.is_running()
        });
        let events = mapping_events(&seeder.stdout());
        eprintln!(
            "[{}] mapped after {:?}: {events:?}",
            self.ctx.name,
            t0.elapsed()
        );
        (seeder, events)
    }

    /// SIGINT to the seeder, which must exit within 15 s.
    fn stop(&self, seeder: &mut Proc) {
        let t0 = std::time::Instant::now();
        signal(seeder.pid(), SIGINT);
        assert!(
            seeder.wait_timeout(secs(15)).is_some(),
            "btc did not exit on SIGINT\n{}",
            seeder.tails()
        );
        eprintln!("[{}] exited {:?} after SIGINT", self.ctx.name, t0.elapsed());
    }
}

fn port_mapping_through(mode: Mode, name: &str) {
    let lab = Lab::new(name, mode, 23);
    let (ctx, topo) = (&lab.ctx, &lab.topo);
    let mut args = vec!["--no-dht"];
    if mode == Mode::NatPmp {
        args.extend(["--gateway", ROUTER_LAN]);
    }
    let (mut seeder, events) = lab.seed(&args, 2);
    let protocol = match mode {
        Mode::IgdV1 | Mode::IgdV2 => "upnp",
        Mode::Pcp => "pcp",
        Mode::NatPmp => "natpmp",
    };
    let mut transports: Vec<&str> = events
        .iter()
        .map(|e| {
            assert!(e.get("error").is_none(), "{e}\n{}", seeder.tails());
            assert_eq!(e["protocol"], protocol, "{e}");
            assert_eq!(e["internal"], PORT, "{e}");
            assert_eq!(e["external"], PORT, "the same port was free: {e}");
            assert_eq!(e["external_ip"], ROUTER_WAN, "{e}");
            assert!(e["lifetime"].as_u64().is_some(), "{e}");
            e["transport"].as_str().unwrap()
        })
        .collect();
    transports.sort();
    assert_eq!(transports, ["tcp", "udp"], "{events:?}");

    // The router forwards both while btc runs.
    let forwards = topo.forwards();
    assert_eq!(forwards.len(), 2, "{forwards:?}");
    for f in &forwards {
        assert!(
            f.contains(&format!("dport {PORT} dnat ip to 10.0.0.2:{PORT}")),
            "{f}"
        );
    }
    if matches!(mode, Mode::IgdV1 | Mode::IgdV2) {
        // As a UPnP client on the LAN sees them, with btc's description.
        let mut c = topo.lan.command("upnpc");
        c.arg("-l");
        let listed = ctx.run("upnpc", c, secs(15)).stdout;
        assert_eq!(listed.matches("'btc'").count(), 2, "{listed}");
        let v = if mode == Mode::IgdV2 { 2 } else { 1 };
        let log = lab.router.stderr();
        assert!(
            log.contains(&format!("WANIPConnection:{v}#AddPortMapping")),
            "btc used the IGDv{v} service:\n{log}"
        );
    }

    // A peer on the internet downloads through the mapped ports.
    let external = format!("{ROUTER_WAN}:{PORT}");
    let t = &lab.torrent;
    download_from_wan(ctx, topo, t, &external, "--no-utp");
    download_from_wan(ctx, topo, t, &external, "--no-tcp");
    assert_same_file(&lab.root, &ctx.join("out--no-utp/pm.bin"));
    assert_same_file(&lab.root, &ctx.join("out--no-tcp/pm.bin"));

    // SIGINT: every mapping is deleted before btc exits.
    lab.stop(&mut seeder);
    let left = topo.forwards();
    assert!(
        left.is_empty(),
        "mappings left after exit: {left:?}\n{}",
        seeder.tails()
    );
    let err = seeder.stderr();
    assert_eq!(err.matches("port mapping: deleted").count(), 2, "{err}");
    if matches!(mode, Mode::IgdV1 | Mode::IgdV2) {
        assert!(lab.router.stderr().contains("#DeletePortMapping"));
    }
}

#[test]
fn port_mapping_upnp_igd_v2() {
    port_mapping_through(Mode::IgdV2, "portmap-igd2");
}

#[test]
fn port_mapping_upnp_igd_v1() {
    port_mapping_through(Mode::IgdV1, "portmap-igd1");
}

#[test]
fn port_mapping_pcp() {
    port_mapping_through(Mode::Pcp, "portmap-pcp");
}

#[test]
fn port_mapping_nat_pmp() {
    port_mapping_through(Mode::NatPmp, "portmap-natpmp");
}

/// The router cannot give the listen port's number (another LAN client
/// holds it): btc takes the port the router picks, and announces that
/// one, so a WAN peer that knows btc only from the tracker reaches it.
/// The DHT's port is mapped too.
#[test]
fn port_mapping_takes_another_port_and_announces_it() {
    let lab = Lab::new("portmap-other-port", Mode::Pcp, 29);
    let (ctx, topo) = (&lab.ctx, &lab.topo);
    require_tool("natpmpc");
    for transport in ["tcp", "udp"] {
        let mut c = topo.lan.command("natpmpc");
        c.args(["-g", ROUTER_LAN, "-a", "6881", "7000", transport, "600"]);
        ctx.run("natpmpc", c, secs(15)).assert_ok("natpmpc");
    }
    assert_eq!(topo.forwards().len(), 2);

    let hash = btc_info_hash(ctx, s(&lab.torrent));
    let wan_ip = WAN_PEER.split('/').next().unwrap();
    let tracker = Opentracker::start_at(ctx, Some(&topo.wan), wan_ip, &[&hash]);
    let announce = format!("http://{wan_ip}:{}/announce", tracker.port);
    // DHT on (its bootstrap node a silent WAN address): its port is mapped.
    let bootstrap = format!("{wan_ip}:9");
    let (mut seeder, events) = lab.seed(
        &["--tracker", &announce, "--dht-bootstrap", &bootstrap, "-v"],
        3,
    );
    let find = |transport: &str, internal: u16| {
        events
            .iter()
            .find(|e| e["transport"] == transport && e["internal"] == internal)
            .unwrap_or_else(|| panic!("no {transport} {internal} in {events:?}"))
            .clone()
    };
    let tcp = find("tcp", PORT);
    let external = tcp["external"].as_u64().unwrap();
    assert_ne!(external, u64::from(PORT), "6881 is taken: {tcp}");
    let udp = find("udp", PORT)["external"].as_u64().unwrap();
    assert_ne!(udp, u64::from(PORT));
    // The DHT's port: its number may be the one the router gave uTP's
    // (miniupnpd takes the next free one), so it gets another.
    let dht = find("udp", PORT + 1)["external"].as_u64().unwrap();
    assert_ne!(dht, udp, "{events:?}");
    assert_eq!(topo.forwards().len(), 5, "{:?}", topo.forwards());
    // The seeder re-announces at once with the external port; the WAN
    // peer must ask the tracker after that announce has landed, or it
    // hears of the internal port and waits out the tracker's interval
    // (regression: failed once in a full run, where the two raced).
    let told = format!("port={external}");
    ctx.wait_for("the announce of the external port", secs(15), || {
        seeder
            .stderr()
            .lines()
            .any(|l| l.contains("announced") && l.contains(&told))
    });

    // The WAN peer has nothing but the tracker, and only it may connect:
    // the seeder, which hears of it from the tracker too, must not dial it
    // first (its WAN host drops what comes from the router to its port).
    let leech_port = "7777";
    let rules = format!(
        "table inet btc_wan {{\n chain input {{\n type filter hook input priority 0; policy accept;\n \
         ip saddr {ROUTER_WAN} tcp dport {leech_port} drop\n \
         ip saddr {ROUTER_WAN} udp dport {leech_port} drop\n }}\n}}\n"
    );
    nft_in(&topo.wan, &["-f", "-"], Some(&rules));
    let out = ctx.mkdir("out");
    let wan_state = ctx.join("state-wan");
    let args = [
        "-o",
        s(&out),
        s(&lab.torrent),
        "--tracker",
        &announce,
        "--no-seed",
        "--no-dht",
        "--no-lsd",
        "--no-port-mapping",
        "--port",
        leech_port,
        "-v",
        "--state-dir",
        s(&wan_state),
    ];
    let mut leecher = ctx.spawn("btc-wan", ctx.btc_in(&topo.wan, &args));
    leecher.expect_success(secs(30));
    assert_same_file(&lab.root, &out.join("pm.bin"));
    let log = leecher.stderr();
    assert!(
        log.contains(&format!("{ROUTER_WAN}:{external}")),
        "the tracker gave the external port:\n{log}"
    );

    lab.stop(&mut seeder);
    let left = topo.forwards();
    assert_eq!(left.len(), 2, "only natpmpc's are left: {left:?}");
    assert!(left.iter().all(|f| f.contains("10.0.0.2:7000")), "{left:?}");
}

/// The `"$BTC"` runs in a shell script that would map ports: each command
/// (continuation lines joined) that starts btc for a download or seed
/// without `--no-port-mapping`. Scripts run btc on the host's network,
/// never in a namespace of their own.
fn scripts_without_the_flag(text: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.starts_with('#') && !t.starts_with("echo") && !t.starts_with('[')
        })
        .filter_map(|l| {
            let (_, after) = l.split_once("\"$BTC\"")?;
            let next = after.split_whitespace().next().unwrap_or("");
            let sub = ["create", "info", "dht", "completions", "man"].contains(&next);
            (!sub && !l.contains("--no-port-mapping")).then(|| l.trim().to_string())
        })
        .collect()
}

/// Nothing in `tests/` or `scripts/` starts btc where it would probe a
/// network that is not the test's own: every process a test starts goes
/// through `Ctx::spawn`, whose guard refuses a btc outside a test
/// namespace without `--no-port-mapping` (checked here on synthetic
/// commands, and that no test builds a btc command around it); every
/// script's btc runs carry the flag.
#[test]
fn port_mapping_is_off_outside_test_namespaces() {
    // The guard catches a missing flag, and only that.
    let guard = |program: &str, args: &[&str]| {
        let mut c = Command::new(program);
        c.args(args);
        port_mapping_guard(&c).is_ok()
    };
    assert!(!guard(BTC, &["-o", "/tmp/x", "t.torrent"]));
    assert!(guard(BTC, &["t.torrent", "--no-port-mapping"]));
    assert!(guard(BTC, &["create", "x", "-o", "y"]));
    let script = format!("'{BTC}' -o o t.torrent | head");
    assert!(!guard("bash", &["-c", &script]));
    assert!(!guard(
        "sh",
        &["-c", "exec \"$0\" \"$@\"", BTC, "t.torrent"]
    ));
    assert!(guard("ip", &["netns", "exec", "btc-1-0", BTC, "t.torrent"]));
    // And the harness's own btc commands pass it.
    let ctx = Ctx::new("portmap-guard", secs(10));
    assert!(port_mapping_guard(&ctx.btc(&["t.torrent"])).is_ok());

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Tests start btc only through the harness (which applies the guard):
    // no test spawns the binary by itself.
    let mut bypass = Vec::new();
    for entry in std::fs::read_dir(root.join("tests/integration")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in text.lines().enumerate() {
            // `Command::new(…BTC)`: the argument of each `Command::new(`.
            let l = line.replace(' ', "");
            let spawns_btc = l
                .split("Command::new(")
                .skip(1)
                .any(|rest| rest.split(')').next().is_some_and(|a| a.ends_with("BTC")));
            if spawns_btc && !l.starts_with("//") {
                bypass.push(format!("{}:{}: {line}", path.display(), i + 1));
            }
        }
    }
    assert!(
        bypass.is_empty(),
        "btc started around the harness: {bypass:#?}"
    );
    // The scanner catches a missing flag ...
    assert_eq!(
        scripts_without_the_flag("\"$BTC\" -o out \\\n  t.torrent --no-dht &\n").len(),
        1
    );
    assert!(
        scripts_without_the_flag("\"$BTC\" --no-port-mapping -o o t\n\"$BTC\" create x\n")
            .is_empty()
    );
    // ... and no script lacks it.
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root.join("scripts")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "sh") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        missing.extend(
            scripts_without_the_flag(&text)
                .into_iter()
                .map(|l| format!("{}: {l}", path.display())),
        );
    }
    assert!(
        missing.is_empty(),
        "btc runs with port mapping on: {missing:#?}"
    );
}

/// The router restarts (miniupnpd stopped, its forwards gone, started
/// again with a new epoch): its unsolicited PCP ANNOUNCE reaches btc at
/// once, btc maps both ports again, and a WAN peer downloads through them.
#[test]
fn port_mapping_follows_a_router_restart() {
    let mut lab = Lab::new("portmap-restart", Mode::Pcp, 29);
    let (mut seeder, events) = lab.seed(&["--no-dht"], 2);
    assert_eq!(events.len(), 2, "{events:?}\n{}", seeder.tails());
    assert_eq!(lab.topo.forwards().len(), 2);

    // The router reboots: miniupnpd stops and its forwards are gone (a
    // stopped miniupnpd leaves its rules; a reboot would not).
    signal(lab.router.pid(), SIGTERM);
    assert!(
        lab.router.wait_timeout(secs(10)).is_some(),
        "miniupnpd did not stop"
    );
    for (table, chain) in [
        ("btc_nat", "prerouting_miniupnpd"),
        ("btc_nat", "postrouting_miniupnpd"),
        ("btc_filter", "miniupnpd"),
    ] {
        lab.topo
            .nft(&["flush", "chain", "inet", table, chain], None);
    }
    let gone = lab.topo.forwards();
    assert!(gone.is_empty(), "forwards left: {gone:?}");
    let _ = std::fs::remove_file(lab.ctx.join("router/miniupnpd.leases"));
    // Its epoch starts again from 0 (it counted the machine's uptime).
    lab.router = start_router_with(&lab.ctx, &lab.topo, Mode::Pcp, false);
    lab.ctx.wait_for("the mappings again", secs(20), || {
        lab.topo.forwards().len() == 2 || !seeder.is_running()
    });
    let err = seeder.stderr();
    assert!(
        err.contains("the router restarted"),
        "btc did not see the restart:\n{err}"
    );
    let external = format!("{ROUTER_WAN}:{PORT}");
    download_from_wan(&lab.ctx, &lab.topo, &lab.torrent, &external, "--no-utp");
    assert_same_file(&lab.root, &lab.ctx.join("out--no-utp/pm.bin"));
    lab.stop(&mut seeder);
    assert!(lab.topo.forwards().is_empty(), "mappings left after exit");
}
