//! `dht.state`: the IPv4 node's good nodes and our public IP as other
//! nodes reported it, saved so a restart bootstraps at once and with a BEP
//! 42 id valid for that IP; and where the state folder is. The IPv6 node's
//! `dht6.state` uses the same careful read and write.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

/// Name of the state file inside the state directory.
pub const STATE_FILE: &str = "dht.state";

/// Nodes written to / read from the state file; the routing table of a
/// healthy node holds a few hundred, and a few dozen good ones bootstrap.
pub(crate) const MAX_STATE_NODES: usize = 256;

/// The state file is never read past this many bytes.
pub(crate) const MAX_STATE_BYTES: u64 = 64 * 1024;

/// What `dht.state` holds.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct SavedState {
    /// Good nodes of the last routing table, to bootstrap from.
    pub(crate) nodes: Vec<SocketAddrV4>,
    /// Our public IP as other nodes reported it.
    pub(crate) public_ip: Option<Ipv4Addr>,
}

/// Whether `ip` can be a public address (mainline treats ids of private,
/// loopback and link-local addresses as always valid, so those are not
/// worth keeping).
pub(crate) fn is_public(ip: &Ipv4Addr) -> bool {
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation())
}

/// Reads the saved state; a missing, unreadable or garbled file just yields
/// less (or nothing), since the state is only a speed-up.
pub(crate) fn load_state(path: &Path) -> SavedState {
    read_state_text(path).map_or_else(SavedState::default, |t| parse_state(&t))
}

/// A state file's text, read up to `MAX_STATE_BYTES`; `None` when it
/// cannot be read (a missing file is not worth a log line).
pub(crate) fn read_state_text(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    let read =
        std::fs::File::open(path).and_then(|f| f.take(MAX_STATE_BYTES).read_to_string(&mut text));
    match read {
        Ok(_) => Some(text),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::debug!(path = %path.display(), error = %e, "cannot read dht state");
            }
            None
        }
    }
}

/// Writes `text` to `path` so that a crash leaves the old file or the new
/// one, never half of it: a synced temporary file, then a rename.
pub(crate) fn write_state_text(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("state.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// [`parse_state`] for callers outside this module (the fuzz target): the
/// nodes and the public IP a state file's text names.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse_state_text(text: &str) -> (Vec<SocketAddrV4>, Option<Ipv4Addr>) {
    let s = parse_state(text);
    (s.nodes, s.public_ip)
}

/// Parses the state text: `node IP:PORT` and `public-ip IP` lines; other
/// lines are ignored so the format can grow.
pub(crate) fn parse_state(text: &str) -> SavedState {
    let mut out = SavedState::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("node"), Some(word)) => {
                if let Ok(addr) = word.parse::<SocketAddrV4>()
                    && addr.port() != 0
                    && out.nodes.len() < MAX_STATE_NODES
                    && !out.nodes.contains(&addr)
                {
                    out.nodes.push(addr);
                }
            }
            (Some("public-ip"), Some(word)) => {
                out.public_ip = word.parse().ok().filter(is_public);
            }
            _ => {}
        }
    }
    out
}

/// Writes the state file via a temporary file and rename, so a crash never
/// leaves a half-written file behind.
pub(crate) fn write_state(path: &Path, state: &SavedState) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut text = String::from("# btc dht state: our public IP, then known good nodes\n");
    if let Some(ip) = state.public_ip {
        let _ = writeln!(text, "public-ip {ip}");
    }
    for node in state.nodes.iter().take(MAX_STATE_NODES) {
        let _ = writeln!(text, "node {node}");
    }
    write_state_text(path, &text)
}

/// The default state dir: `$XDG_STATE_HOME/btc` or `~/.local/state/btc`.
pub fn default_state_dir() -> Option<PathBuf> {
    state_dir_from(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}

/// [`default_state_dir`] without the environment, for tests. Relative XDG
/// paths are ignored, as the XDG spec requires.
pub(crate) fn state_dir_from(
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    if let Some(x) = xdg.map(PathBuf::from).filter(|p| p.is_absolute()) {
        return Some(x.join("btc"));
    }
    home.map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .map(|h| h.join(".local").join("state").join("btc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_text_round_trip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(STATE_FILE);
        let state = SavedState {
            nodes: vec![
                "1.2.3.4:6881".parse().unwrap(),
                "5.6.7.8:1".parse().unwrap(),
            ],
            public_ip: Some(Ipv4Addr::new(93, 184, 216, 34)),
        };
        write_state(&path, &state).unwrap();
        assert_eq!(load_state(&path), state);
        let parsed = parse_state(
            "junk\nnode\nnode 1.1.1.1:0\nnode 9.9.9.9:9 extra\nnode [::1]:5\nfuture x\npublic-ip nope\n",
        );
        assert_eq!(
            parsed,
            SavedState {
                nodes: vec!["9.9.9.9:9".parse().unwrap()],
                public_ip: None
            }
        );
        // Private addresses say nothing about our BEP 42 id.
        assert_eq!(parse_state("public-ip 192.168.1.2\n").public_ip, None);
        assert_eq!(
            load_state(&dir.path().join("missing")),
            SavedState::default()
        );
    }

    #[test]
    fn default_state_dir_rules() {
        assert_eq!(
            state_dir_from(Some("/x/state".into()), Some("/home/u".into())),
            Some(PathBuf::from("/x/state/btc"))
        );
        assert_eq!(
            state_dir_from(Some("rel".into()), Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.local/state/btc"))
        );
        assert_eq!(state_dir_from(None, None), None);
    }
}
