//! STUB (being written on branch ext): BEP 9.
use crate::id::InfoHash;
use bytes::Bytes;
use std::time::Instant;
/// Piece size.
pub const METADATA_PIECE_LEN: usize = 16384;
/// Peer key.
pub type PeerKey = u64;
/// Message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataMessage {
    /// Request.
    Request { piece: u32 },
    /// Data.
    Data { piece: u32, total_size: u32, data: Bytes },
    /// Reject.
    Reject { piece: u32 },
}
/// Error.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// Mismatch.
    #[error("hash mismatch")]
    HashMismatch { contributors: Vec<PeerKey> },
    /// Other.
    #[error("bad")]
    Bad,
}
impl MetadataMessage {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> { Vec::new() }
    /// Decode.
    pub fn decode(_p: &[u8]) -> Result<Self, MetadataError> { Err(MetadataError::Bad) }
}
/// Serve.
pub fn serve_piece(_info: &[u8], _piece: u32) -> Option<MetadataMessage> { None }
/// Assembler.
pub struct MetadataAssembler;
impl MetadataAssembler {
    /// New.
    pub fn new(_ih: InfoHash) -> Self { MetadataAssembler }
    /// Size.
    pub fn on_peer_size(&mut self, _p: PeerKey, _s: u32) -> Result<(), MetadataError> { Ok(()) }
    /// Next.
    pub fn next_request(&mut self, _p: PeerKey, _now: Instant) -> Option<u32> { None }
    /// Data.
    pub fn on_data(&mut self, _p: PeerKey, _piece: u32, _t: u32, _d: &[u8], _now: Instant) -> Result<Option<Bytes>, MetadataError> { Ok(None) }
    /// Reject.
    pub fn on_reject(&mut self, _p: PeerKey, _piece: u32) {}
    /// Gone.
    pub fn on_peer_gone(&mut self, _p: PeerKey) {}
    /// Progress.
    pub fn progress(&self) -> (usize, usize) { (0, 0) }
}
