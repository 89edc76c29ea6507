//! Integration tests against the real `btc` binary (see util.rs).

mod cli;
mod fake_peer;
mod hostile;
mod interop;
mod swarm;
mod util;
mod webseed;
