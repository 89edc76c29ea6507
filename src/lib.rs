//! btc: a BitTorrent client for the terminal.
//!
//! # Layout
//!
//! The crate is split along the sans-IO boundary. The **pure core** is
//! synchronous, deterministic and unit-tested without a runtime; the **I/O
//! shell** (tokio) only moves bytes and time between the pieces of the core.
//!
//! Pure core:
//! - [`id`]: `InfoHash`, `PeerId`.
//! - [`bencode`]: the only user of `librqbit-bencode`.
//! - [`metainfo`]: `.torrent` parsing and validation; info-hash over raw bytes.
//! - [`magnet`]: magnet URIs and bare info-hashes.
//! - [`bitfield`]: piece sets in wire order.
//! - [`geometry`]: piece and block lengths.
//! - [`peer::message`], [`peer::codec`], [`peer::handshake`]: the peer wire.
//! - [`peer::extension`], [`peer::metadata`]: BEP 10 and BEP 9.
//! - [`picker`]: which block to ask which peer for next.
//! - [`choker`]: who we upload to.
//! - [`tracker::announce`]: tracker request and response encoding.
//! - [`storage::layout`]: piece offsets to file spans.
//! - [`storage::writeback`]: which written ranges to let go from the page
//!   cache.
//! - [`webseed::plan`]: web seed URLs and byte ranges for picked blocks.
//! - [`create`]: building a `.torrent` from files.
//! - [`resume`]: resume data, and which pieces it lets a start trust.
//! - [`mse`]: the Message Stream Encryption handshake, sans-IO.
//! - [`lsd`]: Local Service Discovery announces (BEP 14).
//! - [`tracker::scrape`](mod@tracker::scrape): scrape requests and answers (HTTP and UDP).
//! - [`peer::pex`]: peer exchange messages (BEP 11).
//! - [`peer::state`], [`peer::swarm`]: one connection's protocol, sans-IO,
//!   and the trait through which it reaches its torrent.
//! - [`utp::packet`], [`utp::ledbat`], [`utp::conn`]: uTP (BEP 29) packets,
//!   LEDBAT congestion control, and one connection's state machine.
//! - [`portmap::pcp`], [`portmap::natpmp`]: PCP and NAT-PMP messages;
//!   [`portmap::timing`]: their retransmit, renewal and restart rules;
//!   [`portmap::gateway`]: the default route's gateway.
//! - [`iface::link`]: whether `--interface`'s device can carry traffic.
//! - [`dns`]: DNS A/AAAA queries and answers, for lookups through that device.
//!
//! I/O shell:
//! - [`peer::conn`]: one task per peer connection (the socket driver).
//! - [`mse::io`], [`mse::stream`]: the MSE driver and the RC4 stream.
//! - [`utp::socket`]: the uTP socket (batched UDP, timers, streams).
//! - [`spawn`]: named, tracked task spawning.
//! - [`mailbox`]: the small bounded queue each torrent's discovery sources
//!   feed (a tokio channel costs ~1.3 KiB before it carries anything).
//! - [`iface`]: `--interface`: every socket bound to the device, its
//!   watcher (`blocked` / `up`) and name lookups through it.
//! - [`tracker`]: HTTP and UDP announce loops.
//! - [`dht`]: the only user of `mainline`.
//! - [`portmap::driver`]: asks the router to forward our ports (PCP,
//!   NAT-PMP, UPnP through `igd-next` in [`portmap::upnp`]), renews and
//!   deletes the mappings.
//! - [`storage::disk`]: blocking file I/O and verification, the handle
//!   cache, and write-behind (start writeback, drop aged ranges).
//! - [`webseed`]: one task per web seed (BEP 19), fetching by HTTP range.
//! - [`session`]: the process-level `Session` (one listener routing
//!   incoming peers by info-hash, one peer id, DHT node and connection
//!   budget, the download queue, LSD) and one actor per torrent
//!   ([`session::torrent`]) that joins everything together.
//! - [`ui`]: progress bars, fed from session statistics.
//! - [`cmd`]: one function per subcommand, called by `main.rs`.

#![forbid(unsafe_code)]

pub mod bencode;
pub mod bitfield;
pub mod choker;
pub mod cmd;
pub mod config;
pub mod create;
pub mod daemon;
pub mod dht;
pub mod dns;
pub mod events;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod geometry;
pub mod id;
pub mod iface;
pub mod lsd;
pub mod magnet;
pub mod mailbox;
pub mod merkle;
pub mod metainfo;
pub mod mse;
pub mod peer;
pub mod picker;
pub mod portmap;
pub mod proxy;
pub mod ratelimit;
pub mod resume;
pub mod select;
pub mod session;
pub mod spawn;
pub mod storage;
pub mod tracker;
pub mod ui;
pub mod utp;
pub mod webseed;

/// An error and its chain of causes on one line. Some libraries (reqwest)
/// put the useful part ("connection refused") only in the causes.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
