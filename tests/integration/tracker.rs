//! The tracker protocol beyond announces, against a real opentracker.

use crate::util::*;

const MIB: u64 = 1024 * 1024;

/// `btc info --scrape` asks every tracker, over HTTP and UDP, and shows the
/// seeder that announced to it.
#[test]
fn info_scrape_shows_what_each_tracker_knows() {
    require_tool("opentracker");
    let ctx = Ctx::new("tracker-scrape", secs(120));
    let seed_dir = ctx.mkdir("seed");
    let root = Payload::single("scraped.bin", MIB).write(&seed_dir, 4242);
    let t = ctx.join("scraped.torrent");
    let tracker = torrent_behind_tracker(&ctx, &root, &t, &[], Some(Opentracker::http));
    let p = free_port();
    let udp = tracker.udp();
    let _seeder = start_btc_seeder(
        &ctx,
        "btc-seeder",
        &seed_dir,
        s(&t),
        p,
        &["--bind", "127.0.0.1", "--no-dht", "--tracker", &udp],
    );
    let hash = btc_info_hash(&ctx, s(&t));
    let magnet = format!(
        "magnet:?xt=urn:btih:{hash}&tr={}&tr={}",
        tracker.http(),
        udp
    );
    let mut last = String::new();
    let seen = wait_for(secs(30), || {
        let out = ctx.run_btc(&["info", "--scrape", &magnet], secs(30));
        out.assert_ok("btc info --scrape");
        last = out.stdout;
        last.contains(&format!("{}: 1 seeders, 0 leechers", tracker.http()))
            && last.contains(&format!("{udp}: 1 seeders, 0 leechers"))
    });
    assert!(seen, "both trackers should count the seeder:\n{last}");
    // A tracker that is not there: its line says so, the others still show.
    let dead = format!("udp://127.0.0.1:{}/announce", free_port());
    let out = ctx.run_btc(
        &["info", "--scrape", &format!("{magnet}&tr={dead}")],
        secs(30),
    );
    out.assert_ok("btc info --scrape with a dead tracker");
    assert!(out.stdout.contains(&format!("{dead}: ")), "{}", out.stdout);
    assert!(out.stdout.contains("1 seeders"), "{}", out.stdout);
}
