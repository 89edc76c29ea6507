//! Local Service Discovery (BEP 14): two btc processes on one network find
//! each other by multicast, with no tracker, no DHT and no `--peer`.

use crate::util::*;

const MIB: u64 = 1024 * 1024;

/// A btc seeding a `size`-byte file `name` on `p1` and a btc leecher on
/// `p2` that knows no peer (no tracker, DHT or `--peer`): it completes only
/// if LSD brings them together. `seeder_args` and `leecher_args` are added
/// to each one's command line. Returns the seeder, the leecher's stdout and
/// log, how long it took, and both ports.
fn seed_and_leech_by_lsd(
    ctx: &Ctx,
    name: &str,
    size: u64,
    seed: u64,
    seeder_args: &[&str],
    leecher_args: &[&str],
) -> (Proc, String, String, std::time::Duration, u16, u16) {
    let seed_dir = ctx.mkdir("seed");
    let root = Payload::single(name, size).write(&seed_dir, seed);
    let t = ctx.join(format!("{name}.torrent"));
    btc_create(ctx, &root, &t, &[]);
    let (p1, p2) = (free_port(), free_port());
    let p1s = p1.to_string();
    let mut args = vec!["-o", s(&seed_dir), s(&t), "--port", &p1s, "--no-dht", "-v"];
    args.extend_from_slice(seeder_args);
    let mut seeder = ctx.spawn("btc-seeder", ctx.btc(&args));
    seeder.wait_output("seeding ", secs(60));
    let out = ctx.mkdir("out");
    let p2s = p2.to_string();
    let mut args = vec![
        "-o",
        s(&out),
        s(&t),
        "--port",
        &p2s,
        "--no-dht",
        "--no-seed",
        "-v",
    ];
    args.extend_from_slice(leecher_args);
    let (stdout, stderr, took) = leech(ctx, "btc-leecher", &args, secs(60));
    assert_same_file(&root, &out.join(name));
    (seeder, stdout, stderr, took, p1, p2)
}

#[test]
fn two_btc_find_each_other_by_lsd() {
    let ctx = Ctx::offline("lsd-find", secs(120));
    ctx.netns.as_ref().expect("a namespace").enable_multicast();
    let (mut seeder, _, stderr, took, p1, p2) =
        seed_and_leech_by_lsd(&ctx, "lsd.bin", 4 * MIB + 99, 7171, &[], &[]);
    // Either side may hear the other first: the leecher the seeder's
    // announce, or the seeder the leecher's (it then dials the leecher).
    let seeder_log = seeder.stderr();
    assert!(
        stderr.contains(&format!("LSD: peer 127.0.0.1:{p1}"))
            || seeder_log.contains(&format!("LSD: peer 127.0.0.1:{p2}")),
        "a peer was found by LSD:\nleecher:\n{stderr}\nseeder:\n{seeder_log}"
    );
    eprintln!("[lsd-find] found and downloaded in {took:?}");
    seeder.assert_running();

    // --no-lsd: nobody is found, nothing arrives.
    let t = ctx.join("lsd.bin.torrent");
    let quiet_out = ctx.mkdir("quiet-out");
    let mut alone = ctx.spawn(
        "btc-no-lsd",
        ctx.btc(&[
            "-o",
            s(&quiet_out),
            s(&t),
            "--port",
            "0",
            "--no-dht",
            "--no-lsd",
            "-v",
        ]),
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    alone.assert_running();
    assert!(!alone.stderr().contains("LSD: peer"), "{}", alone.stderr());
    let data = std::fs::read(quiet_out.join("lsd.bin")).unwrap_or_default();
    assert!(data.iter().all(|&b| b == 0), "no payload without discovery");
}

/// `--bind` applies to LSD: two btc bound to different loopback addresses
/// (127.0.0.2 seeding, 127.0.0.3 leeching) find each other, each announce
/// coming from its sender's bound address, the one the other dials (from
/// the default source, 127.0.0.1, it named an address nobody listens on).
#[test]
fn two_bound_btc_find_each_other_by_lsd() {
    let ctx = Ctx::offline("lsd-bound", secs(120));
    ctx.netns.as_ref().expect("a namespace").enable_multicast();
    let (mut seeder, _, stderr, took, p1, p2) = seed_and_leech_by_lsd(
        &ctx,
        "lsd-bound.bin",
        2 * MIB + 5,
        7272,
        &["--bind", "127.0.0.2"],
        &["--bind", "127.0.0.3"],
    );
    let seeder_log = seeder.stderr();
    assert!(
        stderr.contains(&format!("LSD: peer 127.0.0.2:{p1}"))
            || seeder_log.contains(&format!("LSD: peer 127.0.0.3:{p2}")),
        "a peer was found by LSD at its bound address:\nleecher:\n{stderr}\nseeder:\n{seeder_log}"
    );
    for (who, log) in [("leecher", &stderr), ("seeder", &seeder_log)] {
        assert!(
            !log.contains("LSD: peer 127.0.0.1:"),
            "the {who} heard an announce from the unbound address:\n{log}"
        );
    }
    eprintln!("[lsd-bound] found and downloaded in {took:?}");
    seeder.assert_running();
}

/// The same over the IPv6 group only: the namespace routes IPv6 multicast
/// but not IPv4 (no 224.0.0.0/4 route, so joining the IPv4 group fails),
/// which both processes must survive on IPv6 alone, finding each other at
/// ::1.
#[test]
fn two_btc_find_each_other_by_lsd_over_ipv6_only() {
    let ctx = Ctx::offline("lsd6-find", secs(120));
    ctx.netns
        .as_ref()
        .expect("a namespace")
        .enable_multicast_v6();
    let (mut seeder, stdout, stderr, took, p1, p2) =
        seed_and_leech_by_lsd(&ctx, "lsd6.bin", 3 * MIB + 77, 6161, &[], &[]);
    assert!(stdout.contains("downloaded lsd6.bin: "), "{stdout}");
    let seeder_log = seeder.stderr();
    for (who, log) in [("leecher", &stderr), ("seeder", &seeder_log)] {
        assert!(
            log.contains("local peer discovery (LSD) on IPv4 disabled"),
            "the {who} said IPv4 LSD could not start:\n{log}"
        );
        assert!(
            !log.contains("LSD: peer 127.0.0.1"),
            "nothing came over IPv4 to the {who}:\n{log}"
        );
    }
    // Whichever heard the other first (the leecher may start after the
    // seeder's announce) dialled it at ::1, the address LSD gave.
    let found = |log: &str, port: u16| {
        log.contains(&format!("LSD: peer [::1]:{port}"))
            && log.lines().any(|l| {
                l.contains(&format!("connected to [::1]:{port}: TCP")) && l.contains("(from LSD)")
            })
    };
    assert!(
        found(&stderr, p1) || found(&seeder_log, p2),
        "one found the other by LSD over IPv6:\nleecher:\n{stderr}\nseeder:\n{seeder_log}"
    );
    eprintln!("[lsd6-find] found over IPv6 and downloaded in {took:?}");
    seeder.assert_running();
}
