//! Local Service Discovery (BEP 14): two btc processes on one network find
//! each other by multicast, with no tracker, no DHT and no `--peer`.

use crate::util::*;

const MIB: u64 = 1024 * 1024;

/// A btc seeding a `size`-byte file `name` on `p1` and a btc leecher on
/// `p2` that knows no peer (no tracker, DHT or `--peer`): it completes only
/// if LSD brings them together. Returns the seeder, the leecher's log, how
/// long it took, and both ports.
fn seed_and_leech_by_lsd(
    ctx: &Ctx,
    name: &str,
    size: u64,
    seed: u64,
) -> (Proc, String, std::time::Duration, u16, u16) {
    let seed_dir = ctx.mkdir("seed");
    let root = Payload::single(name, size).write(&seed_dir, seed);
    let t = ctx.join(format!("{name}.torrent"));
    btc_create(ctx, &root, &t, &[]);
    let (p1, p2) = (free_port(), free_port());
    let mut seeder = ctx.spawn(
        "btc-seeder",
        ctx.btc(&[
            "-o",
            s(&seed_dir),
            s(&t),
            "--port",
            &p1.to_string(),
            "--no-dht",
            "-v",
        ]),
    );
    seeder.wait_output("seeding ", secs(60));
    let out = ctx.mkdir("out");
    let (_, stderr, took) = leech(
        ctx,
        "btc-leecher",
        &[
            "-o",
            s(&out),
            s(&t),
            "--port",
            &p2.to_string(),
            "--no-dht",
            "--no-seed",
            "-v",
        ],
        secs(60),
    );
    assert_same_file(&root, &out.join(name));
    (seeder, stderr, took, p1, p2)
}

#[test]
fn two_btc_find_each_other_by_lsd() {
    let ctx = Ctx::offline("lsd-find", secs(120));
    ctx.netns.as_ref().expect("a namespace").enable_multicast();
    let (mut seeder, stderr, took, p1, p2) =
        seed_and_leech_by_lsd(&ctx, "lsd.bin", 4 * MIB + 99, 7171);
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
    let (mut seeder, stderr, took, p1, p2) =
        seed_and_leech_by_lsd(&ctx, "lsd6.bin", 3 * MIB + 77, 6161);
    assert!(stderr.contains("complete: lsd6.bin"), "{stderr}");
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
