//! One uTP connection as a pure state machine: packets and instants in,
//! packets out, bytes to and from the application through two bounded
//! buffers. The socket task ([`super::socket`]) only moves datagrams and
//! time between it and the network.
//!
//! What it keeps, and why it is bounded:
//! - the send buffer holds written bytes until the peer acknowledges them
//!   (packets are ranges of it, so a retransmission re-reads the range);
//! - the receive side holds in-order bytes until the application reads
//!   them and out-of-order packets until the gap fills, together never
//!   more than the window we advertise; a packet past it is dropped, not
//!   stored, so a peer cannot make us hold more than `recv_buffer` bytes
//!   or [`MAX_REORDER`] packets.
//!
//! The socket may resize both buffers as connections come and go
//! ([`Conn::set_buffers`]). A buffer never shrinks below what it holds:
//! it shrinks as the application reads or the peer acknowledges, and the
//! window we advertise closes meanwhile.
//!
//! Loss is found by selective ACKs (a packet with three later-sent packets
//! acknowledged around it is resent) and by the retransmission timer,
//! which backs off and gives up after [`MAX_RETRIES`] silent rounds.
//! Congestion control is LEDBAT ([`super::ledbat`]).

use super::ledbat::Ledbat;
use super::packet::{HEADER_LEN, Header, MAX_SACK_BYTES, Sack, Type};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The retransmission timeout before any round trip is measured.
const INITIAL_RTO: Duration = Duration::from_secs(1);
/// The least retransmission timeout (libtorrent's is 500 ms; SACKs catch
/// most losses long before it).
const MIN_RTO: Duration = Duration::from_millis(250);
/// The most the timeout backs off to.
const MAX_RTO: Duration = Duration::from_secs(20);
/// Silent timeouts in a row before a connection is given up.
pub const MAX_RETRIES: u32 = 6;
/// SYNs sent before a connect fails (1 + 2 + 4 s).
const SYN_TRIES: u32 = 3;
/// An idle connection sends an empty ACK this often (NATs forget UDP
/// mappings after about 30 s).
pub const KEEPALIVE: Duration = Duration::from_secs(29);
/// A connection that hears nothing for this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The most out-of-order packets held, and how far past the next expected
/// packet one may be.
pub const MAX_REORDER: usize = 1024;
/// The most packets in flight (11 MB: the sequence space and the SACK's
/// reach stay meaningful; 2,048 held a peer 100 ms away to ~28 MB/s).
const MAX_IN_FLIGHT: usize = 8192;
/// Packets acknowledged after a packet that make it count as lost.
const DUP_THRESHOLD: usize = 3;

/// How big the buffers and packets are.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Bytes held for the application to read (our advertised window).
    pub recv_buffer: usize,
    /// Bytes written and not yet acknowledged.
    pub send_buffer: usize,
    /// Payload bytes per packet.
    pub mss: usize,
}

/// Why a connection ended badly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The peer sent RESET to our SYN.
    Refused,
    /// The peer sent RESET.
    Reset,
    /// The peer stopped answering.
    TimedOut,
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// This many bytes were copied.
    Data(usize),
    /// Nothing yet.
    WouldBlock,
    /// The peer finished its stream and everything was read.
    Eof,
    /// The connection failed.
    Failed(Failure),
}

/// What a write found.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    /// This many bytes were taken (0: the send buffer is full).
    Took(usize),
    /// The stream was shut down for writing.
    Shut,
    /// The connection failed.
    Failed(Failure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    SynSent,
    Connected,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Syn,
    Data,
    Fin,
}

/// A packet sent and not yet acknowledged.
#[derive(Debug, Clone)]
struct Sent {
    seq: u16,
    kind: Kind,
    /// Stream offset of the first payload byte.
    start: u64,
    len: u32,
    sent_at: Instant,
    /// Transmission number of its latest send: loss is judged by send
    /// order, which instants cannot always tell apart.
    tx: u64,
    sends: u32,
    /// The peer holds it (selective ACK) but has not acked it in order.
    sacked: bool,
    /// Counted in `flight`.
    in_flight: bool,
    /// To be sent again.
    lost: bool,
}

/// One uTP connection.
#[derive(Debug)]
pub struct Conn {
    cfg: Config,
    epoch: Instant,
    phase: Phase,
    failure: Option<Failure>,
    recv_id: u16,
    send_id: u16,
    /// The next sequence number to use.
    seq_nr: u16,
    /// The SYN's sequence number (initiator only).
    syn_seq: Option<u16>,
    /// The peer's SYN's sequence number (acceptor only): a SYN with it
    /// again means our SYN-ACK was lost.
    peer_syn: Option<u16>,
    /// Our first sequence number (acceptor only): every SYN-ACK names it,
    /// even a repeated one after data went out, since the initiator counts
    /// our packets from it.
    first_seq: u16,
    /// The peer has shown it has our SYN-ACK (any packet but a SYN): until
    /// then the SYN-ACK goes out before anything else.
    confirmed: bool,
    /// Transmissions so far.
    tx_count: u64,

    // Sending.
    /// Unacknowledged and unsent bytes; `out[0]` is stream offset `out_base`.
    out: VecDeque<u8>,
    out_base: u64,
    /// Stream offset of the first byte not yet in a packet.
    next_unsent: u64,
    sent: VecDeque<Sent>,
    /// Payload bytes in packets counted as in flight.
    flight: usize,
    lost_count: usize,
    /// Window cuts for a loss, and retransmission timeouts (for logs).
    window_cuts: u32,
    timeouts: u32,
    cc: Ledbat,
    peer_wnd: usize,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    rto_deadline: Option<Instant>,
    retries: u32,
    /// No window cut for a loss until the cumulative ACK passes this.
    recovery_until: Option<u16>,
    fin_queued: bool,
    fin_sent: bool,
    fin_acked: bool,

    // Receiving.
    /// The last packet received in order.
    ack_nr: u16,
    inbox: VecDeque<u8>,
    reorder: HashMap<u16, Vec<u8>>,
    reorder_bytes: usize,
    /// The sizes the socket wants the buffers to have; `cfg` holds the
    /// sizes in force, which reach these as data drains.
    recv_target: usize,
    send_target: usize,
    peer_fin: Option<u16>,
    eof: bool,
    /// Our receive clock minus the peer's send clock, last packet.
    reply_micro: u32,
    need_ack: bool,
    last_recv: Instant,
    last_sent: Instant,
}

/// `a` comes after `b` in the 16-bit sequence space.
fn seq_after(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) > 0
}

impl Conn {
    fn new(cfg: Config, epoch: Instant, now: Instant, recv_id: u16, send_id: u16) -> Conn {
        let mss = cfg.mss.max(1);
        Conn {
            cfg: Config { mss, ..cfg },
            epoch,
            phase: Phase::SynSent,
            failure: None,
            recv_id,
            send_id,
            seq_nr: 1,
            syn_seq: None,
            peer_syn: None,
            first_seq: 0,
            confirmed: true,
            tx_count: 0,
            out: VecDeque::new(),
            out_base: 0,
            next_unsent: 0,
            sent: VecDeque::new(),
            flight: 0,
            lost_count: 0,
            window_cuts: 0,
            timeouts: 0,
            cc: Ledbat::new(mss),
            peer_wnd: mss,
            srtt: None,
            rttvar: Duration::ZERO,
            rto: INITIAL_RTO,
            rto_deadline: None,
            retries: 0,
            recovery_until: None,
            fin_queued: false,
            fin_sent: false,
            fin_acked: false,
            ack_nr: 0,
            inbox: VecDeque::new(),
            reorder: HashMap::new(),
            reorder_bytes: 0,
            recv_target: cfg.recv_buffer,
            send_target: cfg.send_buffer,
            peer_fin: None,
            eof: false,
            reply_micro: 0,
            need_ack: false,
            last_recv: now,
            last_sent: now,
        }
    }

    /// A connection we open: `recv_id` is ours (the peer sends to it),
    /// `seq` our first sequence number. The SYN goes out on the first
    /// [`Self::poll_transmit`]. `epoch` is the socket's clock origin.
    pub fn connect(cfg: Config, epoch: Instant, now: Instant, recv_id: u16, seq: u16) -> Conn {
        let mut c = Conn::new(cfg, epoch, now, recv_id, recv_id.wrapping_add(1));
        c.seq_nr = seq;
        c.syn_seq = Some(seq);
        c.push_sent(Kind::Syn, 0, 0, now);
        if let Some(s) = c.sent.back_mut() {
            s.lost = true; // "to be sent": the first transmission
            s.in_flight = false;
            s.sends = 0;
        }
        c.lost_count = 1;
        c
    }

    /// A connection a peer opened with `syn`; `seq` is our first sequence
    /// number. The SYN-ACK goes out on the first [`Self::poll_transmit`].
    pub fn accept(cfg: Config, epoch: Instant, now: Instant, syn: &Header, seq: u16) -> Conn {
        let mut c = Conn::new(cfg, epoch, now, syn.conn_id.wrapping_add(1), syn.conn_id);
        c.phase = Phase::Connected;
        c.seq_nr = seq;
        c.ack_nr = syn.seq;
        c.peer_syn = Some(syn.seq);
        c.first_seq = seq;
        c.confirmed = false;
        c.peer_wnd = syn.wnd as usize;
        c.reply_micro = c.micros(now).wrapping_sub(syn.ts);
        c.need_ack = true;
        c
    }

    /// Asks for new buffer sizes: a larger one takes effect at once (and
    /// a window that opens is announced), a smaller one as the buffer
    /// drains below it.
    pub fn set_buffers(&mut self, recv: usize, send: usize) {
        let before = self.window();
        self.recv_target = recv;
        self.send_target = send;
        self.fit_buffers();
        self.announce_window(before);
    }

    /// Bytes received and not yet read (in order or not).
    pub fn received_unread(&self) -> usize {
        self.inbox.len() + self.reorder_bytes
    }

    /// The receive and send buffer sizes in force.
    pub fn buffers(&self) -> (usize, usize) {
        (self.cfg.recv_buffer, self.cfg.send_buffer)
    }

    /// Brings the buffers toward their targets, never below what they hold.
    fn fit_buffers(&mut self) {
        self.cfg.recv_buffer = self.recv_target.max(self.inbox.len() + self.reorder_bytes);
        self.cfg.send_buffer = self.send_target.max(self.out.len());
    }

    /// Tells a peer held back by our window that it opened again.
    fn announce_window(&mut self, before: usize) {
        let half = self.cfg.recv_buffer / 2;
        if before < half.max(self.cfg.mss) && self.window() >= half {
            self.need_ack = true;
        }
    }

    /// The connection id the peer sends to (the demultiplexing key).
    pub fn recv_id(&self) -> u16 {
        self.recv_id
    }

    /// Whether the handshake completed.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// Whether the connection is over, by failure or by both sides
    /// finishing.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// How it failed, if it did.
    pub fn failure(&self) -> Option<Failure> {
        self.failure
    }

    /// Whether everything we wrote, and our FIN, has been acknowledged
    /// (what a dropped stream waits for before it is forgotten).
    pub fn is_finished_sending(&self) -> bool {
        self.fin_acked
    }

    /// Bytes the application can write now.
    pub fn send_space(&self) -> usize {
        self.cfg.send_buffer.saturating_sub(self.out.len())
    }

    /// Whether a read would return something other than `WouldBlock`.
    pub fn is_readable(&self) -> bool {
        !self.inbox.is_empty() || self.eof || self.phase == Phase::Closed
    }

    /// The congestion state in a few words, for `-vv` logs: what a slow
    /// uTP transfer is first checked against.
    pub fn summary(&self) -> String {
        format!(
            "window {} KiB{} (peer's {} KiB), queueing {} ms, srtt {} ms, {} packets sent, {} cut for loss, {} timeouts",
            self.cc.window() >> 10,
            if self.cc.in_slow_start() {
                " in slow start"
            } else {
                ""
            },
            self.peer_wnd >> 10,
            self.cc.queueing_delay_us() / 1000,
            self.srtt.map_or(0, |d| d.as_millis()),
            self.tx_count,
            self.window_cuts,
            self.timeouts,
        )
    }

    /// The current congestion window (for logs and tests).
    pub fn congestion_window(&self) -> usize {
        self.cc.window()
    }

    fn micros(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_micros() as u32
    }

    /// The window we advertise: what the receive buffer can still take.
    fn window(&self) -> usize {
        self.cfg
            .recv_buffer
            .saturating_sub(self.inbox.len() + self.reorder_bytes)
    }

    fn fail(&mut self, why: Failure) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            self.failure = Some(why);
            self.rto_deadline = None;
        }
    }

    /// Copies received bytes into `buf`.
    pub fn read(&mut self, buf: &mut [u8]) -> Read {
        if self.inbox.is_empty() || buf.is_empty() {
            return match (self.failure, self.eof) {
                (Some(f), _) => Read::Failed(f),
                (None, true) => Read::Eof,
                _ if self.phase == Phase::Closed => Read::Eof,
                _ => Read::WouldBlock,
            };
        }
        let before = self.window();
        let n = buf.len().min(self.inbox.len());
        let (a, b) = self.inbox.as_slices();
        let from_a = n.min(a.len());
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        self.inbox.drain(..n);
        self.fit_buffers();
        self.announce_window(before);
        Read::Data(n)
    }

    /// Takes bytes to send, as many as the send buffer has room for.
    pub fn write(&mut self, data: &[u8]) -> Write {
        if let Some(f) = self.failure {
            return Write::Failed(f);
        }
        if self.fin_queued || self.phase == Phase::Closed {
            return Write::Shut;
        }
        let n = data.len().min(self.send_space());
        self.out.extend(&data[..n]);
        Write::Took(n)
    }

    /// Ends our stream: a FIN follows the bytes already written.
    pub fn shutdown(&mut self) {
        self.fin_queued = true;
    }

    fn push_sent(&mut self, kind: Kind, start: u64, len: u32, now: Instant) {
        self.sent.push_back(Sent {
            seq: self.seq_nr,
            kind,
            start,
            len,
            sent_at: now,
            tx: self.tx_count,
            sends: 1,
            sacked: false,
            in_flight: true,
            lost: false,
        });
        self.seq_nr = self.seq_nr.wrapping_add(1);
        self.flight += len as usize;
        self.tx_count += 1;
    }

    /// Handles one packet from the peer (already matched to this
    /// connection by address and id).
    pub fn on_packet(&mut self, h: &Header, payload: &[u8], now: Instant) {
        if self.phase == Phase::Closed {
            // After a clean close the peer may resend its FIN if our ACK
            // was lost; answer it so it can finish too.
            if self.failure.is_none() && matches!(h.ty, Type::Data | Type::Fin) {
                self.need_ack = true;
            }
            return;
        }
        match h.ty {
            Type::Reset => {
                let why = if self.phase == Phase::SynSent {
                    Failure::Refused
                } else {
                    Failure::Reset
                };
                self.fail(why);
                return;
            }
            Type::Syn => {
                // Our SYN-ACK was lost: send it again.
                if self.peer_syn == Some(h.seq) {
                    self.need_ack = true;
                    self.last_recv = now;
                }
                return;
            }
            _ => {}
        }
        if self.phase == Phase::SynSent {
            if h.ty != Type::State || Some(h.ack) != self.syn_seq {
                return;
            }
            // A STATE names the sequence number the peer will use next;
            // its first data packet is the one after our ack_nr.
            self.ack_nr = h.seq.wrapping_sub(1);
            self.phase = Phase::Connected;
        }
        // An ACK of a packet we never sent is forged or broken.
        if seq_after(h.ack, self.seq_nr.wrapping_sub(1)) {
            return;
        }
        self.last_recv = now;
        self.retries = 0;
        self.confirmed = true;
        self.reply_micro = self.micros(now).wrapping_sub(h.ts);
        self.peer_wnd = h.wnd as usize;
        let flight_before = self.flight;
        let mut acked = self.take_cumulative_ack(h.ack, now);
        if let Some(sack) = &h.sack {
            acked += self.take_sack(h.ack, sack);
        }
        if acked > 0 {
            if h.ts_diff != 0 {
                self.cc.on_delay_sample(h.ts_diff, now);
            }
            self.cc.on_ack(acked, flight_before);
        }
        if matches!(h.ty, Type::Data | Type::Fin) {
            self.on_data(h, payload);
        }
        if self.fin_acked && self.eof {
            self.phase = Phase::Closed;
            self.rto_deadline = None;
        }
    }

    /// Pops what `ack` acknowledges; returns the payload bytes newly
    /// acknowledged (not counting ones a SACK already counted).
    fn take_cumulative_ack(&mut self, ack: u16, now: Instant) -> usize {
        let Some(front) = self.sent.front() else {
            return 0;
        };
        let n = ack.wrapping_sub(front.seq).wrapping_add(1) as usize;
        if n == 0 || n > self.sent.len() {
            return 0;
        }
        let mut acked = 0;
        let mut rtt_sample = None;
        for s in self.sent.drain(..n) {
            if s.in_flight {
                self.flight -= s.len as usize;
            }
            if s.lost {
                self.lost_count -= 1;
            }
            if !s.sacked {
                acked += s.len as usize;
            }
            if s.sends == 1 {
                rtt_sample = Some(now.saturating_duration_since(s.sent_at));
            }
            match s.kind {
                Kind::Data => {
                    let end = s.start + s.len as u64;
                    if end > self.out_base {
                        let drop = ((end - self.out_base) as usize).min(self.out.len());
                        self.out.drain(..drop);
                        self.out_base = end;
                        self.cfg.send_buffer = self.send_target.max(self.out.len());
                    }
                }
                Kind::Fin => self.fin_acked = true,
                Kind::Syn => {}
            }
        }
        if let Some(r) = rtt_sample {
            self.update_rtt(r);
        }
        if self.recovery_until.is_some_and(|r| !seq_after(r, ack)) {
            self.recovery_until = None;
        }
        self.rto_deadline = if self.sent.iter().any(|s| !s.sacked) {
            Some(now + self.rto)
        } else {
            None
        };
        acked
    }

    /// Marks what a selective ACK holds, then counts as lost every packet
    /// sent before the third-newest one acknowledged. Returns the payload
    /// bytes newly acknowledged.
    fn take_sack(&mut self, ack: u16, sack: &Sack) -> usize {
        let Some(front) = self.sent.front() else {
            return 0;
        };
        // Packet ack + 2 + i sits at index (ack + 2 + i) - front.seq.
        let base = ack.wrapping_add(2).wrapping_sub(front.seq) as usize;
        let mut acked = 0;
        for i in 0..sack.span() {
            if !sack.get(i) {
                continue;
            }
            let Some(s) = self.sent.get_mut(base + i) else {
                break;
            };
            if s.sacked {
                continue;
            }
            s.sacked = true;
            acked += s.len as usize;
            if s.in_flight {
                s.in_flight = false;
                self.flight -= s.len as usize;
            }
            if s.lost {
                s.lost = false;
                self.lost_count -= 1;
            }
        }
        // The transmission number of the DUP_THRESHOLD-th newest
        // acknowledged packet.
        let mut newest = [None::<u64>; DUP_THRESHOLD];
        for s in self.sent.iter().filter(|s| s.sacked) {
            if newest[0].is_none_or(|t| s.tx > t) {
                newest[0] = Some(s.tx);
                newest.sort();
            }
        }
        let Some(cutoff) = newest[0] else {
            return acked;
        };
        let mut any_lost = false;
        for s in self.sent.iter_mut() {
            if !s.sacked && s.in_flight && s.tx < cutoff {
                s.in_flight = false;
                s.lost = true;
                self.flight -= s.len as usize;
                self.lost_count += 1;
                any_lost = true;
            }
        }
        if any_lost && self.recovery_until.is_none() {
            self.window_cuts += 1;
            self.cc.on_loss();
            self.recovery_until = Some(self.seq_nr.wrapping_sub(1));
        }
        acked
    }

    fn update_rtt(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + r) / 8);
            }
        }
        let s = self.srtt.unwrap_or(r);
        self.rto = (s + self.rttvar * 4).clamp(MIN_RTO, MAX_RTO);
    }

    /// Takes a DATA or FIN packet's payload.
    fn on_data(&mut self, h: &Header, payload: &[u8]) {
        self.need_ack = true;
        let expected = self.ack_nr.wrapping_add(1);
        let dist = h.seq.wrapping_sub(expected) as usize;
        if dist >= 0x8000 || self.eof {
            return; // already have it (re-acked above)
        }
        if self.peer_fin.is_some_and(|f| seq_after(h.seq, f)) {
            return; // past the end of the peer's stream
        }
        if dist >= MAX_REORDER {
            return;
        }
        let payload = if h.ty == Type::Fin {
            if self.peer_fin.is_none() {
                self.peer_fin = Some(h.seq);
            }
            &[][..]
        } else {
            payload
        };
        if dist == 0 {
            if self.window() < payload.len() {
                return; // over the window we advertised: dropped unacked
            }
            self.inbox.extend(payload);
            self.ack_nr = h.seq;
            while let Some(p) = self.reorder.remove(&self.ack_nr.wrapping_add(1)) {
                self.reorder_bytes -= p.len();
                self.inbox.extend(&p);
                self.ack_nr = self.ack_nr.wrapping_add(1);
            }
        } else {
            if self.reorder.contains_key(&h.seq)
                || self.reorder.len() >= MAX_REORDER
                || self.window() < payload.len()
            {
                return;
            }
            self.reorder_bytes += payload.len();
            self.reorder.insert(h.seq, payload.to_vec());
        }
        if self.peer_fin == Some(self.ack_nr) {
            self.eof = true;
            self.reorder.clear();
            self.reorder_bytes = 0;
        }
    }

    /// The selective ACK for what we hold out of order.
    fn sack(&self) -> Option<Sack> {
        if self.reorder.is_empty() {
            return None;
        }
        let first = self.ack_nr.wrapping_add(2);
        let far = self
            .reorder
            .keys()
            .map(|&s| s.wrapping_sub(first) as usize)
            .filter(|&d| d < MAX_SACK_BYTES * 8)
            .max()?;
        let mut sack = Sack::new(far / 8 + 1);
        for &s in self.reorder.keys() {
            sack.set(s.wrapping_sub(first) as usize);
        }
        Some(sack)
    }

    fn header(&self, ty: Type, seq: u16, now: Instant) -> Header {
        Header {
            ty,
            conn_id: if ty == Type::Syn {
                self.recv_id
            } else {
                self.send_id
            },
            ts: self.micros(now),
            ts_diff: self.reply_micro,
            wnd: self.window().min(u32::MAX as usize) as u32,
            seq,
            ack: self.ack_nr,
            sack: if ty == Type::Syn { None } else { self.sack() },
        }
    }

    /// Whether a packet of `len` payload bytes fits the window now. One
    /// packet may always be in flight: it probes a zero window, and the
    /// retransmission timer paces it.
    fn fits(&self, len: usize) -> bool {
        let window = self.cc.window().min(self.peer_wnd);
        self.flight == 0 || self.flight + len <= window
    }

    /// Writes the next datagram to send into `buf` (at least `mss` + 64
    /// bytes) and returns its length, or `None` when there is nothing to
    /// send now.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.phase == Phase::Closed {
            return self.send_ack(now, buf);
        }
        let n = if self.confirmed {
            self.retransmit(now, buf)
                .or_else(|| self.send_new(now, buf))
                .or_else(|| self.send_ack(now, buf))
        } else {
            self.send_ack(now, buf)
                .or_else(|| self.retransmit(now, buf))
                .or_else(|| self.send_new(now, buf))
        }?;
        self.last_sent = now;
        if self.rto_deadline.is_none() && self.sent.iter().any(|s| !s.sacked) {
            self.rto_deadline = Some(now + self.rto);
        }
        Some(n)
    }

    fn retransmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.lost_count == 0 {
            return None;
        }
        let i = self.sent.iter().position(|s| s.lost)?;
        let s = &self.sent[i];
        if !self.fits(s.len as usize) {
            return None;
        }
        let (kind, seq, start, len) = (s.kind, s.seq, s.start, s.len as usize);
        let ty = match kind {
            Kind::Syn => Type::Syn,
            Kind::Data => Type::Data,
            Kind::Fin => Type::Fin,
        };
        let mut h = self.header(ty, seq, now);
        if kind == Kind::Syn {
            h.ack = 0;
        }
        let at = h.encode(buf);
        self.copy_out(start, &mut buf[at..at + len]);
        let s = &mut self.sent[i];
        s.lost = false;
        s.in_flight = true;
        s.sends += 1;
        s.sent_at = now;
        s.tx = self.tx_count;
        self.tx_count += 1;
        self.lost_count -= 1;
        self.flight += len;
        self.need_ack = false;
        Some(at + len)
    }

    fn send_new(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.phase != Phase::Connected || self.sent.len() >= MAX_IN_FLIGHT {
            return None;
        }
        let end = self.out_base + self.out.len() as u64;
        let pending = (end - self.next_unsent) as usize;
        if pending > 0 {
            let len = pending.min(self.cfg.mss);
            if !self.fits(len) {
                return None;
            }
            let start = self.next_unsent;
            let h = self.header(Type::Data, self.seq_nr, now);
            let at = h.encode(buf);
            self.copy_out(start, &mut buf[at..at + len]);
            self.push_sent(Kind::Data, start, len as u32, now);
            self.next_unsent += len as u64;
            self.need_ack = false;
            return Some(at + len);
        }
        if self.fin_queued && !self.fin_sent {
            let h = self.header(Type::Fin, self.seq_nr, now);
            let at = h.encode(buf);
            self.push_sent(Kind::Fin, end, 0, now);
            self.fin_sent = true;
            self.need_ack = false;
            return Some(at);
        }
        None
    }

    fn send_ack(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if !self.need_ack || self.phase == Phase::SynSent || self.failure.is_some() {
            return None;
        }
        self.need_ack = false;
        let seq = if self.confirmed {
            self.seq_nr
        } else {
            self.first_seq
        };
        Some(self.header(Type::State, seq, now).encode(buf))
    }

    /// Copies stream bytes `start..start + dst.len()` from the send buffer.
    fn copy_out(&self, start: u64, dst: &mut [u8]) {
        if dst.is_empty() {
            return;
        }
        let from = (start - self.out_base) as usize;
        let (a, b) = self.out.as_slices();
        if from >= a.len() {
            let at = from - a.len();
            dst.copy_from_slice(&b[at..at + dst.len()]);
        } else {
            let len = dst.len();
            let first = len.min(a.len() - from);
            dst[..first].copy_from_slice(&a[from..from + first]);
            dst[first..].copy_from_slice(&b[..len - first]);
        }
    }

    /// When [`Self::on_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        let idle = self.last_recv + IDLE_TIMEOUT;
        let mut t = self.rto_deadline.map_or(idle, |r| r.min(idle));
        if self.phase == Phase::Connected {
            t = t.min(self.last_sent + KEEPALIVE);
        }
        Some(t)
    }

    /// Runs the timers that are due at `now`.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        if now >= self.last_recv + IDLE_TIMEOUT {
            self.fail(Failure::TimedOut);
            return;
        }
        if self.rto_deadline.is_some_and(|d| now >= d) && self.sent.iter().all(|s| s.sacked) {
            self.rto_deadline = None;
        }
        if self.rto_deadline.is_some_and(|d| now >= d) {
            self.retries += 1;
            let limit = if self.phase == Phase::SynSent {
                SYN_TRIES
            } else {
                MAX_RETRIES
            };
            if self.retries >= limit {
                self.fail(Failure::TimedOut);
                return;
            }
            self.rto = (self.rto * 2).min(MAX_RTO);
            self.timeouts += 1;
            self.cc.on_timeout();
            for s in self.sent.iter_mut().filter(|s| !s.sacked) {
                if s.in_flight {
                    s.in_flight = false;
                    self.flight -= s.len as usize;
                }
                if !s.lost {
                    s.lost = true;
                    self.lost_count += 1;
                }
            }
            self.recovery_until = Some(self.seq_nr.wrapping_sub(1));
            self.rto_deadline = Some(now + self.rto);
        }
        if self.phase == Phase::Connected && now >= self.last_sent + KEEPALIVE {
            self.need_ack = true;
        }
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl Conn {
    /// Panics if the books do not balance or a budget is exceeded (the
    /// fuzz target's and tests' check after every step).
    pub fn check_invariants(&self) {
        assert!(self.inbox.len() + self.reorder_bytes <= self.cfg.recv_buffer);
        assert!(self.reorder.len() <= MAX_REORDER);
        assert_eq!(
            self.reorder_bytes,
            self.reorder.values().map(Vec::len).sum::<usize>()
        );
        assert!(self.out.len() <= self.cfg.send_buffer);
        assert!(self.sent.len() <= MAX_IN_FLIGHT + 2);
        let flight: usize = self
            .sent
            .iter()
            .filter(|s| s.in_flight)
            .map(|s| s.len as usize)
            .sum();
        assert_eq!(self.flight, flight);
        assert_eq!(self.lost_count, self.sent.iter().filter(|s| s.lost).count());
        assert!(
            self.sent
                .iter()
                .all(|s| !(s.lost && (s.sacked || s.in_flight)))
        );
        let end = self.out_base + self.out.len() as u64;
        assert!(self.out_base <= self.next_unsent && self.next_unsent <= end);
        for s in &self.sent {
            if s.kind == Kind::Data {
                assert!(s.start >= self.out_base && s.start + s.len as u64 <= self.next_unsent);
            }
        }
    }
}

/// Bytes of header room [`Conn::poll_transmit`] needs beyond the payload.
pub const MAX_HEADER: usize = HEADER_LEN + 2 + MAX_SACK_BYTES;

#[cfg(test)]
mod tests;
