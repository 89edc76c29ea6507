//! The one door to `librqbit-bencode`.
//!
//! Every other module decodes and encodes bencode through these functions, so
//! the third-party error types (which borrow the input) never leak out and a
//! change of bencode crate touches one file. No I/O.

use serde::{Deserialize, Serialize};

pub use librqbit_bencode::{BencodeValueBorrowed as Value, ByteBuf, WithRawBytes};

/// Nesting deeper than this is refused: real torrents and messages nest a
/// handful of levels, and a hostile `llll…` must not exhaust the stack.
const MAX_DEPTH: usize = 64;

/// A bencode document that could not be decoded into the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bencode: {0}")]
pub struct BencodeError(pub String);

/// Decodes exactly one value; trailing bytes are an error.
pub fn decode<'a, T: Deserialize<'a>>(buf: &'a [u8]) -> Result<T, BencodeError> {
    let (value, consumed) = decode_prefix(buf)?;
    if consumed != buf.len() {
        return Err(BencodeError(format!(
            "{} bytes after the end of the value",
            buf.len() - consumed
        )));
    }
    Ok(value)
}

/// Decodes the value at the start of `buf` and says how many bytes it took.
/// ut_metadata `data` messages put raw bytes right after a dictionary.
pub fn decode_prefix<'a, T: Deserialize<'a>>(buf: &'a [u8]) -> Result<(T, usize), BencodeError> {
    let mut de = librqbit_bencode::BencodeDeserializer::new_from_buf(buf).with_max_depth(MAX_DEPTH);
    match T::deserialize(&mut de) {
        Ok(v) => {
            let rest = de.into_remaining().len();
            Ok((v, buf.len() - rest))
        }
        // librqbit says just "eof"; name the likely cause.
        Err(librqbit_bencode::DeserializeError::Eof) => Err(BencodeError(
            "unexpected end of data (truncated?)".to_owned(),
        )),
        Err(e) => Err(BencodeError(e.to_string())),
    }
}

/// Encodes a value; dictionary keys come out sorted as bencode requires.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail with I/O; the only errors are types bencode
    // cannot express (floats, enums with data), which are bugs in our structs.
    librqbit_bencode::bencode_serialize_to_writer(value, &mut out)
        .expect("btc only serializes bencode-compatible types");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Sample<'a> {
        #[serde(borrow)]
        name: &'a str,
        size: u64,
    }

    #[test]
    fn round_trip_sorts_keys() {
        let s = Sample { name: "x", size: 7 };
        let bytes = encode(&s);
        assert_eq!(bytes, b"d4:name1:x4:sizei7ee");
        assert_eq!(decode::<Sample>(&bytes).unwrap(), s);
    }

    #[test]
    fn prefix_reports_consumed() {
        let buf = b"d4:name1:x4:sizei7eeRAWDATA";
        let (s, used): (Sample, usize) = decode_prefix(buf).unwrap();
        assert_eq!(s.size, 7);
        assert_eq!(&buf[used..], b"RAWDATA");
        assert!(decode::<Sample>(buf).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut buf = vec![b'l'; 10_000];
        buf.extend(std::iter::repeat_n(b'e', 10_000));
        assert!(decode::<Value>(&buf).is_err());
    }
}
