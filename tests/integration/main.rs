//! Integration tests against the real `btc` binary (see util.rs).

mod cli;
mod connections;
mod control;
mod daemon;
mod fake_peer;
mod floods;
mod hashx;
mod hostile;
mod iface;
mod interop;
mod lsd;
mod many;
mod pex;
mod portmap;
mod proxy;
mod resume;
mod scale;
mod soak;
mod storage;
mod swarm;
mod tracker;
mod untrusted;
mod util;
mod wan;
mod webseed;
