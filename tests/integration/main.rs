//! Integration tests against the real `btc` binary (see util.rs).

mod cli;
mod interop;
mod swarm;
mod util;
mod webseed;
