//! Turning the user's SOURCE argument into a torrent or a magnet.

use crate::magnet::Magnet;
use crate::metainfo::{Metainfo, MetainfoError};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::Duration;

/// Largest `.torrent` we read from disk or the network. Real ones with
/// millions of pieces stay far below; anything bigger is not a torrent.
const MAX_TORRENT_FILE: u64 = 64 * 1024 * 1024;

/// A resolved SOURCE.
pub enum Resolved {
    /// A `.torrent` (file or URL).
    Torrent(Box<Metainfo>),
    /// A magnet link or bare info-hash.
    Magnet(Magnet),
}

/// Whether `s` looks like a bare info-hash (40 hex or 32 base32 chars).
fn looks_like_hash(s: &str) -> bool {
    (s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        || (s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_alphabetic() || (b'2'..=b'7').contains(&b)))
}

/// Whether `s` looks like a bare BitTorrent v2 info-hash (64 hex chars).
fn looks_like_v2_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolves SOURCE: magnet URI, info-hash, http(s) URL or a file path.
/// An error about a file or URL names it once (`reading F: …`,
/// `F: not a valid torrent: …`, `downloading URL: …`); one about a magnet
/// link or info-hash does not repeat it.
pub async fn resolve(source: &str) -> Result<Resolved> {
    if source.starts_with("magnet:") {
        let m = Magnet::parse(source).context("invalid magnet link")?;
        return Ok(Resolved::Magnet(m));
    }
    if source.starts_with("http://") || source.starts_with("https://") {
        let bytes = fetch(source)
            .await
            .with_context(|| format!("downloading {source}"))?;
        return from_torrent_bytes(source, &bytes);
    }
    let path = Path::new(source);
    if !path.exists()
        && let Some(v2) = parse_v2_hex(source)
    {
        return Ok(Resolved::Magnet(Magnet::from_info_hash_v2(v2)));
    }
    if !path.exists() && looks_like_hash(source) {
        let ih = crate::id::InfoHash::parse(source).context("invalid info-hash")?;
        return Ok(Resolved::Magnet(Magnet::from_info_hash(ih)));
    }
    let bytes = read_torrent_file(path)?;
    from_torrent_bytes(source, &bytes)
}

/// A `.torrent`'s bytes: the torrent, or, for a v2-only one without its
/// piece layers, the magnet of its v2 info-hash with its trackers (the
/// layers, and the info dict with them, come from peers).
fn from_torrent_bytes(source: &str, bytes: &[u8]) -> Result<Resolved> {
    match Metainfo::from_bytes(bytes) {
        Ok(m) => Ok(Resolved::Torrent(Box::new(m))),
        Err(MetainfoError::V2Only { name, hash }) => {
            let Some(v2) = parse_v2_hex(&hash) else {
                bail!("{source}: not a valid torrent: bad v2 info-hash {hash}");
            };
            tracing::info!(
                "{source}: a v2-only torrent without piece layers: fetching them (and its metadata) from peers by its v2 info-hash"
            );
            let mut m = Magnet::from_info_hash_v2(v2);
            m.name = Some(name);
            m.trackers = Metainfo::tracker_tiers_of(bytes).concat();
            Ok(Resolved::Magnet(m))
        }
        Err(e) => Err(e).with_context(|| format!("{source}: not a valid torrent")),
    }
}

/// 64 hex digits as 32 bytes.
fn parse_v2_hex(s: &str) -> Option<[u8; 32]> {
    if !looks_like_v2_hash(s) {
        return None;
    }
    let mut v2 = [0u8; 32];
    for (i, b) in v2.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(v2)
}

/// Reads a `.torrent` file with a size cap.
pub fn read_torrent_file(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        bail!(
            "reading {}: it is a folder, not a .torrent file",
            path.display()
        );
    }
    if meta.len() > MAX_TORRENT_FILE {
        bail!(
            "reading {}: {} bytes is too large for a .torrent file",
            path.display(),
            meta.len()
        );
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

async fn fetch(url: &str) -> Result<Vec<u8>> {
    let client = crate::proxy::net::apply(crate::iface::http(
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("btc/", env!("CARGO_PKG_VERSION"))),
    ))
    .build()?;
    // The caller names the URL: reqwest's errors would repeat it.
    let mut resp = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(reqwest::Error::without_url)?;
    if resp.content_length().is_some_and(|n| n > MAX_TORRENT_FILE) {
        bail!("the file is larger than {MAX_TORRENT_FILE} bytes");
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(reqwest::Error::without_url)? {
        if body.len() as u64 + chunk.len() as u64 > MAX_TORRENT_FILE {
            bail!("the file is larger than {MAX_TORRENT_FILE} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_bare_hashes() {
        assert!(looks_like_hash("c12fe1c06bba254a9dc9f519b335aa7c1367a88a"));
        assert!(looks_like_hash("YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK"));
        assert!(!looks_like_hash("file.torrent"));
        assert!(!looks_like_hash("c12fe1c06bba254a9dc9f519b335aa7c1367a88"));
        let v2 = "caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e";
        assert!(looks_like_v2_hash(v2));
        assert!(!looks_like_v2_hash(&v2[1..]));
        assert!(!looks_like_hash(v2));
    }
}
