//! A set of piece indices in the peer-wire bit order (BEP 3: the high bit of
//! the first byte is piece 0). No I/O.

/// Fixed-length piece set. Spare bits in the last byte are always zero.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: usize,
    ones: usize,
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.ones, self.len)
    }
}

impl Bitfield {
    /// All-zero set of `len` pieces.
    pub fn new(len: usize) -> Self {
        Bitfield {
            bytes: vec![0; len.div_ceil(8)],
            len,
            ones: 0,
        }
    }

    /// All-one set of `len` pieces.
    pub fn full(len: usize) -> Self {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Parses a BITFIELD payload. `None` when the length is wrong or a spare
    /// bit is set: BEP 3 says such a peer should be dropped.
    pub fn from_wire(payload: &[u8], len: usize) -> Option<Self> {
        if payload.len() != len.div_ceil(8) {
            return None;
        }
        let spare = payload.len() * 8 - len;
        if spare > 0 && payload[payload.len() - 1] & ((1u8 << spare) - 1) != 0 {
            return None;
        }
        let ones = payload.iter().map(|b| b.count_ones() as usize).sum();
        Some(Bitfield {
            bytes: payload.to_vec(),
            len,
            ones,
        })
    }

    /// The wire form, for a BITFIELD message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of pieces the set covers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the set covers no pieces at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many pieces are in the set.
    pub fn count(&self) -> usize {
        self.ones
    }

    /// True when every piece is in the set.
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// Whether piece `i` is in the set; out-of-range is simply `false`.
    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.bytes[i / 8] & (0x80 >> (i % 8)) != 0
    }

    /// Adds piece `i`; returns whether it was new. Out of range is ignored.
    pub fn set(&mut self, i: usize) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bytes[i / 8] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }

    /// Removes piece `i`.
    pub fn clear(&mut self, i: usize) {
        if self.get(i) {
            self.bytes[i / 8] &= !(0x80 >> (i % 8));
            self.ones -= 1;
        }
    }

    /// Indices in the set, in increasing order.
    pub fn iter_ones(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_order_and_counts() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0));
        assert!(b.set(9));
        assert!(!b.set(9));
        assert!(!b.set(10));
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(b.count(), 2);
        assert_eq!(b.iter_ones().collect::<Vec<_>>(), vec![0, 9]);
        b.clear(0);
        assert_eq!(b.count(), 1);
        assert!(!b.get(0));
    }

    #[test]
    fn from_wire_checks_length_and_spare_bits() {
        assert!(Bitfield::from_wire(&[0xff, 0xc0], 10).unwrap().is_full());
        assert!(Bitfield::from_wire(&[0xff, 0xe0], 10).is_none());
        assert!(Bitfield::from_wire(&[0xff], 10).is_none());
        assert!(Bitfield::from_wire(&[0xff, 0xc0, 0], 10).is_none());
        assert_eq!(Bitfield::full(10).as_bytes(), &[0xff, 0xc0]);
    }
}
