//! Text for `btc info`: what a `.torrent` or a magnet link holds.
//!
//! Pure formatting (no I/O) so the output is unit-tested and the subcommand
//! only has to read the file and print the string.

use std::fmt::Write as _;

use crate::magnet::Magnet;
use crate::metainfo::Metainfo;

/// A size in binary units with two decimals (`1.50 GiB`), or plain bytes
/// below 1 KiB, so it reads the same as other clients' listings.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`. Done by hand
/// (Howard Hinnant's civil-from-days) to avoid a date crate for one line.
pub fn format_unix_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Everything worth knowing about a torrent file, one field per line, then
/// files, tracker tiers and web seeds.
pub fn format_info(m: &Metainfo) -> String {
    let info = &m.info;
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(s, "Name:        {}", info.name);
    let _ = writeln!(s, "Info-hash:   {}", m.info_hash);
    let magnet = Magnet::from_metainfo(m).to_uri();
    match &m.v2 {
        None => {
            let _ = writeln!(
                s,
                "Format:      v1 (BitTorrent v1 only; every client reads it)"
            );
            let _ = writeln!(s, "Magnet:      {magnet}");
        }
        Some(v2) if info.is_v2_only() => {
            let _ = writeln!(s, "Info-hash v2: {}", v2.hash_hex());
            let _ = writeln!(
                s,
                "Format:      BitTorrent v2 only (peers know it by the v2 hash's first 20 bytes)"
            );
            // A v2 swarm has no v1 hash: the link names the v2 one alone
            // (`Magnet::to_uri` leaves the truncated hash out).
            let _ = writeln!(s, "Magnet:      {magnet}");
        }
        Some(v2) => {
            let _ = writeln!(s, "Info-hash v2: {}", v2.hash_hex());
            let _ = writeln!(
                s,
                "Format:      hybrid (BitTorrent v1 + v2; btc takes part in both swarms)"
            );
            let _ = writeln!(s, "Magnet:      {magnet}");
        }
    }
    // The data a user gets; pad files (hybrid alignment) are never written.
    let padding: u64 = info.files.iter().filter(|f| f.pad).map(|f| f.length).sum();
    let data = info.total_length.saturating_sub(padding);
    let _ = match padding {
        0 => writeln!(s, "Size:        {} ({data} bytes)", human_bytes(data)),
        _ => writeln!(
            s,
            "Size:        {} ({data} bytes, and {padding} bytes of padding)",
            human_bytes(data)
        ),
    };
    let _ = writeln!(
        s,
        "Pieces:      {} x {} ({} bytes)",
        info.piece_count(),
        human_bytes(u64::from(info.piece_length)),
        info.piece_length
    );
    let _ = writeln!(
        s,
        "Private:     {}",
        if info.private { "yes" } else { "no" }
    );
    if let Some(by) = &m.created_by {
        let _ = writeln!(s, "Created by:  {by}");
    }
    if let Some(date) = m.creation_date {
        let _ = writeln!(s, "Created on:  {}", format_unix_time(date));
    }
    if let Some(comment) = &m.comment {
        let _ = writeln!(s, "Comment:     {comment}");
    }

    let pads = info.files.iter().filter(|f| f.pad).count();
    let _ = match pads {
        0 => writeln!(s, "\nFiles ({}):", info.files.len()),
        n => writeln!(
            s,
            "\nFiles ({}, and {n} pad files that only align the others):",
            info.files.len() - n
        ),
    };
    // Numbered from 1, pad files skipped: the numbers a user gives to
    // file selection.
    for (n, f) in info.files.iter().filter(|f| !f.pad).enumerate() {
        // BEP 47: what the file becomes on disk besides its bytes.
        let attr = match (&f.attr.symlink, f.attr.executable) {
            (Some(target), _) => format!(" -> {} (symlink)", target.join("/")),
            (None, true) => " (executable)".to_string(),
            (None, false) => String::new(),
        };
        let _ = writeln!(
            s,
            "  {:>4}  {:>10}  {}{attr}",
            n + 1,
            human_bytes(f.length),
            f.path.join("/")
        );
    }

    let tiers = m.tracker_tiers();
    if tiers.is_empty() {
        let _ = writeln!(s, "\nTrackers: none (DHT only)");
    } else {
        let _ = writeln!(s, "\nTrackers:");
        for (i, tier) in tiers.iter().enumerate() {
            let _ = writeln!(s, "  Tier {}:", i + 1);
            for url in tier {
                let _ = writeln!(s, "    {url}");
            }
        }
    }
    if !m.url_list.is_empty() {
        let _ = writeln!(s, "\nWeb seeds:");
        for url in &m.url_list {
            let _ = writeln!(s, "  {url}");
        }
    }
    s
}

/// What a magnet link holds: the hash and whatever hints came with it.
pub fn format_magnet_info(m: &Magnet) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Info-hash:   {}", m.info_hash);
    let _ = writeln!(s, "Name:        {}", m.name.as_deref().unwrap_or("(none)"));
    let list = |s: &mut String, title: &str, items: Vec<String>| {
        if items.is_empty() {
            let _ = writeln!(s, "{title}: none");
        } else {
            let _ = writeln!(s, "{title}:");
            for i in items {
                let _ = writeln!(s, "  {i}");
            }
        }
    };
    list(&mut s, "Trackers", m.trackers.clone());
    list(
        &mut s,
        "Peers",
        m.peers.iter().map(|p| p.to_string()).collect(),
    );
    list(&mut s, "Web seeds", m.web_seeds.clone());
    s
}

/// `btc info SOURCE`: the torrent's details, or for a magnet what the link
/// holds plus, when an earlier run fetched it, the torrent's details.
pub async fn describe_source(
    source: &str,
    state_dir: Option<std::path::PathBuf>,
    scrape: bool,
) -> anyhow::Result<String> {
    use super::source::{Resolved, resolve};
    let resolved = resolve(source).await?;
    let (info_hash, trackers): (_, Vec<String>) = match &resolved {
        Resolved::Torrent(m) => (
            m.info_hash,
            m.tracker_tiers().into_iter().flatten().collect(),
        ),
        Resolved::Magnet(mag) => (mag.info_hash, mag.trackers.clone()),
    };
    let mut text = match resolved {
        Resolved::Torrent(m) => format_info(&m),
        Resolved::Magnet(mag) => {
            let mut text = format_magnet_info(&mag);
            let dir = state_dir.or_else(crate::dht::default_state_dir);
            let cached = dir.and_then(|d| crate::session::load_cached_info(&d, mag.info_hash));
            let tiers = mag.trackers.iter().map(|t| vec![t.clone()]).collect();
            if let Some(Ok(m)) = cached.map(|b| Metainfo::from_info_bytes(&b, tiers)) {
                text.push_str("\nMetadata (fetched earlier):\n");
                text.push_str(&format_info(&m));
            }
            text
        }
    };
    if scrape {
        text.push_str(&scrape_text(info_hash, &trackers).await);
    }
    Ok(text)
}

/// How long `btc info --scrape` waits for any one tracker.
const SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `Scrape:` lines, one per tracker, all asked at once.
async fn scrape_text(info_hash: crate::id::InfoHash, trackers: &[String]) -> String {
    let mut urls: Vec<&String> = Vec::new();
    for t in trackers {
        if !urls.contains(&t) {
            urls.push(t);
        }
    }
    let answers = futures::future::join_all(
        urls.iter()
            .map(|u| crate::tracker::scrape(u, &info_hash, None, SCRAPE_TIMEOUT)),
    )
    .await;
    let mut s = String::from(
        "Scrape:
",
    );
    if urls.is_empty() {
        s.push_str(
            "  no trackers
",
        );
    }
    for (url, answer) in urls.iter().zip(answers) {
        s.push_str(&scrape_line(url, answer));
    }
    s
}

/// One tracker's scrape answer as a line.
fn scrape_line(
    url: &str,
    answer: Result<crate::tracker::scrape::ScrapeStats, crate::tracker::TrackerError>,
) -> String {
    match answer {
        Ok(st) => format!(
            "  {url}: {} seeders, {} leechers, {} downloads\n",
            st.seeders, st.leechers, st.downloaded
        ),
        Err(e) => format!("  {url}: {e}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.00 KiB");
        assert_eq!(human_bytes(1536 * 1024 * 1024), "1.50 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.00 EiB");
    }

    #[test]
    fn unix_time() {
        assert_eq!(format_unix_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_unix_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_unix_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_unix_time(-1), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn torrent_info_text() {
        let m = Metainfo::from_bytes(include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/torrents/multi.torrent"
        )))
        .unwrap();
        let text = format_info(&m);
        for want in [
            "Name:        multi\n",
            "Info-hash:   758e7262710c866ff80e74a0cd6f73eb99a84fe0\n",
            "Magnet:      magnet:?xt=urn:btih:758e7262710c866ff80e74a0cd6f73eb99a84fe0&dn=multi&tr=http%3A%2F%2Ftracker.example%2Fannounce\n",
            "Size:        63.48 KiB (65001 bytes)\n",
            "Pieces:      4 x 16.00 KiB (16384 bytes)\n",
            "Private:     no\n",
            "Created by:  Transmission/3.00",
            "Comment:     multi file golden\n",
            "Files (4):\n",
            "     4   19.53 KiB  multi/z.dat\n",
            "  Tier 1:\n    http://tracker.example/announce\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("Web seeds"));
        let web = Metainfo::from_bytes(include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/torrents/webseed.torrent"
        )))
        .unwrap();
        assert!(format_info(&web).contains("Web seeds:\n  http://seed1.example/files/\n"));
    }

    #[test]
    fn a_hybrid_shows_both_hashes_and_a_magnet_with_both() {
        let m = Metainfo::from_bytes(include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/torrents/hybrid-libtorrent.torrent"
        )))
        .unwrap();
        let text = format_info(&m);
        let v2 = "d18f1695f4e0b252cf0ab7b4746b8d0d068b29d59b7ac25e0f704a3e424cc843";
        for want in [
            "Info-hash:   974735ffc2ea5426ee8ff5f5444ec8bcddae3683\n".to_string(),
            format!("Info-hash v2: {v2}\n"),
            "Format:      hybrid".to_string(),
            format!(
                "Magnet:      magnet:?xt=urn:btih:974735ffc2ea5426ee8ff5f5444ec8bcddae3683&xt=urn:btmh:1220{v2}&dn=hybrid"
            ),
        ] {
            assert!(text.contains(&want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn magnet_info_text() {
        let m = Magnet::parse(
            "magnet:?xt=urn:btih:758e7262710c866ff80e74a0cd6f73eb99a84fe0&dn=x&tr=udp://t:1&x.pe=1.2.3.4:5",
        )
        .unwrap();
        let text = format_magnet_info(&m);
        assert_eq!(
            text,
            "Info-hash:   758e7262710c866ff80e74a0cd6f73eb99a84fe0\nName:        x\n\
             Trackers:\n  udp://t:1\nPeers:\n  1.2.3.4:5\nWeb seeds: none\n"
        );
    }
}
