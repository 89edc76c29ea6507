//! The async driver of the MSE handshake: moves bytes between a socket
//! and the sans-IO [`Initiator`]/[`Receiver`] under one deadline, and
//! hands back an [`MseStream`] with whatever arrived after the handshake
//! ready to be replayed.
//!
//! [`accept_any`] is the incoming side's entry: it reads 20 bytes, which
//! are either `\x13BitTorrent protocol` (a plaintext handshake, replayed
//! to the caller) or the start of an MSE public key (2^-160 odds of a
//! mix-up), and applies the `--encryption` policy to each.

use super::{
    Encryption, Established, Initiator, Lookup, MAX_PAD, MseError, MseStream, Receiver, Secrets,
};
use crate::id::InfoHash;
use rc4::StreamCipher;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

/// The first 20 bytes of a plaintext BitTorrent handshake.
pub const PLAINTEXT_START: &[u8; 20] = b"\x13BitTorrent protocol";
/// Read size during the handshake: the longest legal handshake without
/// IA is under 1.3 KiB.
const READ_CHUNK: usize = 2048;

/// Why a connection could not be set up under the encryption policy.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The handshake took longer than its deadline (a stalling peer).
    #[error("timed out in the encryption handshake")]
    Timeout,
    /// The socket failed.
    #[error("connection failed")]
    Io(#[from] std::io::Error),
    /// The peer hung up mid-handshake (often: it does not speak MSE).
    #[error("peer closed the connection during the encryption handshake")]
    Closed,
    /// The peer broke the protocol.
    #[error("encryption handshake failed")]
    Protocol(#[from] MseError),
    /// A plaintext handshake under `--encryption require`.
    #[error("plaintext peer refused (--encryption require)")]
    PlaintextRefused,
    /// Not a plaintext handshake under `--encryption disable` (MSE, or
    /// something else).
    #[error("not a plaintext BitTorrent handshake (--encryption disable)")]
    EncryptedRefused,
}

/// The handshake roles as the driver sees them.
trait Machine {
    fn handle_input(&mut self, data: &[u8]) -> Result<usize, MseError>;
    fn take_output(&mut self) -> Vec<u8>;
    fn is_done(&self) -> bool;
}

impl Machine for Initiator {
    fn handle_input(&mut self, data: &[u8]) -> Result<usize, MseError> {
        Initiator::handle_input(self, data)
    }
    fn take_output(&mut self) -> Vec<u8> {
        Initiator::take_output(self)
    }
    fn is_done(&self) -> bool {
        Initiator::is_done(self)
    }
}

impl Machine for Receiver<'_> {
    fn handle_input(&mut self, data: &[u8]) -> Result<usize, MseError> {
        Receiver::handle_input(self, data)
    }
    fn take_output(&mut self) -> Vec<u8> {
        Receiver::take_output(self)
    }
    fn is_done(&self) -> bool {
        Receiver::is_done(self)
    }
}

/// Runs `m` to completion over `stream`, `first` being bytes already read.
/// Returns the wire bytes read past the handshake's end.
async fn drive<S, M>(stream: &mut S, m: &mut M, first: &[u8]) -> Result<Vec<u8>, SetupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    M: Machine,
{
    let mut buf = vec![0u8; READ_CHUNK];
    let mut leftover = Vec::new();
    let mut input: &[u8] = first;
    loop {
        if !input.is_empty() {
            let used = m.handle_input(input)?;
            if m.is_done() {
                leftover.extend_from_slice(&input[used..]);
            }
        }
        let out = m.take_output();
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
        if m.is_done() {
            return Ok(leftover);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(SetupError::Closed);
        }
        input = &buf[..n];
    }
}

/// The stream after `est`, replaying IA and the decrypted `leftover`.
fn into_stream<S>(stream: S, est: Established, mut leftover: Vec<u8>) -> MseStream<S> {
    let mut cipher = est.cipher;
    if let Some(c) = &mut cipher {
        c.decrypt.apply_keystream(&mut leftover);
    }
    let mut prefix = est.initial_payload;
    prefix.append(&mut leftover);
    MseStream::new(stream, cipher, prefix)
}

/// Dials the MSE handshake on a connected `stream` for `info_hash`,
/// offering what `policy` allows; `ia` (usually our BitTorrent handshake)
/// is sent with step 3, encrypted. The peer's first payload bytes come
/// out of the returned stream.
pub async fn initiate<S>(
    mut stream: S,
    info_hash: InfoHash,
    policy: Encryption,
    ia: Vec<u8>,
    limit: Duration,
) -> Result<MseStream<S>, SetupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut m = Initiator::new(info_hash, policy.provide(), ia, Secrets::random(MAX_PAD));
    let leftover = timeout(limit, drive(&mut stream, &mut m, &[]))
        .await
        .map_err(|_| SetupError::Timeout)??;
    let est = m.finish().expect("drive returns when done");
    Ok(into_stream(stream, est, leftover))
}

/// Answers an MSE handshake on `stream`, whose first bytes `first` were
/// already read. `lookup` maps `HASH('req2', SKEY)` to a torrent we serve.
pub async fn respond<S>(
    mut stream: S,
    first: &[u8],
    lookup: &Lookup<'_>,
    policy: Encryption,
    limit: Duration,
) -> Result<(MseStream<S>, InfoHash), SetupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut m = Receiver::new(policy, lookup, Secrets::random(MAX_PAD));
    let leftover = timeout(limit, drive(&mut stream, &mut m, first))
        .await
        .map_err(|_| SetupError::Timeout)??;
    let est = m.finish().expect("drive returns when done");
    let info_hash = est.info_hash;
    Ok((into_stream(stream, est, leftover), info_hash))
}

/// An incoming connection past its first bytes.
#[derive(Debug)]
pub struct Accepted<S> {
    /// The peer's BitTorrent handshake comes out of this first (plaintext
    /// replayed, or decrypted).
    pub stream: MseStream<S>,
    /// The torrent MSE named (`None` for a plaintext handshake): the
    /// BitTorrent handshake that follows must ask for the same one.
    pub info_hash: Option<InfoHash>,
}

/// Tells a plaintext handshake from MSE on an incoming `stream` and
/// applies `policy`: `Prefer` accepts both, `Require` only MSE with RC4,
/// `Disable` only plaintext. All of it within `limit`.
pub async fn accept_any<S>(
    mut stream: S,
    lookup: &Lookup<'_>,
    policy: Encryption,
    limit: Duration,
) -> Result<Accepted<S>, SetupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut first = [0u8; 20];
    match tokio::time::timeout_at(deadline, stream.read_exact(&mut first)).await {
        Err(_) => return Err(SetupError::Timeout),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(SetupError::Closed);
        }
        Ok(r) => r.map(drop)?,
    }
    if &first == PLAINTEXT_START {
        if policy == Encryption::Require {
            return Err(SetupError::PlaintextRefused);
        }
        return Ok(Accepted {
            stream: MseStream::replay(stream, first.to_vec()),
            info_hash: None,
        });
    }
    if policy == Encryption::Disable {
        return Err(SetupError::EncryptedRefused);
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let (stream, ih) = respond(stream, &first, lookup, policy, left).await?;
    Ok(Accepted {
        stream,
        info_hash: Some(ih),
    })
}
