//! [`MseStream`]: the byte stream after an MSE handshake (or a plaintext
//! one), RC4 in both directions when it was selected, and the replay of
//! bytes read before the stream existed.
//!
//! Reads decrypt in place in the caller's buffer; writes encrypt into one
//! buffer allocated on the first write and reused after, so the hot path
//! allocates nothing. A write is accepted whole once encrypted (the RC4
//! keystream has moved on and cannot be "unwritten"), and what the socket
//! did not take yet waits in that buffer for the next write or flush.

use super::Rc4Pair;
use rc4::StreamCipher;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Encrypted bytes accepted per write: large enough for a 16 KiB block
/// message in one go, small enough to stay in cache.
const WRITE_CHUNK: usize = 64 * 1024;

/// A stream that replays a prefix, then reads (and writes) through RC4 or
/// unchanged.
pub struct MseStream<S> {
    inner: S,
    cipher: Option<Rc4Pair>,
    /// Plaintext read before this stream existed: the initiator's IA, the
    /// bytes after the handshake in the same segment, or the start of a
    /// plaintext BitTorrent handshake read to tell it from MSE.
    prefix: Vec<u8>,
    prefix_at: usize,
    /// Encrypted bytes not yet taken by `inner`: `wbuf[wpos..wlen]`.
    wbuf: Box<[u8]>,
    wpos: usize,
    wlen: usize,
}

impl<S> std::fmt::Debug for MseStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MseStream")
            .field("encrypted", &self.is_encrypted())
            .field("prefix_left", &(self.prefix.len() - self.prefix_at))
            .finish_non_exhaustive()
    }
}

impl<S> MseStream<S> {
    /// `inner` after a handshake: `cipher` is `None` for plaintext;
    /// `prefix` (plaintext) is read first.
    pub fn new(inner: S, cipher: Option<Rc4Pair>, prefix: Vec<u8>) -> Self {
        MseStream {
            inner,
            cipher,
            prefix,
            prefix_at: 0,
            wbuf: Box::default(),
            wpos: 0,
            wlen: 0,
        }
    }

    /// A plaintext stream that first replays `prefix`, bytes already read
    /// from `inner` (e.g. to tell a plaintext handshake from MSE).
    pub fn replay(inner: S, prefix: Vec<u8>) -> Self {
        Self::new(inner, None, prefix)
    }

    /// Whether RC4 is on.
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// The wrapped stream (e.g. to set TCP options).
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncWrite + Unpin> MseStream<S> {
    /// Writes out the encrypted bytes waiting in `wbuf`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wlen {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.wbuf[self.wpos..self.wlen]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wpos = 0;
        self.wlen = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for MseStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix_at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.prefix_at);
            buf.put_slice(&this.prefix[this.prefix_at..this.prefix_at + n]);
            this.prefix_at += n;
            if this.prefix_at == this.prefix.len() {
                this.prefix = Vec::new();
                this.prefix_at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(c) = &mut this.cipher {
            c.decrypt.apply_keystream(&mut buf.filled_mut()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MseStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.cipher.is_none() {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        ready!(this.poll_drain(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.wbuf.is_empty() {
            this.wbuf = vec![0u8; WRITE_CHUNK].into_boxed_slice();
        }
        let n = data.len().min(WRITE_CHUNK);
        if let Some(c) = &mut this.cipher {
            c.encrypt
                .apply_keystream_b2b(&data[..n], &mut this.wbuf[..n]);
        }
        this.wlen = n;
        // Push at once; what the socket does not take waits for the next
        // call (our waker is registered if it returned Pending).
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
