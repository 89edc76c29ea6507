//! The `utp_conn` fuzz target: one uTP connection's state machine fed any
//! packets, writes, reads and clock steps, as acceptor or as initiator.
//! After every step its books must balance and its buffers stay within
//! their budgets, and everything it sends must parse.

use std::time::{Duration, Instant};

use crate::utp::conn::{Config, Conn, MAX_HEADER};
use crate::utp::packet::{Header, Type, parse};

const CFG: Config = Config {
    recv_buffer: 16 * 1024,
    send_buffer: 16 * 1024,
    mss: 1000,
};

/// The initiator's first sequence number, so the fuzzer can ACK its SYN.
const SYN_SEQ: u16 = 1000;

/// (t) Ops, each led by one byte: a packet (its length, then its bytes),
/// an application write or read (of the next byte × 64 bytes), a clock
/// step (the next byte × 10 ms) that runs the timers, or new buffer sizes
/// (the next byte × 128 bytes each, as the socket's budget would set).
pub fn utp_conn(data: &[u8]) {
    let epoch = Instant::now();
    let mut now = epoch + Duration::from_secs(1);
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let mut conn = if first & 1 == 0 {
        let mut syn = Header::new(Type::Syn);
        syn.conn_id = 7;
        syn.seq = 300;
        syn.wnd = u32::from(first) << 8;
        Conn::accept(CFG, epoch, now, &syn, 5000)
    } else {
        Conn::connect(CFG, epoch, now, 7, SYN_SEQ)
    };
    let mut out = vec![0u8; CFG.mss + MAX_HEADER];
    let mut app = vec![0u8; 255 * 64];
    let mut sent = 0usize;
    while let Some((&op, tail)) = rest.split_first() {
        let arg = tail.first().copied().unwrap_or(0) as usize;
        rest = tail.get(1..).unwrap_or(&[]);
        match op % 5 {
            0 => {
                let take = arg.min(rest.len());
                let (datagram, after) = rest.split_at(take);
                rest = after;
                if let Ok((h, payload)) = parse(datagram) {
                    conn.on_packet(&h, payload, now);
                }
            }
            1 => {
                let _ = conn.write(&app[..arg * 64]);
            }
            2 => {
                let _ = conn.read(&mut app[..arg * 64]);
            }
            3 => {
                conn.set_buffers(arg * 128, arg * 128);
            }
            _ => {
                now += Duration::from_millis(arg as u64 * 10);
                if conn.poll_timeout().is_some_and(|t| t <= now) {
                    conn.on_timeout(now);
                }
            }
        }
        conn.check_invariants();
        // Whatever it sends is a valid packet of bounded size, and it
        // stops: a window's worth at most per step.
        let mut packets = 0;
        while let Some(n) = conn.poll_transmit(now, &mut out) {
            assert!(n <= out.len());
            parse(&out[..n]).expect("we send valid packets");
            sent += n;
            packets += 1;
            assert!(packets <= 4096, "poll_transmit does not stop");
        }
        conn.check_invariants();
        app.fill(0);
    }
    let _ = sent;
}
