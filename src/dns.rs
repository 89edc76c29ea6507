//! A DNS stub resolver's codec (RFC 1035): one `A` or `AAAA` question out,
//! the addresses of the answer in, and the nameservers of
//! `/etc/resolv.conf`. Under `--interface` names are looked up through a
//! socket bound to the device (see `iface::resolve`), because the system
//! resolver sends its queries from whichever interface it likes. Pure:
//! every byte of an answer is hostile, every length is checked, name
//! compression pointers are followed a bounded number of times.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest name we ask for (RFC 1035: 255 bytes on the wire).
const MAX_NAME: usize = 253;
/// Addresses kept from one answer at most.
pub const MAX_ADDRS: usize = 16;
/// Answer records looked at at most.
const MAX_RECORDS: usize = 64;
/// Compression pointers followed in one name at most.
const MAX_JUMPS: usize = 16;
/// Nameservers read from resolv.conf at most (glibc's MAXNS is 3).
const MAX_SERVERS: usize = 3;

/// What we ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// IPv4 addresses.
    A,
    /// IPv6 addresses.
    Aaaa,
}

impl Kind {
    fn code(self) -> u16 {
        match self {
            Kind::A => 1,
            Kind::Aaaa => 28,
        }
    }
}

/// Why a name cannot be asked for, or an answer not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name is empty, too long, or has an empty or over-long label.
    #[error("not a host name")]
    BadName,
    /// Shorter than its header or a record says.
    #[error("truncated answer")]
    Truncated,
    /// Not the answer to our question (id, flags or question differ).
    #[error("not an answer to our query")]
    NotOurs,
    /// The server said the name does not exist (NXDOMAIN).
    #[error("no such host")]
    NoSuchName,
    /// The server failed (any other non-zero RCODE).
    #[error("the nameserver answered with error {0}")]
    Server(u8),
    /// A name's compression pointers loop or go too deep.
    #[error("malformed name in answer")]
    BadPointer,
}

/// The query for `name`'s `kind` records, with transaction `id` and
/// recursion desired.
pub fn query(id: u16, name: &str, kind: Kind) -> Result<Vec<u8>, DnsError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(DnsError::BadName);
    }
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(DnsError::BadName);
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&kind.code().to_be_bytes());
    q.extend_from_slice(&[0, 1]); // IN
    Ok(q)
}

/// The addresses of `kind` in `answer` to the query `query` (which we
/// sent: its id and question must come back). CNAME records are skipped:
/// a recursive server puts the target's addresses in the same answer.
pub fn parse_answer(answer: &[u8], query: &[u8], kind: Kind) -> Result<Vec<IpAddr>, DnsError> {
    if answer.len() < 12 || query.len() < 12 {
        return Err(DnsError::Truncated);
    }
    let flags = u16::from_be_bytes([answer[2], answer[3]]);
    // The id, a response (QR), and the same question section.
    let question = &query[12..];
    if answer[..2] != query[..2]
        || flags & 0x8000 == 0
        || answer.get(12..12 + question.len()) != Some(question)
    {
        return Err(DnsError::NotOurs);
    }
    match (flags & 0x000f) as u8 {
        0 => {}
        3 => return Err(DnsError::NoSuchName),
        rcode => return Err(DnsError::Server(rcode)),
    }
    let ancount = u16::from_be_bytes([answer[6], answer[7]]) as usize;
    let mut at = 12 + question.len();
    let mut out = Vec::new();
    for _ in 0..ancount.min(MAX_RECORDS) {
        at = skip_name(answer, at)?;
        let fixed = answer.get(at..at + 10).ok_or(DnsError::Truncated)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let class = u16::from_be_bytes([fixed[2], fixed[3]]);
        let len = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        at += 10;
        let data = answer.get(at..at + len).ok_or(DnsError::Truncated)?;
        at += len;
        if class != 1 || rtype != kind.code() || out.len() >= MAX_ADDRS {
            continue;
        }
        match (kind, data.len()) {
            (Kind::A, 4) => out.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (Kind::Aaaa, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                out.push(IpAddr::V6(Ipv6Addr::from(b)));
            }
            _ => return Err(DnsError::Truncated),
        }
    }
    Ok(out)
}

/// The offset just past the (possibly compressed) name at `at`.
fn skip_name(buf: &[u8], mut at: usize) -> Result<usize, DnsError> {
    // Only the first pointer decides where the record goes on; the
    // pointers after it are only checked for loops.
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *buf.get(at).ok_or(DnsError::Truncated)?;
        match len & 0xc0 {
            0x00 if len == 0 => return Ok(end.unwrap_or(at + 1)),
            0x00 => at += 1 + len as usize,
            0xc0 => {
                let lo = *buf.get(at + 1).ok_or(DnsError::Truncated)?;
                jumps += 1;
                if jumps > MAX_JUMPS {
                    return Err(DnsError::BadPointer);
                }
                end.get_or_insert(at + 2);
                at = (((len & 0x3f) as usize) << 8) | lo as usize;
            }
            _ => return Err(DnsError::BadPointer),
        }
    }
}

/// The `nameserver` addresses of a resolv.conf, in order (at most three,
/// as glibc).
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next())
                .flatten()
                .and_then(|a| a.split('%').next())
                .and_then(|a| a.parse().ok())
        })
        .take(MAX_SERVERS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query of RFC 1035 4.1 for `example.com` A, byte by byte.
    #[test]
    fn a_query_is_the_rfc_layout() {
        let q = query(0xbeef, "example.com.", Kind::A).unwrap();
        let want: Vec<u8> = [
            &[0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0][..],
            &[7],
            b"example",
            &[3],
            b"com",
            &[0, 0, 1, 0, 1],
        ]
        .concat();
        assert_eq!(q, want);
        assert_eq!(query(1, "", Kind::A), Err(DnsError::BadName));
        assert_eq!(query(1, "a..b", Kind::A), Err(DnsError::BadName));
        assert_eq!(query(1, &"x".repeat(64), Kind::A), Err(DnsError::BadName));
    }

    /// An answer as a recursive server gives it: a CNAME, then the
    /// target's A records, names compressed.
    fn answer(q: &[u8], rcode: u8, records: &[(u16, &[u8])]) -> Vec<u8> {
        let mut a = q.to_vec();
        a[2] = 0x81;
        a[3] = 0x80 | rcode;
        a[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for (rtype, data) in records {
            a.extend_from_slice(&[0xc0, 12]);
            a.extend_from_slice(&rtype.to_be_bytes());
            a.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            a.extend_from_slice(&(data.len() as u16).to_be_bytes());
            a.extend_from_slice(data);
        }
        a
    }

    #[test]
    fn addresses_are_read_past_a_cname() {
        let q = query(7, "tracker.test", Kind::A).unwrap();
        let cname = [3, b'w', b'w', b'w', 0xc0, 12];
        let a = answer(
            &q,
            0,
            &[(5, &cname), (1, &[10, 99, 0, 1]), (1, &[10, 99, 0, 2])],
        );
        assert_eq!(
            parse_answer(&a, &q, Kind::A).unwrap(),
            vec![IpAddr::from([10, 99, 0, 1]), IpAddr::from([10, 99, 0, 2])]
        );
        let q6 = query(8, "tracker.test", Kind::Aaaa).unwrap();
        let six = Ipv6Addr::LOCALHOST.octets();
        let a6 = answer(&q6, 0, &[(28, &six)]);
        assert_eq!(
            parse_answer(&a6, &q6, Kind::Aaaa).unwrap(),
            vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]
        );
    }

    #[test]
    fn hostile_answers_are_refused() {
        let q = query(7, "tracker.test", Kind::A).unwrap();
        let good = answer(&q, 0, &[(1, &[1, 2, 3, 4])]);
        // Another id, not a response, another question.
        let mut other = good.clone();
        other[1] ^= 1;
        assert_eq!(parse_answer(&other, &q, Kind::A), Err(DnsError::NotOurs));
        let mut asked = good.clone();
        asked[2] = 0x01;
        assert_eq!(parse_answer(&asked, &q, Kind::A), Err(DnsError::NotOurs));
        let q2 = query(7, "tracker.tesu", Kind::A).unwrap();
        assert_eq!(parse_answer(&good, &q2, Kind::A), Err(DnsError::NotOurs));
        assert_eq!(
            parse_answer(&answer(&q, 3, &[]), &q, Kind::A),
            Err(DnsError::NoSuchName)
        );
        assert_eq!(
            parse_answer(&answer(&q, 2, &[]), &q, Kind::A),
            Err(DnsError::Server(2))
        );
        // Cut anywhere: never a panic, never an address made up.
        for n in 0..good.len() {
            assert!(parse_answer(&good[..n], &q, Kind::A).is_err(), "{n}");
        }
        // A pointer to itself loops.
        let mut looped = answer(&q, 0, &[(1, &[1, 2, 3, 4])]);
        let at = 12 + (q.len() - 12);
        looped[at..at + 2].copy_from_slice(&[0xc0, at as u8]);
        assert_eq!(
            parse_answer(&looped, &q, Kind::A),
            Err(DnsError::BadPointer)
        );
        // An A record of the wrong length.
        let bad = answer(&q, 0, &[(1, &[1, 2, 3])]);
        assert_eq!(parse_answer(&bad, &q, Kind::A), Err(DnsError::Truncated));
    }

    #[test]
    fn nameservers_are_read_as_glibc_does() {
        let conf = "# generated\nsearch example\nnameserver 10.0.0.53\n\
                    nameserver fe80::1%eth0\nnameserver bogus\n  nameserver 9.9.9.9\n\
                    nameserver 1.1.1.1\nnameserver 8.8.8.8\n";
        assert_eq!(
            nameservers(conf),
            vec![
                IpAddr::from([10, 0, 0, 53]),
                "fe80::1".parse::<IpAddr>().unwrap(),
                IpAddr::from([9, 9, 9, 9])
            ]
        );
    }
}
