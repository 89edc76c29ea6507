//! `--proxy` against real proxies from Debian (dante's `danted` for SOCKS5,
//! `tinyproxy` for HTTP CONNECT), in network namespaces: btc runs in a
//! "client" namespace whose one link leads to the proxy's namespace, where
//! the proxy, a seeding btc and two opentrackers live on loopback. An
//! nftables rule in the client namespace counts and drops every packet to
//! any address but the proxy's: it must stay at 0 while the download
//! completes.

use crate::util::*;
use std::fs;
use std::process::{Command, Stdio};

const MIB: u64 = 1024 * 1024;
/// The proxy's address on the link between the namespaces.
const PROXY_IP: &str = "10.9.0.1";
/// btc's address, in the client namespace.
const CLIENT_IP: &str = "10.9.0.2";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The client namespace (made here) beside the proxy's (the context's
/// own [`Netns`]); on drop every process left in either is killed by PID
/// and the client namespace is deleted (the context deletes its own).
struct ClientNet {
    name: String,
    proxy_ns: String,
    etc: std::path::PathBuf,
}

impl ClientNet {
    /// Links a new namespace to `ctx`'s: a veth pair, a default route
    /// through the proxy's side (so a stray packet would leave, and be
    /// counted, rather than fail for want of a route), IPv6 off (no
    /// router solicitations to count), and the counting rule.
    fn new(ctx: &Ctx) -> ClientNet {
        require_tool("nft");
        let proxy_ns = ctx
            .netns
            .as_ref()
            .expect("a namespaced context")
            .name
            .clone();
        let name = format!("{proxy_ns}-c");
        // A lookup would go to 127.0.0.1:53, and be counted.
        let etc = offline_etc(&name);
        let net = ClientNet {
            name: name.clone(),
            proxy_ns: proxy_ns.clone(),
            etc,
        };
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        let sysctl = |k: &str| {
            let ok = net
                .command("sysctl")
                .args(["-qw", &format!("{k}=1")])
                .status()
                .unwrap()
                .success();
            assert!(ok, "sysctl {k}");
        };
        sysctl("net.ipv6.conf.all.disable_ipv6");
        sysctl("net.ipv6.conf.default.disable_ipv6");
        ip(&[
            "-n", &name, "link", "add", "c0", "type", "veth", "peer", "name", "p0", "netns",
            &proxy_ns,
        ]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{CLIENT_IP}/24"),
            "dev",
            "c0",
        ]);
        ip(&["-n", &name, "link", "set", "c0", "up"]);
        ip(&[
            "-n",
            &proxy_ns,
            "addr",
            "add",
            &format!("{PROXY_IP}/24"),
            "dev",
            "p0",
        ]);
        ip(&["-n", &proxy_ns, "link", "set", "p0", "up"]);
        ip(&["-n", &name, "route", "add", "default", "via", PROXY_IP]);
        let rules = format!(
            "table inet btc_leak {{\n  counter leaked {{ }}\n  chain out {{\n    \
             type filter hook output priority 0; policy accept;\n    \
             ip daddr {PROXY_IP} accept\n    counter name leaked drop\n  }}\n}}\n"
        );
        let f = ctx.join("leak.nft");
        fs::write(&f, rules).unwrap();
        let out = net.command("nft").arg("-f").arg(&f).output().unwrap();
        assert!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        net
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// btc in the client namespace, with a private state folder.
    fn btc(&self, ctx: &Ctx, args: &[&str]) -> Command {
        let mut c = self.command(BTC);
        c.args(args)
            .env_remove("RUST_LOG")
            .env("XDG_STATE_HOME", ctx.join("xdg-client"))
            .env("HOME", ctx.path());
        c
    }

    /// Packets the rule dropped: anything btc's namespace sent elsewhere
    /// than the proxy.
    fn leaked(&self) -> u64 {
        let out = self
            .command("nft")
            .args(["list", "counter", "inet", "btc_leak", "leaked"])
            .output()
            .unwrap();
        nft_packets(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Drop for ClientNet {
    fn drop(&mut self) {
        for ns in [&self.name, &self.proxy_ns] {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse() {
                        signal(pid, SIGKILL);
                    }
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = fs::remove_dir_all(&self.etc);
    }
}

/// A SOCKS5 proxy: dante, listening on [`PROXY_IP`], reaching out from
/// 127.0.0.1 of its namespace. `user`: the `username` method with this
/// one account (passwd and shadow files of the namespace's own, which
/// `ip netns exec` mounts over /etc), else no authentication.
fn start_danted(ctx: &Ctx, port: u16, user: Option<(&str, &str)>) -> Proc {
    require_tool("danted");
    let dir = ctx.mkdir("danted");
    let method = if let Some((name, pass)) = user {
        let etc = std::path::Path::new("/etc/netns").join(&ctx.netns.as_ref().unwrap().name);
        let hash = Command::new("openssl")
            .args(["passwd", "-6", pass])
            .output()
            .unwrap();
        assert!(hash.status.success(), "openssl passwd");
        let hash = String::from_utf8(hash.stdout).unwrap();
        let mut passwd = fs::read_to_string("/etc/passwd").unwrap();
        passwd.push_str(&format!(
            "{name}:x:4242:4242::/nonexistent:/usr/sbin/nologin\n"
        ));
        let mut shadow = fs::read_to_string("/etc/shadow").unwrap_or_default();
        shadow.push_str(&format!("{name}:{}:19000:0:99999:7:::\n", hash.trim()));
        fs::write(etc.join("passwd"), passwd).unwrap();
        fs::write(etc.join("shadow"), shadow).unwrap();
        "username"
    } else {
        "none"
    };
    let conf = format!(
        "logoutput: {d}/danted.log\n\
         internal: {PROXY_IP} port = {port}\n\
         external: 127.0.0.1\n\
         socksmethod: {method}\n\
         clientmethod: none\n\
         user.privileged: root\n\
         user.unprivileged: nobody\n\
         client pass {{\n  from: 0.0.0.0/0 to: 0.0.0.0/0\n}}\n\
         socks pass {{\n  from: 0.0.0.0/0 to: 0.0.0.0/0\n  \
         command: connect udpassociate udpreply\n  log: error connect\n}}\n",
        d = dir.display()
    );
    let f = dir.join("danted.conf");
    fs::write(&f, conf).unwrap();
    let mut c = ctx.command("danted");
    c.arg("-f").arg(&f).arg("-p").arg(dir.join("danted.pid"));
    let mut p = ctx.spawn("danted", c);
    if !ctx.wait_listening(&mut p, &format!("{PROXY_IP}:{port}"), secs(15)) {
        panic!(
            "danted did not start\n{}\n{}",
            p.tails(),
            fs::read_to_string(dir.join("danted.log")).unwrap_or_default()
        );
    }
    p
}

/// The proxy's side: a seeding btc and two opentrackers (one to be used
/// over HTTP, one over UDP, so each one's count of downloads says which
/// protocol reached it), all on the namespace's loopback, known to the
/// proxy (not to btc) as `tracker.test`.
struct Swarm {
    torrent: std::path::PathBuf,
    seed_dir: std::path::PathBuf,
    http: Opentracker,
    udp: Opentracker,
    _seeder: Proc,
}

impl Swarm {
    fn start(ctx: &Ctx, size: u64) -> Swarm {
        require_tool("opentracker");
        let seed_dir = ctx.mkdir("seed");
        let root = Payload::single("proxied.bin", size).write(&seed_dir, 2323);
        let torrent = ctx.join("proxied.torrent");
        let http = torrent_behind_tracker(ctx, &root, &torrent, &[], None);
        let hash = btc_info_hash(ctx, s(&torrent));
        let udp = Opentracker::start(ctx, &[&hash]);
        ctx.netns
            .as_ref()
            .unwrap()
            .add_host("tracker.test", "127.0.0.1");
        let (h, u) = (http.http(), udp.udp());
        let seeder = start_btc_seeder(
            ctx,
            "btc-seeder",
            &seed_dir,
            s(&torrent),
            free_port(),
            &[
                "--bind",
                "127.0.0.1",
                "--no-dht",
                "--no-lsd",
                "--tracker",
                &h,
                "--tracker",
                &u,
            ],
        );
        Swarm {
            torrent,
            seed_dir,
            http,
            udp,
            _seeder: seeder,
        }
    }

    /// The trackers as btc in the client namespace is told them: by name.
    fn tracker_args(&self) -> [String; 4] {
        [
            "--tracker".into(),
            format!("http://tracker.test:{}/announce", self.http.port),
            "--tracker".into(),
            format!("udp://tracker.test:{}/announce", self.udp.port),
        ]
    }

    /// Each tracker's scrape line (HTTP's, UDP's).
    fn seeders(&self, ctx: &Ctx) -> (String, String) {
        let hash = btc_info_hash(ctx, s(&self.torrent));
        let magnet = format!(
            "magnet:?xt=urn:btih:{hash}&tr={}&tr={}",
            self.http.http(),
            self.udp.udp()
        );
        let out = ctx.run_btc(&["info", "--scrape", &magnet], secs(30));
        let line = |url: String| {
            out.stdout
                .lines()
                .find(|l| l.contains(&format!("{url}: ")))
                .unwrap_or_default()
                .to_string()
        };
        (line(self.http.http()), line(self.udp.udp()))
    }
}

/// Starts a leeching btc in the client namespace with `extra` args and
/// waits until it has the whole torrent and seeds it (so it announces
/// itself as a seeder); returns it, still running, and how long that took.
fn leech_through(
    ctx: &Ctx,
    net: &ClientNet,
    swarm: &Swarm,
    name: &str,
    source: &str,
    extra: &[&str],
) -> (Proc, std::time::Duration) {
    let out = ctx.mkdir(name);
    let mut args: Vec<String> = vec!["-o".into(), s(&out).into(), source.into()];
    args.extend(swarm.tracker_args());
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t0 = std::time::Instant::now();
    let mut p = ctx.spawn(name, net.btc(ctx, &args));
    p.wait_output("seeding ", secs(120));
    let took = t0.elapsed();
    assert_same_tree(&swarm.seed_dir, &out);
    (p, took)
}

/// Waits until the tracker lines `pick` chooses from [`Swarm::seeders`]
/// count two seeders: the seeder's own announce and ours, through the
/// proxy.
fn wait_seen(ctx: &Ctx, swarm: &Swarm, both: bool) {
    let mut last = (String::new(), String::new());
    let seen = wait_for(secs(60), || {
        last = swarm.seeders(ctx);
        last.0.contains(": 2 seeders") && (!both || last.1.contains(": 2 seeders"))
    });
    assert!(seen, "the trackers should count us as a seeder: {last:?}");
}

/// Checks that `p` still runs after `wait` (a proxy failure is never
/// fatal), stops it, and returns its output.
fn keeps_running(mut p: Proc, wait: std::time::Duration) -> String {
    std::thread::sleep(wait);
    assert!(
        p.is_running(),
        "a proxy failure must not end the run\n{}",
        p.tails()
    );
    p.terminate(secs(10));
    p.output()
}

/// The no-leak download: through dante, with an HTTP and a UDP tracker
/// given by name (resolved by the proxy), TCP peers, and the DHT left on
/// by the command line (through the relay, with no bootstrap by address
/// here): the nftables counter of
/// packets to anywhere but the proxy stays at 0, both trackers counted our
/// completed download, and the proxy saw our connections.
#[test]
fn socks5_download_sends_nothing_around_the_proxy() {
    let ctx = Ctx::offline("proxy-socks5-no-leak", secs(240));
    let net = ClientNet::new(&ctx);
    // BTC_PROXY_TEST_MIB=256 to compare with a direct download.
    let mib: u64 = std::env::var("BTC_PROXY_TEST_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let swarm = Swarm::start(&ctx, mib * MIB);
    let port = 1080;
    let _danted = start_danted(&ctx, port, None);
    let proxy = format!("socks5://{PROXY_IP}:{port}");
    let (mut p, took) = leech_through(
        &ctx,
        &net,
        &swarm,
        "leech",
        s(&swarm.torrent),
        &["--proxy", &proxy, "-v"],
    );
    eprintln!("[proxy] {mib} MiB through SOCKS5 in {took:?}");
    if std::env::var_os("BTC_PROXY_TEST_MIB").is_some() {
        // The same download without the proxy, in the proxy's namespace.
        let out = ctx.mkdir("direct");
        let (h, u) = (swarm.http.http(), swarm.udp.udp());
        let args = [
            "-o",
            s(&out),
            s(&swarm.torrent),
            "--no-seed",
            "--no-dht",
            "--no-lsd",
        ];
        let mut c = ctx.btc(&args);
        c.args(["--port", "0", "--tracker", &h, "--tracker", &u]);
        let t0 = std::time::Instant::now();
        ctx.run("direct", c, secs(120)).assert_ok("direct download");
        eprintln!("[proxy] {mib} MiB directly in {:?}", t0.elapsed());
    }
    let err = p.stderr();
    assert_eq!(
        net.leaked(),
        0,
        "packets sent around the proxy\n{}",
        p.tails()
    );
    assert_eq!(
        err.matches("--proxy: local peer discovery (LSD) cannot go through the proxy and is off")
            .count(),
        1,
        "one warning says what is off:\n{err}"
    );
    assert!(!err.contains("UDP trackers are off"), "{err}");
    wait_seen(&ctx, &swarm, true);
    assert_eq!(
        net.leaked(),
        0,
        "packets sent around the proxy\n{}",
        p.tails()
    );
    let log = fs::read_to_string(ctx.join("danted/danted.log")).unwrap_or_default();
    assert!(
        log.contains(CLIENT_IP),
        "dante logged our connections:\n{log}"
    );
    // Stopping sends `stopped` to both trackers: through the proxy too.
    p.terminate(secs(10));
    assert_eq!(net.leaked(), 0, "packets sent around the proxy at exit");
    // The rule does count: a packet to another address is seen (and dropped).
    let _ = net
        .command("bash")
        .args(["-c", "echo stray >/dev/udp/10.9.0.99/9"])
        .stderr(Stdio::null())
        .status();
    assert!(
        net.leaked() > 0,
        "the counting rule must see a stray packet"
    );
}

/// uTP through the SOCKS5 proxy's UDP relay: with `--no-tcp` the only way
/// to the seeder (a btc in the proxy's namespace, uTP on by default) is a
/// uTP connection whose every datagram goes to dante's relay, wrapped with
/// the seeder's address. The download completes byte-identical over uTP
/// (the `-v` log says so) and nothing is sent around the proxy.
#[test]
fn socks5_utp_goes_through_the_udp_relay() {
    let ctx = Ctx::offline("proxy-socks5-utp", secs(240));
    let net = ClientNet::new(&ctx);
    let swarm = Swarm::start(&ctx, 8 * MIB);
    let port = 1080;
    let _danted = start_danted(&ctx, port, None);
    let proxy = format!("socks5://{PROXY_IP}:{port}");
    let (mut p, took) = leech_through(
        &ctx,
        &net,
        &swarm,
        "leech",
        s(&swarm.torrent),
        &["--proxy", &proxy, "--no-tcp", "--no-dht", "-v"],
    );
    eprintln!("[proxy-utp] 8 MiB over uTP through SOCKS5 in {took:?}");
    assert_eq!(
        net.leaked(),
        0,
        "packets sent around the proxy\n{}",
        p.tails()
    );
    let err = p.stderr();
    assert!(err.contains("uTP through the proxy's UDP relay"), "{err}");
    let connected: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("connected to "))
        .collect();
    assert!(
        !connected.is_empty() && connected.iter().all(|l| l.contains(": uTP, ")),
        "every peer should be connected over uTP:\n{err}"
    );
    assert!(!err.contains("uTP cannot go through"), "{err}");
    p.terminate(secs(10));
    assert_eq!(net.leaked(), 0, "packets sent around the proxy at exit");
}

/// Username/password (RFC 1929) with a password that needs %-escapes,
/// `socks5h://`, and the `.torrent` fetched from a URL through it; a
/// wrong password is a clear warning per peer, never a crash, and never
/// prints the password.
#[test]
fn socks5_username_password_download() {
    let ctx = Ctx::offline("proxy-socks5-auth", secs(240));
    let net = ClientNet::new(&ctx);
    let swarm = Swarm::start(&ctx, 2 * MIB);
    let port = 1081;
    let _danted = start_danted(&ctx, port, Some(("btcuser", "pa@ss w:rd")));
    let good = format!("socks5h://btcuser:pa%40ss%20w%3Ard@{PROXY_IP}:{port}");
    // The .torrent itself comes from a URL, by a name only the proxy knows.
    let www = ctx.mkdir("www");
    fs::copy(&swarm.torrent, www.join("proxied.torrent")).unwrap();
    let nginx = Nginx::start(&ctx, &www);
    let url = format!("http://tracker.test:{}/proxied.torrent", nginx.port);
    let (p, _) = leech_through(&ctx, &net, &swarm, "leech", &url, &["--proxy", &good]);
    wait_seen(&ctx, &swarm, true);
    assert_eq!(net.leaked(), 0, "{}", p.tails());
    assert!(!p.output().contains("pa@ss"), "{}", p.output());
    // A wrong password: it runs (no crash) and says why, without the password.
    let out = ctx.mkdir("wrong");
    let bad = format!("socks5://btcuser:secret-wrong@{PROXY_IP}:{port}");
    let mut args = vec![
        "-o",
        s(&out),
        s(&swarm.torrent),
        "--no-seed",
        "--proxy",
        &bad,
        "-v",
    ];
    let trackers = swarm.tracker_args();
    args.extend(trackers.iter().map(String::as_str));
    let p = ctx.spawn("wrong-pass", net.btc(&ctx, &args));
    let all = keeps_running(p, secs(6));
    assert!(
        !all.contains("secret-wrong"),
        "the password leaked into the output:\n{all}"
    );
    assert!(all.contains("username/password refused"), "{all}");
    assert_eq!(net.leaked(), 0);
}

/// An `http://` proxy (tinyproxy), reached from `--bind`: TCP peers and the HTTP tracker go
/// through CONNECT, UDP trackers are off with one warning.
#[test]
fn http_proxy_download_with_udp_off() {
    require_tool("tinyproxy");
    let ctx = Ctx::offline("proxy-http", secs(240));
    let net = ClientNet::new(&ctx);
    let swarm = Swarm::start(&ctx, 2 * MIB);
    let port = 8888;
    let dir = ctx.mkdir("tinyproxy");
    let conf = dir.join("tinyproxy.conf");
    fs::write(
        &conf,
        format!(
            "Port {port}\nListen {PROXY_IP}\nTimeout 60\nMaxClients 50\nAllow {CLIENT_IP}\n\
             LogLevel Info\nLogFile \"{}/tinyproxy.log\"\n",
            dir.display()
        ),
    )
    .unwrap();
    // tinyproxy drops to nobody and writes its log there.
    let _ = Command::new("chmod").args(["777", s(&dir)]).status();
    let mut c = ctx.command("tinyproxy");
    c.args(["-d", "-c", s(&conf)]);
    let mut tp = ctx.spawn("tinyproxy", c);
    assert!(
        ctx.wait_listening(&mut tp, &format!("{PROXY_IP}:{port}"), secs(10)),
        "tinyproxy did not start\n{}",
        tp.tails()
    );
    let proxy = format!("http://{PROXY_IP}:{port}");
    let (p, _) = leech_through(
        &ctx,
        &net,
        &swarm,
        "leech",
        s(&swarm.torrent),
        &["--proxy", &proxy, "--bind", CLIENT_IP],
    );
    let err = p.stderr();
    assert_eq!(net.leaked(), 0, "{}", p.tails());
    assert_eq!(err.matches("UDP trackers are off").count(), 1, "{err}");
    wait_seen(&ctx, &swarm, false);
    assert_eq!(net.leaked(), 0, "{}", p.tails());
}

/// A bad `--proxy` is one `error:` line and exit 2, without the password;
/// a proxy that is down is a warning, not a crash.
#[test]
fn bad_or_dead_proxy() {
    let ctx = Ctx::new("proxy-cli", secs(60));
    for bad in ["ftp://h:1", "socks5://u:hunter2@h:99999", "socks5://[::1"] {
        let out = ctx.run_btc(&["--proxy", bad, "x.torrent"], secs(10));
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", out.stderr);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{bad}: {}", out.stderr);
        assert!(
            lines[0].starts_with("error: --proxy: invalid proxy URL: "),
            "{}",
            lines[0]
        );
        assert!(!out.stderr.contains("hunter2"));
    }
    let dead = format!("socks5://127.0.0.1:{}", free_port());
    let dir = ctx.mkdir("dead");
    let p = ctx.spawn(
        "dead-proxy",
        ctx.btc(&[
            "-o",
            s(&dir),
            "c12fe1c06bba254a9dc9f519b335aa7c1367a88a",
            "--proxy",
            &dead,
            "--peer",
            "127.0.0.1:9",
            "--tracker",
            "udp://127.0.0.1:9/announce",
        ]),
    );
    let err = keeps_running(p, secs(4));
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
    assert_eq!(
        err.matches("nothing connects until it answers (retrying)")
            .count(),
        1,
        "one warning for a proxy that is down:\n{err}"
    );
}

/// The DHT through SOCKS5: a magnet-by-hash with no tracker at all finds
/// its seeder through a DHT node that only the proxy can reach (on the
/// proxy's loopback), every datagram going through dante's UDP relay and
/// the peer connection through CONNECT; the counter of packets to
/// anywhere but the proxy stays at 0.
#[test]
fn socks5_dht_finds_the_seeder_through_the_proxy() {
    let ctx = Ctx::offline("proxy-socks5-dht", secs(240));
    let net = ClientNet::new(&ctx);
    let seed_dir = ctx.mkdir("seed");
    let root = Payload::single("dht-proxied.bin", 3 * MIB).write(&seed_dir, 77);
    let torrent = ctx.join("dht-proxied.torrent");
    btc_create(&ctx, &root, &torrent, &[]);
    let hash = btc_info_hash(&ctx, s(&torrent));
    let d = free_port();
    let _node = start_btc_dht(&ctx, d);
    let boot = format!("127.0.0.1:{d}");
    let _seeder = start_btc_seeder(
        &ctx,
        "btc-seeder",
        &seed_dir,
        s(&torrent),
        free_port(),
        &["--bind", "127.0.0.1", "--dht-bootstrap", &boot, "--no-lsd"],
    );
    let port = 1080;
    let _danted = start_danted(&ctx, port, None);
    let proxy = format!("socks5://{PROXY_IP}:{port}");
    let out = ctx.mkdir("leech");
    let args = [
        "-o",
        s(&out),
        &hash,
        "--proxy",
        &proxy,
        "--dht-bootstrap",
        &boot,
        "--no-seed",
        "-v",
    ];
    let t0 = std::time::Instant::now();
    let mut p = ctx.spawn("leech", net.btc(&ctx, &args));
    p.expect_success(secs(150));
    eprintln!(
        "[proxy] bare hash over the DHT through SOCKS5 in {:?}",
        t0.elapsed()
    );
    assert_same_tree(&seed_dir, &out);
    let err = p.stderr();
    assert!(
        err.contains("(from DHT)"),
        "the seeder came from the DHT:\n{err}"
    );
    assert_eq!(
        net.leaked(),
        0,
        "packets sent around the proxy\n{}",
        p.tails()
    );
}
