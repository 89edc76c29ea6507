//! The byte streams a peer connection runs over: TCP or uTP (BEP 29).
//!
//! The protocol above ([`super::conn`], MSE) only needs a byte stream;
//! this enum lets one connection task type serve both without boxing.
//! uTP is ours ([`crate::utp`]): one UDP socket on the same port number
//! as our TCP listener, handing out streams that are plain
//! `AsyncRead + AsyncWrite`, with LEDBAT congestion control so bulk
//! transfers yield to other traffic as libtorrent's do.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub use crate::utp::UtpStream;

/// A uTP socket to dial from: the session's or a plain one in tests.
pub trait UtpDialer: Send + Sync {
    /// Opens a uTP connection to `addr`.
    fn connect(
        &self,
        addr: std::net::SocketAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<UtpStream>> + Send + '_>>;
}

impl UtpDialer for std::sync::Arc<crate::utp::Socket> {
    fn connect(
        &self,
        addr: std::net::SocketAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<UtpStream>> + Send + '_>>
    {
        Box::pin(crate::utp::Socket::connect(self, addr))
    }
}

/// Which transport a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    /// TCP.
    #[default]
    Tcp,
    /// uTP over UDP (BEP 29).
    Utp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "TCP",
            Transport::Utp => "uTP",
        })
    }
}

/// How a connection runs: shown in `-v` logs and the peer list, and told
/// to other peers in PEX flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Link {
    /// TCP or uTP.
    pub transport: Transport,
    /// Whether RC4 (MSE) covers the payload.
    pub encrypted: bool,
    /// Where the address came from ("tracker", "DHT", "PEX", "LSD",
    /// "--peer"), or "incoming".
    pub source: &'static str,
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let enc = if self.encrypted {
            "RC4-encrypted"
        } else {
            "plaintext"
        };
        write!(f, "{}, {enc}", self.transport)
    }
}

/// A connected peer's byte stream.
pub enum PeerStream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A uTP connection.
    Utp(UtpStream),
}

impl PeerStream {
    /// Which transport this is.
    pub fn transport(&self) -> Transport {
        match self {
            PeerStream::Tcp(_) => Transport::Tcp,
            PeerStream::Utp(_) => Transport::Utp,
        }
    }
}

impl fmt::Debug for PeerStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerStream({})", self.transport())
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            PeerStream::Utp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Tcp(s) => Pin::new(s).poll_write(cx, data),
            PeerStream::Utp(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            PeerStream::Utp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            PeerStream::Utp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl crate::mse::MseStream<PeerStream> {
    /// How this connection runs; `source` says where its address came
    /// from (or "incoming").
    pub fn link(&self, source: &'static str) -> Link {
        Link {
            transport: self.get_ref().transport(),
            encrypted: self.is_encrypted(),
            source,
        }
    }
}
