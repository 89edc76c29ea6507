//! The peer wire: pure messages, codec, handshake and extensions, plus the
//! connection task that is the only code touching a peer's socket.

pub mod codec;
pub mod conn;
pub mod extension;
pub mod handshake;
pub mod message;
pub mod metadata;
