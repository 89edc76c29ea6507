//! BEP 10 extension protocol: the extended handshake.
//!
//! The extended handshake is a bencoded dictionary sent as extended message
//! id 0. It tells the other side which extensions we speak (and under which
//! message id it must send them to us), how large the info dictionary is
//! (for BEP 9 magnet downloads) and a few optional hints. Pure: no I/O.
//!
//! Decoding is deliberately tolerant: peers in the wild send extra keys,
//! wrongly-typed values and odd sizes, and none of that is a reason to drop
//! an otherwise useful connection. Only a payload that is not a bencoded
//! dictionary at all is an error.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::bencode::{Limits, Value, decode_limited, encode};

/// Extended message id of the handshake itself (BEP 10 fixes it to 0).
pub const HANDSHAKE_ID: u8 = 0;

/// The id under which *we* want to receive `ut_metadata` messages. Peers must
/// use this id when they send us BEP 9 messages; we use the id from *their*
/// handshake when we send to them.
pub const LOCAL_UT_METADATA: u8 = 1;

/// Largest info dictionary we are willing to fetch or buffer. Real torrents
/// stay well below a few MiB; anything larger is a hostile or broken peer
/// trying to make us allocate.
pub const MAX_METADATA_SIZE: u32 = 16 * 1024 * 1024;

/// Largest extended handshake we read. Real ones are a few hundred bytes;
/// the cap (and [`MAX_HANDSHAKE_ITEMS`]) keeps a hostile one from costing
/// more than a small, fixed amount of memory to decode.
pub const MAX_HANDSHAKE_LEN: usize = 64 * 1024;

/// Most bencode values in an extended handshake (libtorrent's has ~20).
pub const MAX_HANDSHAKE_ITEMS: usize = 4096;

/// Longest client name (`v`) we keep; longer ones are truncated so a peer
/// cannot park megabytes in our status output.
const MAX_CLIENT_LEN: usize = 64;

/// Why an extended handshake could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    /// The payload is not valid bencode.
    #[error("extended handshake is not bencode: {0}")]
    Bencode(String),
    /// Valid bencode, but not a dictionary.
    #[error("extended handshake is a bencode {0}, expected a dictionary")]
    NotADict(&'static str),
}

/// The fields of a BEP 10 handshake that btc cares about. Every field is
/// optional because every field is optional on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtendedHandshake {
    /// Message id for `ut_metadata` (BEP 9); `None` when absent or disabled (0).
    pub ut_metadata: Option<u8>,
    /// Message id for `ut_pex` (BEP 11); `None` when absent or disabled (0).
    pub ut_pex: Option<u8>,
    /// Size of the info dictionary in bytes, if the sender has it. Decoded
    /// even when absurd; callers compare with [`MAX_METADATA_SIZE`].
    pub metadata_size: Option<u32>,
    /// Client name and version (`v`), truncated to a sane length.
    pub client: Option<String>,
    /// The sender's TCP listen port (`p`), so we can dial it back later.
    pub listen_port: Option<u16>,
    /// How many outstanding requests the sender queues (`reqq`).
    pub reqq: Option<u32>,
    /// Our address as the sender sees it (`yourip`), 4 or 16 raw bytes.
    pub yourip: Option<IpAddr>,
}

/// Wire shape used only for encoding. Fields are declared in bencode key
/// order so the output is canonical whatever the serializer does with
/// struct field order.
#[derive(Serialize)]
struct Wire<'a> {
    m: BTreeMap<&'static str, u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reqq: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    v: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    yourip: Option<Vec<u8>>,
}

impl ExtendedHandshake {
    /// Bencodes the handshake. `m` is always present (possibly empty) because
    /// some clients treat a handshake without `m` as malformed.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = BTreeMap::new();
        if let Some(id) = self.ut_metadata {
            m.insert("ut_metadata", id);
        }
        if let Some(id) = self.ut_pex {
            m.insert("ut_pex", id);
        }
        let yourip = self.yourip.map(|ip| match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        });
        encode(&Wire {
            m,
            metadata_size: self.metadata_size,
            p: self.listen_port,
            reqq: self.reqq,
            v: self.client.as_deref(),
            yourip,
        })
    }

    /// Reads a handshake payload (the bytes after the extended message id).
    /// Unknown keys and wrongly-typed values are ignored rather than fatal.
    pub fn decode(payload: &[u8]) -> Result<Self, ExtensionError> {
        let limits = Limits {
            max_len: MAX_HANDSHAKE_LEN,
            max_items: MAX_HANDSHAKE_ITEMS,
        };
        let value: Value =
            decode_limited(payload, limits).map_err(|e| ExtensionError::Bencode(e.0))?;
        if !matches!(value, Value::Dict(_)) {
            return Err(ExtensionError::NotADict(kind(&value)));
        }
        let mut hs = ExtendedHandshake::default();
        if let Some(m) = dict_get(&value, b"m") {
            hs.ut_metadata = dict_int(m, b"ut_metadata").and_then(ext_id);
            hs.ut_pex = dict_int(m, b"ut_pex").and_then(ext_id);
        }
        hs.metadata_size = dict_int(&value, b"metadata_size").and_then(|n| u32::try_from(n).ok());
        hs.listen_port = dict_int(&value, b"p")
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&p| p != 0);
        hs.reqq = dict_int(&value, b"reqq").and_then(|n| u32::try_from(n).ok());
        hs.client = dict_bytes(&value, b"v").map(|b| {
            let s = String::from_utf8_lossy(b);
            s.chars().take(MAX_CLIENT_LEN).collect()
        });
        hs.yourip = dict_bytes(&value, b"yourip").and_then(|b| match b.len() {
            4 => <[u8; 4]>::try_from(b)
                .ok()
                .map(|o| IpAddr::V4(Ipv4Addr::from(o))),
            16 => <[u8; 16]>::try_from(b)
                .ok()
                .map(|o| IpAddr::V6(Ipv6Addr::from(o))),
            _ => None,
        });
        Ok(hs)
    }
}

/// An `m` entry: 0 means "disabled", ids above 255 cannot be sent in the
/// one-byte extended id and are treated as absent.
fn ext_id(n: i64) -> Option<u8> {
    u8::try_from(n).ok().filter(|&id| id != 0)
}

/// Looks up `key` in a bencode dictionary; `None` if `dict` is not a dict
/// or lacks the key.
pub(crate) fn dict_get<'v, 'a>(dict: &'v Value<'a>, key: &[u8]) -> Option<&'v Value<'a>> {
    match dict {
        Value::Dict(map) => map.iter().find(|(k, _)| k.0 == key).map(|(_, v)| v),
        _ => None,
    }
}

/// Integer at `key`, if present and an integer.
pub(crate) fn dict_int(dict: &Value<'_>, key: &[u8]) -> Option<i64> {
    match dict_get(dict, key)? {
        Value::Integer(n) => Some(*n),
        _ => None,
    }
}

/// Byte string at `key`, if present and a byte string.
pub(crate) fn dict_bytes<'v>(dict: &'v Value<'_>, key: &[u8]) -> Option<&'v [u8]> {
    match dict_get(dict, key)? {
        Value::Bytes(b) => Some(b.0),
        _ => None,
    }
}

/// Name of a bencode value's type, for error messages.
pub(crate) fn kind(value: &Value<'_>) -> &'static str {
    match value {
        Value::Bytes(_) => "byte string",
        Value::Integer(_) => "integer",
        Value::List(_) => "list",
        Value::Dict(_) => "dictionary",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIBTORRENT: &[u8] = b"d1:md11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei31235e1:pi6881e4:reqqi250e1:v14:libtorrent 2.0e";

    #[test]
    fn decodes_libtorrent_handshake() {
        let hs = ExtendedHandshake::decode(LIBTORRENT).unwrap();
        assert_eq!(
            hs,
            ExtendedHandshake {
                ut_metadata: Some(2),
                ut_pex: Some(1),
                metadata_size: Some(31235),
                client: Some("libtorrent 2.0".into()),
                listen_port: Some(6881),
                reqq: Some(250),
                yourip: None,
            }
        );
    }

    #[test]
    fn encode_is_canonical_and_round_trips() {
        let hs = ExtendedHandshake::decode(LIBTORRENT).unwrap();
        assert_eq!(hs.encode(), LIBTORRENT);
        let ours = ExtendedHandshake {
            ut_metadata: Some(LOCAL_UT_METADATA),
            ut_pex: None,
            metadata_size: None,
            client: Some("btc 0.1.0".into()),
            listen_port: None,
            reqq: None,
            yourip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))),
        };
        let bytes = ours.encode();
        assert_eq!(
            bytes,
            b"d1:md11:ut_metadatai1ee1:v9:btc 0.1.06:yourip4:\x0a\x00\x00\x07e"
        );
        assert_eq!(ExtendedHandshake::decode(&bytes).unwrap(), ours);
    }

    #[test]
    fn ipv6_yourip_round_trips() {
        let hs = ExtendedHandshake {
            yourip: Some("2001:db8::1".parse().unwrap()),
            ..Default::default()
        };
        let bytes = hs.encode();
        assert_eq!(ExtendedHandshake::decode(&bytes).unwrap(), hs);
    }

    #[test]
    fn empty_handshake_still_has_m() {
        let bytes = ExtendedHandshake::default().encode();
        assert_eq!(bytes, b"d1:mdee");
        assert_eq!(
            ExtendedHandshake::decode(&bytes).unwrap(),
            ExtendedHandshake::default()
        );
    }

    #[test]
    fn zero_id_means_disabled() {
        let hs = ExtendedHandshake::decode(b"d1:md11:ut_metadatai0e6:ut_pexi3eee").unwrap();
        assert_eq!(hs.ut_metadata, None);
        assert_eq!(hs.ut_pex, Some(3));
    }

    #[test]
    fn tolerates_junk_values_and_unknown_keys() {
        // m is a list, metadata_size negative, p out of range, v binary,
        // yourip 5 bytes, plus unknown keys: all ignored, nothing fails.
        let payload = b"d1:ai1e1:mli1ee13:metadata_sizei-5e1:pi70000e4:reqq3:abc1:v2:\xff\xfe6:yourip5:abcde1:zd1:xi1eee";
        let hs = ExtendedHandshake::decode(payload).unwrap();
        assert_eq!(hs.ut_metadata, None);
        assert_eq!(hs.metadata_size, None);
        assert_eq!(hs.listen_port, None);
        assert_eq!(hs.reqq, None);
        assert_eq!(hs.client.as_deref(), Some("\u{fffd}\u{fffd}"));
        assert_eq!(hs.yourip, None);
    }

    #[test]
    fn absurd_metadata_size_is_decoded_for_the_caller_to_judge() {
        let hs = ExtendedHandshake::decode(b"d1:mde13:metadata_sizei99999999ee").unwrap();
        assert_eq!(hs.metadata_size, Some(99_999_999));
        assert!(hs.metadata_size.unwrap() > MAX_METADATA_SIZE);
        // Beyond u32 is dropped, not wrapped.
        let hs = ExtendedHandshake::decode(b"d13:metadata_sizei99999999999ee").unwrap();
        assert_eq!(hs.metadata_size, None);
    }

    #[test]
    fn long_client_name_is_truncated() {
        let mut payload = b"d1:v200:".to_vec();
        payload.extend(std::iter::repeat_n(b'x', 200));
        payload.push(b'e');
        let hs = ExtendedHandshake::decode(&payload).unwrap();
        assert_eq!(hs.client.unwrap().len(), MAX_CLIENT_LEN);
    }

    #[test]
    fn oversized_or_crowded_handshake_is_refused() {
        // Length: a valid dict one byte over the cap.
        let mut long = b"d1:v".to_vec();
        let filler = MAX_HANDSHAKE_LEN - 8;
        long.extend(format!("{filler}:").bytes());
        long.extend(std::iter::repeat_n(b'x', filler));
        long.push(b'e');
        assert!(long.len() > MAX_HANDSHAKE_LEN);
        assert!(matches!(
            ExtendedHandshake::decode(&long),
            Err(ExtensionError::Bencode(e)) if e.contains("byte limit")
        ));
        // Values: a short payload holding thousands of empty lists.
        let mut crowded = b"d1:xl".to_vec();
        crowded.extend(b"le".repeat(MAX_HANDSHAKE_ITEMS));
        crowded.extend(b"ee");
        assert!(crowded.len() < MAX_HANDSHAKE_LEN);
        assert!(matches!(
            ExtendedHandshake::decode(&crowded),
            Err(ExtensionError::Bencode(e)) if e.contains("values")
        ));
    }

    #[test]
    fn rejects_non_dict_and_garbage() {
        assert_eq!(
            ExtendedHandshake::decode(b"li1ee"),
            Err(ExtensionError::NotADict("list"))
        );
        assert!(matches!(
            ExtendedHandshake::decode(b"d1:m"),
            Err(ExtensionError::Bencode(_))
        ));
        assert!(matches!(
            ExtendedHandshake::decode(b""),
            Err(ExtensionError::Bencode(_))
        ));
    }
}
