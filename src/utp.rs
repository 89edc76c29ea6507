//! uTP (BEP 29): BitTorrent's transport over UDP, with LEDBAT congestion
//! control so that bulk transfers yield to other traffic on the link.
//!
//! The protocol is pure and tested without sockets: [`packet`] parses and
//! encodes headers, [`ledbat`] keeps the congestion window, and [`conn`]
//! is one connection's state machine (handshake, sequence numbers,
//! selective ACKs, retransmission, flow control, FIN and RESET). Only
//! [`socket`] touches the network: one UDP socket, its receive loop, a
//! timer task per connection, and the [`UtpStream`]s handed to the peer
//! layer as plain `AsyncRead + AsyncWrite`.
//!
//! Why our own: the crate we used before had CUBIC only (no LEDBAT, so uTP
//! competed with TCP instead of yielding) and its internal ACK pacing held
//! a loopback transfer near 100 MB/s whatever its settings.

pub mod conn;
pub mod ledbat;
pub mod packet;
pub mod socket;

pub use socket::{DatagramPath, Incoming, Opts, Socket, UtpStream};
