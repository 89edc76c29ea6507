//! Local Service Discovery (BEP 14): two btc processes on one network find
//! each other by multicast, with no tracker, no DHT and no `--peer`.

use crate::util::*;

const MIB: u64 = 1024 * 1024;

#[test]
fn two_btc_find_each_other_by_lsd() {
    let ctx = Ctx::offline("lsd-find", secs(120));
    ctx.netns.as_ref().expect("a namespace").enable_multicast();
    let seed_dir = ctx.mkdir("seed");
    let root = Payload::single("lsd.bin", 4 * MIB + 99).write(&seed_dir, 7171);
    let t = ctx.join("lsd.torrent");
    btc_create(&ctx, &root, &t, &[]);
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
        &ctx,
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
    assert_same_file(&root, &out.join("lsd.bin"));
    assert!(
        stderr.contains(&format!("LSD: peer 127.0.0.1:{p1}")),
        "the seeder was found by LSD:\n{stderr}"
    );
    eprintln!("[lsd-find] found and downloaded in {took:?}");
    seeder.assert_running();

    // --no-lsd: nobody is found, nothing arrives.
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
