//! The one door to `librqbit-bencode`.
//!
//! Every other module decodes and encodes bencode through these functions, so
//! the third-party error types (which borrow the input) never leak out and a
//! change of bencode crate touches one file. No I/O.
//!
//! Untrusted input is first walked by [`scan`], a loop (no recursion, no
//! allocation) that enforces the caps of a [`Limits`] — length, number of
//! values, nesting depth — and checks every integer and string length for
//! overflow. Only a document that passes is handed to the library, whose own
//! number parsing does not check for overflow.

use serde::{Deserialize, Serialize};

pub use librqbit_bencode::{BencodeValueBorrowed as Value, ByteBuf, WithRawBytes};

/// Nesting deeper than this is refused: real torrents and messages nest a
/// handful of levels, and a hostile `llll…` must not exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// Values allowed in one document unless the caller sets a tighter budget.
/// Each decoded value costs ~60 bytes however short its encoding (`le` is two
/// bytes), so this bounds memory at ~120 MiB; libtorrent uses the same limit.
pub const DEFAULT_MAX_ITEMS: usize = 2_000_000;

/// Caps for one untrusted document, checked before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest input in bytes (for a prefix decode: the whole buffer,
    /// trailing bytes included).
    pub max_len: usize,
    /// Most values: every integer, byte string (dictionary keys included),
    /// list and dictionary counts one.
    pub max_items: usize,
}

impl Limits {
    /// No length cap, [`DEFAULT_MAX_ITEMS`] values.
    pub const DEFAULT: Limits = Limits {
        max_len: usize::MAX,
        max_items: DEFAULT_MAX_ITEMS,
    };
}

/// A bencode document that could not be decoded into the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bencode: {0}")]
pub struct BencodeError(pub String);

/// Decodes exactly one value; trailing bytes are an error.
pub fn decode<'a, T: Deserialize<'a>>(buf: &'a [u8]) -> Result<T, BencodeError> {
    decode_limited(buf, Limits::DEFAULT)
}

/// [`decode`] with the caller's caps.
pub fn decode_limited<'a, T: Deserialize<'a>>(
    buf: &'a [u8],
    limits: Limits,
) -> Result<T, BencodeError> {
    let (value, consumed) = decode_prefix_limited(buf, limits)?;
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
    decode_prefix_limited(buf, Limits::DEFAULT)
}

/// [`decode_prefix`] with the caller's caps.
pub fn decode_prefix_limited<'a, T: Deserialize<'a>>(
    buf: &'a [u8],
    limits: Limits,
) -> Result<(T, usize), BencodeError> {
    let end = scan(buf, limits)?;
    // `scan` checked the bounds; `get` keeps that from being a promise.
    let value = buf
        .get(..end)
        .ok_or_else(|| BencodeError("value runs past the end".to_owned()))?;
    let mut de =
        librqbit_bencode::BencodeDeserializer::new_from_buf(value).with_max_depth(MAX_DEPTH);
    match T::deserialize(&mut de) {
        Ok(v) => {
            let rest = de.into_remaining().len();
            if rest != 0 {
                // The scan and the library disagree on where the value ends.
                return Err(BencodeError(format!(
                    "value ends {rest} bytes before its scanned end"
                )));
            }
            Ok((v, end))
        }
        // librqbit says just "eof"; name the likely cause.
        Err(librqbit_bencode::DeserializeError::Eof) => Err(BencodeError(
            "unexpected end of data (truncated?)".to_owned(),
        )),
        Err(e) => Err(BencodeError(e.to_string())),
    }
}

/// Walks the value at the start of `buf` without recursing or allocating and
/// returns where it ends. Refuses, before the caller decodes anything: input
/// over `limits.max_len`, more than `limits.max_items` values, nesting deeper
/// than [`MAX_DEPTH`], integers outside `i64` or without digits, string
/// lengths that overflow or run past the end, and bytes that start no value.
/// It does not check that dictionary keys are strings (the decoder does).
pub fn scan(buf: &[u8], limits: Limits) -> Result<usize, BencodeError> {
    if buf.len() > limits.max_len {
        return Err(BencodeError(format!(
            "{} bytes, more than the {}-byte limit",
            buf.len(),
            limits.max_len
        )));
    }
    let mut pos = 0usize;
    let mut depth = 0usize;
    let mut items = 0usize;
    loop {
        let Some(&c) = buf.get(pos) else {
            return Err(BencodeError(
                "unexpected end of data (truncated?)".to_owned(),
            ));
        };
        if c == b'e' && depth > 0 {
            depth -= 1;
            pos += 1;
        } else {
            items += 1;
            if items > limits.max_items {
                return Err(BencodeError(format!(
                    "more than {} values",
                    limits.max_items
                )));
            }
            pos = match c {
                b'l' | b'd' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(BencodeError(format!(
                            "nested deeper than {MAX_DEPTH} levels"
                        )));
                    }
                    pos + 1
                }
                b'i' => scan_integer(buf, pos)?,
                b'0'..=b'9' => scan_string(buf, pos)?,
                other => {
                    return Err(BencodeError(format!(
                        "byte {other:#04x} at offset {pos} starts no value"
                    )));
                }
            };
        }
        if depth == 0 {
            return Ok(pos);
        }
    }
}

/// `i[-]DIGITSe` at `at`; returns the offset after the `e`.
fn scan_integer(buf: &[u8], at: usize) -> Result<usize, BencodeError> {
    let bad = || BencodeError(format!("bad integer at offset {at}"));
    let mut pos = at + 1;
    let negative = buf.get(pos) == Some(&b'-');
    if negative {
        pos += 1;
    }
    let first = pos;
    let mut value: i64 = 0;
    while let Some(&d) = buf.get(pos).filter(|d| d.is_ascii_digit()) {
        let digit = i64::from(d - b'0');
        value = value
            .checked_mul(10)
            .and_then(|v| {
                if negative {
                    v.checked_sub(digit)
                } else {
                    v.checked_add(digit)
                }
            })
            .ok_or_else(|| BencodeError(format!("integer at offset {at} does not fit 64 bits")))?;
        pos += 1;
    }
    if pos == first || buf.get(pos) != Some(&b'e') {
        return Err(bad());
    }
    Ok(pos + 1)
}

/// `LEN:BYTES` at `at`; returns the offset after the bytes.
fn scan_string(buf: &[u8], at: usize) -> Result<usize, BencodeError> {
    let mut pos = at;
    let mut len: usize = 0;
    while let Some(&d) = buf.get(pos).filter(|d| d.is_ascii_digit()) {
        len = len
            .checked_mul(10)
            .and_then(|v| v.checked_add(usize::from(d - b'0')))
            .ok_or_else(|| BencodeError(format!("string length at offset {at} overflows")))?;
        pos += 1;
    }
    if buf.get(pos) != Some(&b':') {
        return Err(BencodeError(format!("bad string length at offset {at}")));
    }
    let start = pos + 1;
    match start.checked_add(len) {
        Some(end) if end <= buf.len() => Ok(end),
        _ => Err(BencodeError(format!(
            "string of {len} bytes at offset {at} runs past the end (truncated?)"
        ))),
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

    fn nested(open: &[u8], depth: usize) -> Vec<u8> {
        let mut buf = open.repeat(depth);
        buf.extend_from_slice(b"i0e");
        buf.extend(std::iter::repeat_n(b'e', depth));
        buf
    }

    #[test]
    fn regression_bencode_deep_nesting_is_refused() {
        // 100,000 levels: refused by the scan's counter, before the
        // recursive decoder runs, so the test thread's stack is never at risk.
        let buf = nested(b"l", 100_000);
        let err = decode::<Value>(&buf).unwrap_err();
        assert!(err.0.contains("nested deeper than 64"), "{err}");
        let dicts = nested(b"d1:k", 100_000);
        assert!(decode::<Value>(&dicts).is_err());
        // Unterminated nesting is refused too.
        assert!(decode::<Value>(&vec![b'l'; 100_000]).is_err());
        // The limit itself is fine, one more is not.
        assert!(decode::<Value>(&nested(b"l", MAX_DEPTH)).is_ok());
        assert!(decode::<Value>(&nested(b"l", MAX_DEPTH + 1)).is_err());
    }

    #[test]
    fn regression_bencode_integer_overflow_is_refused() {
        // librqbit-bencode multiplies without overflow checks: these used to
        // panic in debug builds and wrap to a wrong value in release ones.
        for bad in [
            &b"i9223372036854775808e"[..],
            b"i-9223372036854775809e",
            b"i99999999999999999999999e",
        ] {
            assert!(decode::<Value>(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            decode::<Value>(b"i-9223372036854775808e"),
            Ok(Value::Integer(i64::MIN))
        ));
        assert!(matches!(
            decode::<Value>(b"i9223372036854775807e"),
            Ok(Value::Integer(i64::MAX))
        ));
        // No digits, or a sign the format does not have.
        for bad in [&b"ie"[..], b"i-e", b"i+5e", b"i5", b"i 5e"] {
            assert!(decode::<Value>(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn regression_bencode_string_length_overflow_is_refused() {
        // 2^64 + 5 wrapped to 5 in release builds and read as "hello".
        assert!(decode::<Value>(b"18446744073709551621:hello").is_err());
        assert!(decode::<Value>(b"99999999999999999999999999:x").is_err());
        assert!(decode::<Value>(b"6:hello").is_err());
        assert!(decode::<Value>(b"5hello").is_err());
        assert!(matches!(decode::<Value>(b"5:hello"), Ok(Value::Bytes(b)) if b.0 == b"hello"));
    }

    #[test]
    fn item_and_length_caps_are_checked_before_decoding() {
        let mut list = b"l".to_vec();
        list.extend(b"i0e".repeat(9));
        list.push(b'e');
        // Ten values: the list and its nine integers.
        let ten = Limits {
            max_len: list.len(),
            max_items: 10,
        };
        assert!(decode_limited::<Value>(&list, ten).is_ok());
        let err = decode_limited::<Value>(
            &list,
            Limits {
                max_items: 9,
                ..ten
            },
        )
        .unwrap_err();
        assert_eq!(err.0, "more than 9 values");
        let err = decode_limited::<Value>(
            &list,
            Limits {
                max_len: list.len() - 1,
                ..ten
            },
        )
        .unwrap_err();
        assert!(err.0.contains("more than the 28-byte limit"), "{err}");
        // Keys count too.
        assert!(
            decode_limited::<Value>(
                b"d1:a1:be",
                Limits {
                    max_len: 100,
                    max_items: 2
                }
            )
            .is_err()
        );
    }

    #[test]
    fn scan_finds_the_end_and_refuses_junk() {
        assert_eq!(scan(b"d1:ali1ei2eee", Limits::DEFAULT), Ok(13));
        assert_eq!(scan(b"4:spamXYZ", Limits::DEFAULT), Ok(6));
        assert!(scan(b"", Limits::DEFAULT).is_err());
        assert!(scan(b"x", Limits::DEFAULT).is_err());
        assert!(scan(b"e", Limits::DEFAULT).is_err());
        assert!(scan(b"l", Limits::DEFAULT).is_err());
        // Non-string keys pass the scan but not the decoder.
        assert!(decode::<Value>(b"di1ei2ee").is_err());
    }
}
