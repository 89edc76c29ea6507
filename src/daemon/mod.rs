//! `btc daemon`: a long-running process whose torrents are added, stopped
//! and removed at run time, driven over Transmission's RPC (so
//! `transmission-remote` and the tools that speak it work) and by a watch
//! folder.
//!
//! - `gate`: who may call (Host check, basic auth, session-id handshake,
//!   body limit); pure.
//! - `rpc`: the JSON requests and replies; pure.
//! - `serve`: a parsed call applied to the session's torrents
//!   (`session::manager`).
//! - `http`: the hyper shell around them.
//! - `watch`: the watch folder.
//! - `notify`: systemd's readiness messages (`sd_notify`).
//! - `stats`: session-stats' totals across runs.
//!
//! `cmd::daemon` starts it all.

pub mod gate;
pub mod http;
pub mod notify;
pub mod rpc;
pub mod serve;
pub mod stats;
pub mod watch;

/// The daemon's limiters always exist and run at this rate while no
/// limit is set.
pub use crate::ratelimit::UNLIMITED;
