//! The validated settings of a download run, built once from the command
//! line (in the manner of ripgrep's high-level args) so each setting has
//! one name and one check, wherever it is read.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// A download run as the user asked for it: parsed and checked once (see
/// [`Config::check`]), then read by the command and, through
/// [`crate::session::Options`], by the session. The clap structs in
/// `main.rs` only describe the command line; this is what runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The SOURCEs as typed, in order.
    pub sources: Vec<String>,
    /// `-i FILE`: more sources, one per line (`-` = stdin).
    pub input_file: Option<PathBuf>,
    /// Output folder.
    pub output: PathBuf,
    /// Listen port; `None` = 6881 with fallback.
    pub port: Option<u16>,
    /// Local IP.
    pub bind: Option<IpAddr>,
    /// `--interface`: the device every socket is bound to (the kill-switch;
    /// see [`crate::iface`]).
    pub interface: Option<String>,
    /// Extra trackers.
    pub trackers: Vec<String>,
    /// Peers to dial.
    pub peers: Vec<SocketAddr>,
    /// Exit once complete.
    pub no_seed: bool,
    /// Seed ratio limit.
    pub seed_ratio: Option<f64>,
    /// Seed time limit.
    pub seed_time: Option<Duration>,
    /// DHT bootstrap nodes replacing the defaults.
    pub dht_bootstrap: Vec<String>,
    /// Disable the DHT.
    pub no_dht: bool,
    /// Disable Local Service Discovery.
    pub no_lsd: bool,
    /// TCP only: no uTP socket, no uTP dials.
    pub no_utp: bool,
    /// uTP only: TCP peers are neither dialled nor accepted.
    pub no_tcp: bool,
    /// State folder override.
    pub state_dir: Option<PathBuf>,
    /// Connection limit of the whole process.
    pub max_peers: usize,
    /// Connection limit of each torrent.
    pub max_peers_per_torrent: usize,
    /// Torrents downloading at once (0 = no limit).
    pub max_active: usize,
    /// Connections from one IP at most.
    pub max_per_ip: usize,
    /// Download over existing files that are not the torrent's.
    pub overwrite: bool,
    /// Ignore resume data and hash everything on disk.
    pub check: bool,
    /// Pieces in order.
    pub sequential: bool,
    /// File to write to stdout as it arrives.
    pub stream: Option<usize>,
    /// Files to download.
    pub selection: Option<crate::select::Selection>,
    /// No bars, no summary.
    pub quiet: bool,
    /// Download limit, bytes/s (0 = none).
    pub download_limit: u64,
    /// Upload limit, bytes/s (0 = none).
    pub upload_limit: u64,
    /// JSON lines on stdout instead of bars.
    pub json: bool,
    /// `--encryption`: MSE/PE policy for every connection.
    pub encryption: crate::mse::Encryption,
    /// Ask the router to forward our ports (PCP, NAT-PMP, UPnP); off with
    /// `--no-port-mapping`.
    pub port_mapping: bool,
    /// `--gateway`: the router to ask, when not the default route's.
    pub gateway: Option<std::net::Ipv4Addr>,
    /// `--proxy`: every connection goes through it (its `Debug` hides the
    /// credentials).
    pub proxy: Option<crate::proxy::ProxyUrl>,
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// `--seed-ratio` is negative or not a number.
    #[error("invalid --seed-ratio {0}: must be a number >= 0")]
    SeedRatio(f64),
    /// `--stream N` names a file the selection leaves out.
    #[error("--stream {0}: file {0} is not selected")]
    StreamNotSelected(usize),
    /// A per-torrent choice (`--stream`, `--select`, `--exclude`) with
    /// several sources.
    #[error("{0} applies to one torrent, but {1} sources were given")]
    OneTorrentOnly(&'static str, usize),
    /// Nothing to download.
    #[error("no SOURCE given (on the command line or in the --input-file)")]
    NoSources,
    /// `--no-tcp` behind a proxy that relays no UDP: no way to a peer.
    #[error(
        "--no-tcp with an http:// --proxy leaves no way to reach peers (uTP needs a socks5:// proxy)"
    )]
    NoTransport,
}

impl Config {
    /// Checks what clap cannot and fills in what settings imply: limits of
    /// at least 1, `--stream` implies `--sequential`.
    pub fn check(mut self) -> Result<Config, ConfigError> {
        if let Some(r) = self.seed_ratio
            && !(r >= 0.0 && r.is_finite())
        {
            return Err(ConfigError::SeedRatio(r));
        }
        self.max_peers = self.max_peers.max(1);
        self.max_peers_per_torrent = self.max_peers_per_torrent.clamp(1, self.max_peers);
        self.max_per_ip = self.max_per_ip.max(1);
        self.sequential |= self.stream.is_some();
        if self.no_tcp && self.proxy.as_ref().is_some_and(|p| !p.kind.is_socks()) {
            return Err(ConfigError::NoTransport);
        }
        if let (Some(n), Some(sel)) = (self.stream, &self.selection) {
            let selected = match sel {
                crate::select::Selection::Only(r) => r.iter().any(|r| r.contains(&n)),
                crate::select::Selection::AllBut(r) => !r.iter().any(|r| r.contains(&n)),
            };
            if !selected {
                return Err(ConfigError::StreamNotSelected(n));
            }
        }
        Ok(self)
    }

    /// Checks the sources once they are all known (the input file is read
    /// after the command line): at least one, and per-torrent choices only
    /// with exactly one.
    pub fn check_sources(&self, count: usize) -> Result<(), ConfigError> {
        if count == 0 {
            return Err(ConfigError::NoSources);
        }
        if count > 1 {
            let which = if self.stream.is_some() {
                Some("--stream")
            } else {
                match self.selection {
                    Some(crate::select::Selection::Only(_)) => Some("--select"),
                    Some(crate::select::Selection::AllBut(_)) => Some("--exclude"),
                    None => None,
                }
            };
            if let Some(w) = which {
                return Err(ConfigError::OneTorrentOnly(w, count));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// uTP goes through a SOCKS5 proxy's UDP relay, so `--no-tcp` works
    /// behind one; an http:// proxy carries TCP only.
    #[test]
    fn no_tcp_needs_a_proxy_that_relays_udp() {
        let socks = Config {
            no_tcp: true,
            proxy: Some("socks5://127.0.0.1:1080".parse().unwrap()),
            ..base()
        };
        assert!(socks.check().is_ok());
        let http = Config {
            no_tcp: true,
            proxy: Some("http://127.0.0.1:3128".parse().unwrap()),
            ..base()
        };
        assert!(matches!(http.check(), Err(ConfigError::NoTransport)));
    }

    fn base() -> Config {
        Config {
            sources: vec!["x.torrent".into()],
            input_file: None,
            output: ".".into(),
            port: None,
            bind: None,
            interface: None,
            trackers: vec![],
            peers: vec![],
            no_seed: false,
            seed_ratio: None,
            seed_time: None,
            dht_bootstrap: vec![],
            no_dht: false,
            no_lsd: false,
            no_utp: false,
            no_tcp: false,
            state_dir: None,
            max_peers: 0,
            max_peers_per_torrent: 0,
            max_active: 0,
            max_per_ip: 0,
            overwrite: false,
            check: false,
            sequential: false,
            stream: Some(1),
            selection: None,
            quiet: false,
            download_limit: 0,
            upload_limit: 0,
            json: false,
            encryption: Default::default(),
            port_mapping: false,
            gateway: None,
            proxy: None,
        }
    }

    #[test]
    fn check_fills_implied_settings_and_refuses_bad_ones() {
        let c = base().check().unwrap();
        assert!(c.sequential, "--stream implies --sequential");
        assert_eq!((c.max_peers, c.max_per_ip), (1, 1));
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let c = Config {
                seed_ratio: Some(bad),
                ..base()
            };
            assert!(c.check().is_err(), "{bad}");
        }
        let streamed_but_excluded = Config {
            selection: Some(crate::select::Selection::AllBut(vec![1..=1])),
            ..base()
        };
        assert_eq!(
            streamed_but_excluded.check().unwrap_err(),
            ConfigError::StreamNotSelected(1)
        );
        let streamed_and_selected = Config {
            selection: Some(crate::select::Selection::Only(vec![1..=2])),
            ..base()
        };
        assert!(streamed_and_selected.check().is_ok());
    }

    #[test]
    fn per_torrent_choices_need_exactly_one_source() {
        let c = base().check().unwrap();
        assert_eq!(c.check_sources(0), Err(ConfigError::NoSources));
        assert!(c.check_sources(1).is_ok());
        assert_eq!(
            c.check_sources(3),
            Err(ConfigError::OneTorrentOnly("--stream", 3))
        );
        let plain = Config {
            stream: None,
            ..base()
        }
        .check()
        .unwrap();
        assert!(plain.check_sources(3).is_ok());
        assert_eq!(
            (plain.max_peers_per_torrent, plain.max_peers),
            (1, 1),
            "the per-torrent cap never exceeds the total"
        );
    }
}
