//! STUB (being written on branch ext): BEP 10 extension handshake.
use std::net::IpAddr;
/// Largest info dict accepted.
pub const MAX_METADATA_SIZE: u32 = 16 * 1024 * 1024;
/// Our id for ut_metadata.
pub const LOCAL_UT_METADATA: u8 = 1;
/// Extended message id of the handshake.
pub const HANDSHAKE_ID: u8 = 0;
/// The extended handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtendedHandshake {
    /// m.ut_metadata
    pub ut_metadata: Option<u8>,
    /// m.ut_pex
    pub ut_pex: Option<u8>,
    /// metadata_size
    pub metadata_size: Option<u32>,
    /// v
    pub client: Option<String>,
    /// p
    pub listen_port: Option<u16>,
    /// reqq
    pub reqq: Option<u32>,
    /// yourip
    pub yourip: Option<IpAddr>,
}
/// Error.
#[derive(Debug, thiserror::Error)]
#[error("bad extended handshake")]
pub struct ExtensionError;
impl ExtendedHandshake {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        Vec::new()
    }
    /// Decode.
    pub fn decode(_p: &[u8]) -> Result<Self, ExtensionError> {
        Err(ExtensionError)
    }
}
