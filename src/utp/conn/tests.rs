//! The connection state machine against a simulated link: synthetic
//! instants, a seeded random source for loss, reordering and duplication,
//! and a bottleneck queue for LEDBAT. No sockets, no clocks.

use super::*;
use crate::utp::packet::parse;

const MSS: usize = 1000;

fn cfg() -> Config {
    Config {
        recv_buffer: 64 * 1024,
        send_buffer: 64 * 1024,
        mss: MSS,
    }
}

/// xorshift64: deterministic and good enough for loss patterns.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// How the simulated link treats packets.
#[derive(Clone, Copy)]
struct LinkShape {
    /// One-way propagation delay.
    delay: Duration,
    loss_pct: u64,
    dup_pct: u64,
    /// Extra random delay up to this (reorders packets).
    jitter: Duration,
    /// A bottleneck of this many bytes per second with an unbounded queue
    /// (0: none).
    rate: u64,
}

const CLEAN: LinkShape = LinkShape {
    delay: Duration::from_millis(5),
    loss_pct: 0,
    dup_pct: 0,
    jitter: Duration::ZERO,
    rate: 0,
};

struct Sim {
    now: Instant,
    epoch: Instant,
    a: Conn,
    b: Option<Conn>,
    /// (deliver at, to b?, datagram)
    wire: Vec<(Instant, bool, Vec<u8>)>,
    shape: LinkShape,
    rng: Rng,
    /// When the bottleneck is next free, per direction.
    busy_until: [Instant; 2],
    /// Largest queueing delay the bottleneck imposed.
    max_queue: Duration,
    sent_datagrams: usize,
    cfg: Config,
}

impl Sim {
    fn new(shape: LinkShape, seed: u64) -> Sim {
        Sim::with_config(shape, seed, cfg())
    }

    fn with_config(shape: LinkShape, seed: u64, cfg: Config) -> Sim {
        let epoch = Instant::now();
        let now = epoch + Duration::from_secs(1);
        Sim {
            cfg,
            now,
            epoch,
            a: Conn::connect(cfg, epoch, now, 1000, 77),
            b: None,
            wire: Vec::new(),
            shape,
            rng: Rng(seed | 1),
            busy_until: [now; 2],
            max_queue: Duration::ZERO,
            sent_datagrams: 0,
        }
    }

    fn put(&mut self, to_b: bool, d: Vec<u8>) {
        self.sent_datagrams += 1;
        if self.rng.chance(self.shape.loss_pct) {
            return;
        }
        let mut at = self.now + self.shape.delay;
        if let Some(ns_per_byte) = 1_000_000_000u64.checked_div(self.shape.rate) {
            let lane = to_b as usize;
            let start = self.busy_until[lane].max(self.now);
            self.max_queue = self.max_queue.max(start - self.now);
            let done = start + Duration::from_nanos(d.len() as u64 * ns_per_byte);
            self.busy_until[lane] = done;
            at = done + self.shape.delay;
        }
        if !self.shape.jitter.is_zero() {
            let j = self.rng.next() % self.shape.jitter.as_micros() as u64;
            at += Duration::from_micros(j);
        }
        if self.rng.chance(self.shape.dup_pct) {
            self.wire
                .push((at + Duration::from_millis(1), to_b, d.clone()));
        }
        self.wire.push((at, to_b, d));
    }

    /// Lets both sides send everything they can now.
    fn transmit(&mut self) {
        let mut buf = vec![0u8; MSS + MAX_HEADER];
        while let Some(n) = self.a.poll_transmit(self.now, &mut buf) {
            self.put(true, buf[..n].to_vec());
        }
        if let Some(mut b) = self.b.take() {
            while let Some(n) = b.poll_transmit(self.now, &mut buf) {
                self.put(false, buf[..n].to_vec());
            }
            self.b = Some(b);
        }
    }

    /// Delivers the next datagram or fires the next timer; false when
    /// nothing is left to happen.
    fn step(&mut self) -> bool {
        self.transmit();
        let next_packet = self.wire.iter().map(|w| w.0).min();
        let next_timer = [
            self.a.poll_timeout(),
            self.b.as_ref().and_then(|b| b.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min();
        match (next_packet, next_timer) {
            (Some(p), t) if t.is_none_or(|t| p <= t) => {
                let i = self.wire.iter().position(|w| w.0 == p).unwrap();
                // `remove`, not `swap_remove`: datagrams due at the same
                // instant (a burst on a link without a rate) keep their order.
                let (at, to_b, d) = self.wire.remove(i);
                self.now = self.now.max(at);
                let (h, payload) = parse(&d).expect("the state machine sends valid packets");
                if to_b {
                    match &mut self.b {
                        Some(b) => b.on_packet(&h, payload, self.now),
                        None if h.ty == Type::Syn => {
                            self.b = Some(Conn::accept(self.cfg, self.epoch, self.now, &h, 5000));
                        }
                        None => {}
                    }
                } else {
                    self.a.on_packet(&h, payload, self.now);
                }
                true
            }
            (_, Some(t)) => {
                self.now = self.now.max(t);
                self.a.on_timeout(self.now);
                if let Some(b) = &mut self.b {
                    b.on_timeout(self.now);
                }
                true
            }
            _ => false,
        }
    }

    fn b(&mut self) -> &mut Conn {
        self.b.as_mut().expect("accepted")
    }
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ salt).collect()
}

/// Moves `a_data` from a to b and `b_data` from b to a, each side
/// shutting down after writing, until both have read the other's EOF.
/// Returns the simulated time taken.
fn transfer(sim: &mut Sim, a_data: &[u8], b_data: &[u8], limit: Duration) -> Duration {
    let start = sim.now;
    let (mut a_sent, mut b_sent) = (0, 0);
    let (mut a_got, mut b_got) = (Vec::new(), Vec::new());
    let (mut a_eof, mut b_eof) = (false, false);
    let mut buf = vec![0u8; 7000];
    while !(a_eof && b_eof) {
        assert!(
            sim.now - start < limit,
            "stuck: a got {} b got {}",
            a_got.len(),
            b_got.len()
        );
        if let Write::Took(n) = sim.a.write(&a_data[a_sent..]) {
            a_sent += n;
            if a_sent == a_data.len() {
                sim.a.shutdown();
            }
        }
        if sim.b.is_some() {
            if let Write::Took(n) = sim.b().write(&b_data[b_sent..]) {
                b_sent += n;
                if b_sent == b_data.len() {
                    sim.b().shutdown();
                }
            }
            loop {
                match sim.b().read(&mut buf) {
                    Read::Data(n) => b_got.extend_from_slice(&buf[..n]),
                    Read::Eof => {
                        b_eof = true;
                        break;
                    }
                    Read::WouldBlock => break,
                    Read::Failed(f) => panic!("b failed: {f:?}"),
                }
            }
        }
        loop {
            match sim.a.read(&mut buf) {
                Read::Data(n) => a_got.extend_from_slice(&buf[..n]),
                Read::Eof => {
                    a_eof = true;
                    break;
                }
                Read::WouldBlock => break,
                Read::Failed(f) => panic!("a failed: {f:?}"),
            }
        }
        if !sim.step() {
            break;
        }
    }
    assert!(a_eof && b_eof, "both ends saw EOF");
    assert!(
        a_got == b_data,
        "b to a intact ({} of {})",
        a_got.len(),
        b_data.len()
    );
    assert!(
        b_got == a_data,
        "a to b intact ({} of {})",
        b_got.len(),
        a_data.len()
    );
    sim.now - start
}

#[test]
fn a_clean_link_carries_both_directions_to_a_clean_close() {
    let mut sim = Sim::new(CLEAN, 1);
    transfer(
        &mut sim,
        &pattern(300_000, 1),
        &pattern(123_457, 2),
        Duration::from_secs(30),
    );
    // Both FINs acknowledged, once what is still on the wire (the last
    // ACKs, in order) has arrived.
    for _ in 0..1000 {
        if sim.wire.is_empty() {
            break;
        }
        sim.step();
    }
    assert!(sim.a.is_finished_sending() && sim.b().is_finished_sending());
    assert!(sim.a.is_closed() && sim.a.failure().is_none());
}

/// Regression-style property: whatever the link does (10% loss, 3%
/// duplicates, reordering by up to 30 ms), every byte arrives once and in
/// order, for several loss patterns.
#[test]
fn loss_duplication_and_reordering_do_not_corrupt_the_stream() {
    let shape = LinkShape {
        delay: Duration::from_millis(10),
        loss_pct: 10,
        dup_pct: 3,
        jitter: Duration::from_millis(30),
        rate: 0,
    };
    for seed in 1..=5 {
        let mut sim = Sim::new(shape, seed * 7919);
        transfer(
            &mut sim,
            &pattern(200_000, 3),
            &pattern(50_000, 4),
            Duration::from_secs(300),
        );
    }
}

/// LEDBAT against a 1 MB/s bottleneck with an unbounded queue and 4 MiB
/// windows (4 s of queue if the window filled it): the transfer runs near
/// the bottleneck's rate while the queue it builds stays near the 100 ms
/// target.
#[test]
fn ledbat_keeps_the_bottleneck_queue_near_its_target() {
    let shape = LinkShape {
        delay: Duration::from_millis(20),
        rate: 1_000_000,
        ..CLEAN
    };
    let big = Config {
        recv_buffer: 4 << 20,
        send_buffer: 4 << 20,
        mss: MSS,
    };
    let mut sim = Sim::with_config(shape, 9, big);
    let data = pattern(8_000_000, 5);
    let took = transfer(&mut sim, &data, &[], Duration::from_secs(60));
    let rate = data.len() as f64 / took.as_secs_f64();
    assert!(rate > 700_000.0, "{rate:.0} B/s through a 1 MB/s link");
    // Slow start may overshoot once; after that LEDBAT holds the queue.
    assert!(
        sim.max_queue < Duration::from_millis(300),
        "queue reached {:?}",
        sim.max_queue
    );
}

/// Regression: at most 2,048 packets (2.8 MB) were ever in flight, so a
/// peer 100 ms away gave uTP at most ~28 MB/s whatever the windows. With
/// 16 MiB buffers on a clean 100 ms link, slow start now takes the window
/// past that.
#[test]
fn a_long_fat_link_keeps_more_than_two_thousand_packets_in_flight() {
    let shape = LinkShape {
        delay: Duration::from_millis(50),
        ..CLEAN
    };
    let big = Config {
        recv_buffer: 16 << 20,
        send_buffer: 16 << 20,
        mss: MSS,
    };
    let mut sim = Sim::with_config(shape, 11, big);
    let data = pattern(80_000_000, 6);
    let took = transfer(&mut sim, &data, &[], Duration::from_secs(60));
    let rate = data.len() as f64 / took.as_secs_f64();
    assert!(
        rate > 30e6,
        "{rate:.0} B/s over a clean 100 ms link: {}",
        sim.a.summary()
    );
}

/// A reader that stops reading closes the window: the sender stops at the
/// receive buffer and nothing is lost or stored beyond it; reading again
/// reopens the window and the rest arrives.
#[test]
fn a_full_receive_window_pauses_the_sender_without_loss() {
    let mut sim = Sim::new(CLEAN, 3);
    let data = pattern(200_000, 6);
    let mut sent = 0;
    for _ in 0..2000 {
        if let Write::Took(n) = sim.a.write(&data[sent..]) {
            sent += n;
        }
        if !sim.step() {
            break;
        }
    }
    let b = sim.b();
    assert!(b.window() < MSS, "the window is full");
    assert!(b.inbox.len() + b.reorder_bytes <= cfg().recv_buffer);
    // The sender is idle apart from its backing-off window probe and the
    // answers to it: no packet storm, and no timeout of a live peer.
    let before = sim.sent_datagrams;
    let start = sim.now;
    while sim.now - start < Duration::from_secs(60) {
        sim.step();
    }
    let probes = sim.sent_datagrams - before;
    assert!(probes < 30, "{probes} datagrams in a minute while blocked");
    assert!(!sim.a.is_closed());
    sim.a.shutdown();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 5000];
    for _ in 0..100_000 {
        if let Write::Took(n) = sim.a.write(&data[sent..]) {
            sent += n;
        }
        match sim.b().read(&mut buf) {
            Read::Data(n) => got.extend_from_slice(&buf[..n]),
            Read::Eof => break,
            _ => {}
        }
        sim.step();
    }
    assert_eq!(got.len(), sent);
    assert!(got == data[..sent], "intact");
}

/// A peer that goes silent is given up after the retries, and a SYN
/// nobody answers fails the connect.
#[test]
fn a_silent_peer_times_out() {
    let mut sim = Sim::new(CLEAN, 4);
    for _ in 0..20 {
        sim.step();
    }
    assert!(sim.a.is_connected());
    sim.a.write(b"hello?");
    sim.shape.loss_pct = 100;
    while !sim.a.is_closed() {
        assert!(sim.step());
    }
    assert_eq!(sim.a.failure(), Some(Failure::TimedOut));
    assert_eq!(sim.a.read(&mut [0; 4]), Read::Failed(Failure::TimedOut));
    assert!(matches!(
        sim.a.write(b"x"),
        Write::Failed(Failure::TimedOut)
    ));

    let mut lonely = Sim::new(
        LinkShape {
            loss_pct: 100,
            ..CLEAN
        },
        5,
    );
    let start = lonely.now;
    while !lonely.a.is_closed() {
        assert!(lonely.step());
    }
    assert_eq!(lonely.a.failure(), Some(Failure::TimedOut));
    assert_eq!(lonely.sent_datagrams, SYN_TRIES as usize);
    assert!(lonely.now - start < Duration::from_secs(10));
}

fn reset_for(conn_id: u16) -> Header {
    let mut h = Header::new(Type::Reset);
    h.conn_id = conn_id;
    h
}

#[test]
fn reset_refuses_a_connect_and_kills_a_connection() {
    let mut sim = Sim::new(CLEAN, 6);
    sim.transmit();
    let now = sim.now;
    sim.a.on_packet(&reset_for(1000), &[], now);
    assert_eq!(sim.a.failure(), Some(Failure::Refused));

    let mut sim = Sim::new(CLEAN, 6);
    for _ in 0..10 {
        sim.step();
    }
    let now = sim.now;
    sim.b().on_packet(&reset_for(1000), &[], now);
    assert_eq!(sim.b().failure(), Some(Failure::Reset));
    assert_eq!(sim.b().poll_transmit(now, &mut [0; 2000]), None);
}

/// A lost SYN-ACK: the initiator's repeated SYN makes the acceptor answer
/// again instead of being ignored.
#[test]
fn a_repeated_syn_is_answered_again() {
    let mut sim = Sim::new(CLEAN, 7);
    let mut buf = [0u8; 2000];
    let n = sim.a.poll_transmit(sim.now, &mut buf).unwrap();
    let (syn, _) = parse(&buf[..n]).unwrap();
    let mut b = Conn::accept(cfg(), sim.epoch, sim.now, &syn, 9);
    assert!(b.poll_transmit(sim.now, &mut buf).is_some(), "SYN-ACK");
    assert!(b.poll_transmit(sim.now, &mut buf).is_none());
    b.on_packet(&syn, &[], sim.now);
    let n = b.poll_transmit(sim.now, &mut buf).expect("SYN-ACK again");
    let (ack, _) = parse(&buf[..n]).unwrap();
    assert_eq!(
        (ack.ty, ack.ack, ack.seq, ack.conn_id),
        (Type::State, syn.seq, 9, syn.conn_id)
    );
}

/// An idle connection sends a keepalive ACK before NATs forget it.
#[test]
fn an_idle_connection_sends_keepalives() {
    let mut sim = Sim::new(CLEAN, 8);
    for _ in 0..10 {
        sim.step();
    }
    let before = sim.sent_datagrams;
    let start = sim.now;
    while sim.now - start < Duration::from_secs(61) {
        sim.step();
    }
    // Each side about twice a minute, never a storm.
    let sent = sim.sent_datagrams - before;
    assert!((2..=8).contains(&sent), "{sent} keepalives");
    assert!(sim.a.is_connected() && !sim.a.is_closed());
}

/// An accepted connection fed by hand.
fn accepted() -> (Conn, Instant) {
    let now = Instant::now();
    let mut syn = Header::new(Type::Syn);
    syn.conn_id = 40;
    syn.seq = 100;
    syn.wnd = 1 << 20;
    let mut c = Conn::accept(cfg(), now, now, &syn, 500);
    c.poll_transmit(now, &mut [0; 2000]);
    (c, now)
}

fn data(seq: u16, ack: u16) -> Header {
    let mut h = Header::new(Type::Data);
    h.conn_id = 41;
    h.seq = seq;
    h.ack = ack;
    h.wnd = 1 << 20;
    h
}

/// Hostile packets: an ACK of data never sent is ignored whole; packets
/// far past the next expected one, or more than the window, are not
/// stored; a FIN does not let data past it in.
#[test]
fn hostile_packets_cannot_grow_state_past_the_budgets() {
    let (mut c, now) = accepted();
    // ack 500 is "one past what we sent": ignored with its payload.
    c.on_packet(&data(101, 500), b"evil", now);
    assert_eq!(c.read(&mut [0; 8]), Read::WouldBlock);
    // Far ahead: dropped.
    c.on_packet(&data(101 + MAX_REORDER as u16 + 5, 499), b"far", now);
    assert!(c.reorder.is_empty());
    // Filling the window out of order, then past it.
    let chunk = vec![7u8; MSS];
    for i in 0..200u16 {
        c.on_packet(&data(102 + i, 499), &chunk, now);
    }
    assert!(c.reorder_bytes <= cfg().recv_buffer, "{}", c.reorder_bytes);
    assert!(c.window() < MSS);
    // The gap fills with a packet the window has no room for: dropped, so
    // the stream never holds more than the buffer.
    c.on_packet(&data(101, 499), &chunk, now);
    assert!(c.inbox.len() + c.reorder_bytes <= cfg().recv_buffer);
    // A FIN, then data claimed to be after it.
    let (mut c, now) = accepted();
    let mut fin = data(101, 499);
    fin.ty = Type::Fin;
    c.on_packet(&fin, &[], now);
    c.on_packet(&data(102, 499), b"after the end", now);
    assert_eq!(c.read(&mut [0; 32]), Read::Eof);
}

/// A SACK naming packets we never sent, or with every bit set, neither
/// panics nor acknowledges anything that was not sent.
#[test]
fn junk_selective_acks_are_harmless() {
    let (mut c, now) = accepted();
    c.write(&vec![1u8; 5 * MSS]);
    let mut buf = [0u8; 2000];
    while c.poll_transmit(now, &mut buf).is_some() {}
    let sent = c.sent.len();
    let mut h = Header::new(Type::State);
    h.conn_id = 41;
    h.seq = 101;
    h.ack = 499; // acks nothing of ours (first data is 500)
    h.wnd = 1 << 20;
    let mut s = Sack::new(MAX_SACK_BYTES);
    for i in 0..s.span() {
        s.set(i);
    }
    h.sack = Some(s);
    c.on_packet(&h, &[], now);
    // Packets 501.. are now held by the peer, 500 is not: lost and resent.
    assert_eq!(c.sent.len(), sent);
    assert!(c.sent[0].lost && !c.sent[0].sacked);
    assert!(c.sent.iter().skip(1).all(|s| s.sacked));
    assert_eq!(c.flight, 0);
    assert!(
        c.poll_transmit(now, &mut buf).is_some(),
        "the retransmission"
    );
}

/// A RESET or anything else for a closed connection produces nothing.
#[test]
fn a_closed_connection_stays_closed() {
    let (mut c, now) = accepted();
    c.on_packet(&reset_for(41), &[], now);
    c.on_packet(&data(101, 499), b"late", now);
    assert_eq!(c.read(&mut [0; 8]), Read::Failed(Failure::Reset));
    assert!(c.poll_timeout().is_none());
}
