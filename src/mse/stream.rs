//! [`MseStream`]: the byte stream after an MSE handshake (or a plaintext
//! one), RC4 in both directions when it was selected, and the replay of
//! bytes read before the stream existed.
//!
//! Reads decrypt in place in the caller's buffer; writes encrypt into one
//! buffer allocated on the first write and reused after, so the hot path
//! allocates nothing. A write reports only what the socket took, so the
//! stream never holds data its caller believes sent (the peer connection
//! never flushes); see the `AsyncWrite` impl for the one rule this
//! asks of callers.

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
    /// Encrypted bytes not yet taken by `inner`: `wbuf[wpos..wlen]`, the
    /// encryption of the first bytes the caller will offer next.
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
    /// Encrypts up to `WRITE_CHUNK` bytes of `data` once and writes them;
    /// returns how many the socket took, like the socket itself would. The
    /// encrypted bytes it did not take are kept and sent first on the next
    /// call, which must offer the same bytes again, as every caller that
    /// keeps its unsent data does (`write_all`, `write_buf`, copies,
    /// framed writers): the keystream has moved past them and they cannot
    /// be encrypted twice. Nothing is reported written that was not, so
    /// there is nothing for `flush` to push.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(c) = &mut this.cipher else {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        };
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.wpos == this.wlen {
            if this.wbuf.is_empty() {
                this.wbuf = vec![0u8; WRITE_CHUNK].into_boxed_slice();
            }
            let n = data.len().min(WRITE_CHUNK);
            c.encrypt
                .apply_keystream_b2b(&data[..n], &mut this.wbuf[..n]);
            this.wpos = 0;
            this.wlen = n;
        }
        // wbuf[wpos..wlen] is the encryption of data's first bytes; a
        // shorter offer (a rate limiter's) gets a shorter write.
        let end = this.wlen.min(this.wpos + data.len());
        let k = ready!(Pin::new(&mut this.inner).poll_write(cx, &this.wbuf[this.wpos..end]))?;
        this.wpos += k;
        if this.wpos == this.wlen {
            this.wpos = 0;
            this.wlen = 0;
        }
        Poll::Ready(Ok(k))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
