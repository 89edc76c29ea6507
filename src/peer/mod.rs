//! The peer wire: pure messages, codec, handshake and extensions, the
//! sans-IO protocol state of one connection, and the connection task that
//! is the only code touching a peer's socket.

pub mod blame;
pub mod codec;
pub mod conn;
pub mod extension;
pub mod handshake;
pub mod hash_picker;
pub mod hashes;
pub mod message;
pub mod metadata;
pub mod pex;
pub mod state;
pub mod swarm;
pub mod transport;
