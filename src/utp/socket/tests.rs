//! The socket over real loopback UDP: streams carry data both ways, the
//! caps hold, dropped streams are forgotten, and timers run on tokio's
//! paused clock where a test waits for a timeout.

use super::*;
use std::net::Ipv4Addr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn lo() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 253) as u8 ^ salt).collect()
}

#[tokio::test]
async fn streams_carry_megabytes_both_ways_and_end_with_eof() {
    let a = Socket::bind(lo(), Opts::default()).unwrap();
    let b = Socket::bind(lo(), Opts::default()).unwrap();
    let to = b.local_addr();
    let up = pattern(8 << 20, 1);
    let down = pattern(3 << 20, 2);
    let (up2, down2) = (up.clone(), down.clone());
    let server = tokio::spawn(async move {
        let s = b.accept().await.unwrap();
        assert_eq!(s.remote_addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let (mut r, mut w) = tokio::io::split(s);
        let writer = tokio::spawn(async move {
            w.write_all(&down2).await.unwrap();
            w.shutdown().await.unwrap();
            w
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert!(got == up2, "server got {} bytes", got.len());
        writer.await.unwrap();
        b
    });
    let s = a.connect(to).await.unwrap();
    let (mut r, mut w) = tokio::io::split(s);
    let writer = tokio::spawn(async move {
        w.write_all(&up).await.unwrap();
        w.shutdown().await.unwrap();
        w
    });
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut got))
        .await
        .expect("in time")
        .unwrap();
    assert!(got == down, "client got {} bytes", got.len());
    let w = writer.await.unwrap();
    let b = server.await.unwrap();
    // Both ends dropped: once the FINs are acknowledged both sockets
    // forget the connection.
    drop(r.unsplit(w));
    for _ in 0..200 {
        if a.connections() == 0 && b.connections() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!((a.connections(), b.connections()), (0, 0));
}

/// A SYN the gate refuses makes no connection, and the connect times
/// out after its three SYNs (paused clock: no real waiting).
#[tokio::test(start_paused = true)]
async fn a_refused_syn_makes_no_state_and_the_connect_times_out() {
    let a = Socket::bind(lo(), Opts::default()).unwrap();
    let b = Socket::bind(
        lo(),
        Opts {
            admit_syn: Some(Arc::new(|_| false)),
            ..Opts::default()
        },
    )
    .unwrap();
    let err = a.connect(b.local_addr()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(b.connections(), 0);
}

/// The connection cap holds for incoming SYNs.
#[tokio::test(start_paused = true)]
async fn the_connection_cap_holds() {
    let a = Socket::bind(lo(), Opts::default()).unwrap();
    let b = Socket::bind(
        lo(),
        Opts {
            max_conns: 2,
            ..Opts::default()
        },
    )
    .unwrap();
    let to = b.local_addr();
    let s1 = a.connect(to).await.unwrap();
    let s2 = a.connect(to).await.unwrap();
    let third = a.connect(to).await;
    assert_eq!(third.unwrap_err().kind(), io::ErrorKind::TimedOut);
    assert_eq!(b.connections(), 2);
    drop((s1, s2));
}

/// Shutdown ends a blocked read instead of leaving it hanging.
#[tokio::test]
async fn shutdown_ends_waiting_reads() {
    let token = CancellationToken::new();
    let opts = Opts {
        shutdown: token.clone(),
        ..Opts::default()
    };
    let a = Socket::bind(lo(), opts.clone()).unwrap();
    let b = Socket::bind(lo(), Opts::default()).unwrap();
    let to = b.local_addr();
    let accept = tokio::spawn(async move { (b.accept().await.unwrap(), b) });
    let mut s = a.connect(to).await.unwrap();
    let _peer = accept.await.unwrap();
    let reader = tokio::spawn(async move { s.read(&mut [0u8; 16]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    token.cancel();
    let r = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the read ended")
        .unwrap();
    assert!(r.is_err());
}

/// Regression (empty datagram): a 0-byte datagram has a GRO stride of 0,
/// and cutting a buffer into 0-byte pieces panicked the receive loop, so
/// one empty datagram from anyone stopped every uTP connection. Empty and
/// junk datagrams are now nothing, and the socket goes on.
#[tokio::test]
async fn regression_empty_datagram_does_not_stop_the_receive_loop() {
    let a = Socket::bind(lo(), Opts::default()).unwrap();
    let b = Socket::bind(lo(), Opts::default()).unwrap();
    let junk = UdpSocket::bind(lo()).await.unwrap();
    for d in [&[][..], &[0x41; 3][..], &[0x01; 20][..], &[][..]] {
        junk.send_to(d, b.local_addr()).await.unwrap();
    }
    let to = b.local_addr();
    let server = tokio::spawn(async move {
        let mut s = b.accept().await.unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).await.unwrap();
        got
    });
    let mut s = tokio::time::timeout(Duration::from_secs(10), a.connect(to))
        .await
        .expect("connected in time")
        .unwrap();
    s.write_all(b"hello").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("read in time")
        .unwrap();
    assert_eq!(&got, b"hello");
}

/// What one `sendmsg` sends as a GSO run reaches a peer that knows
/// nothing of GSO (a plain UDP socket speaking uTP by hand) as separate
/// datagrams of at most 1,400 bytes, each a whole packet, which together
/// carry exactly what was written.
#[tokio::test]
async fn batched_sends_arrive_as_whole_datagrams_at_a_plain_peer() {
    let a = Socket::bind(lo(), Opts::default()).unwrap();
    let peer = UdpSocket::bind(lo()).await.unwrap();
    let to = peer.local_addr().unwrap();
    let data = pattern(400_000, 7);
    let data2 = data.clone();
    let client = tokio::spawn(async move {
        let mut s = a.connect(to).await.unwrap();
        s.write_all(&data2).await.unwrap();
        (s, a)
    });
    let mut buf = vec![0u8; 65536];
    let mut out = [0u8; 64];
    // The SYN: answer with a STATE that acknowledges it.
    let (n, from) = peer.recv_from(&mut buf).await.unwrap();
    let (syn, _) = packet::parse(&buf[..n]).unwrap();
    assert_eq!(syn.ty, Type::Syn);
    let mut ack = packet::Header::new(Type::State);
    ack.conn_id = syn.conn_id;
    ack.wnd = 4 << 20;
    ack.seq = 1000;
    ack.ack = syn.seq;
    let len = ack.encode(&mut out);
    peer.send_to(&out[..len], from).await.unwrap();
    // Data: keep every payload by sequence number, acknowledge in order.
    let mut got: std::collections::BTreeMap<u16, Vec<u8>> = Default::default();
    let (mut largest, mut total) = (0, 0);
    let first = syn.seq.wrapping_add(1);
    let mut next = first;
    while total < data.len() {
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), peer.recv_from(&mut buf))
            .await
            .expect("data in time")
            .unwrap();
        largest = largest.max(n);
        let (h, payload) = packet::parse(&buf[..n]).unwrap();
        if h.ty != Type::Data {
            continue;
        }
        if h.seq.wrapping_sub(first) < 0x8000 && !got.contains_key(&h.seq) {
            total += payload.len();
            got.insert(h.seq, payload.to_vec());
        }
        while got.contains_key(&next) {
            next = next.wrapping_add(1);
        }
        ack.ack = next.wrapping_sub(1);
        let len = ack.encode(&mut out);
        peer.send_to(&out[..len], from).await.unwrap();
    }
    assert!(
        largest <= MSS + packet::HEADER_LEN,
        "a datagram of {largest} bytes"
    );
    assert_eq!(
        largest,
        MSS + packet::HEADER_LEN,
        "full-size packets are sent"
    );
    let mut joined = Vec::new();
    let mut seq = first;
    while let Some(p) = got.get(&seq) {
        joined.extend_from_slice(p);
        seq = seq.wrapping_add(1);
    }
    assert!(
        joined == data,
        "{} of {} bytes in order",
        joined.len(),
        data.len()
    );
    drop(client.await.unwrap());
}

/// IPv6 peers get packets that fit the 1,280-byte minimum IPv6 MTU; IPv4
/// peers (also as mapped addresses on a dual-stack socket) full ones.
#[tokio::test]
async fn ipv6_peers_get_packets_that_fit_the_minimum_mtu() {
    let s = Socket::bind(lo(), Opts::default()).unwrap();
    let v6: SocketAddr = "[2001:db8::1]:6881".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:192.0.2.1]:6881".parse().unwrap();
    let v4: SocketAddr = "192.0.2.1:6881".parse().unwrap();
    assert_eq!(s.shared.config(v6, 1).mss, MSS_V6);
    assert_eq!(s.shared.config(mapped, 1).mss, MSS);
    assert_eq!(s.shared.config(v4, 1).mss, MSS);
}

/// With a memory budget, the connections open share it: one alone gets
/// the most, eight get an eighth each; a buffer holding more than its new
/// share shrinks only as it is read; when connections go, the share
/// grows back.
#[tokio::test]
async fn the_memory_budget_is_shared_among_open_connections() {
    const MIB: usize = 1 << 20;
    let a = Socket::bind(lo(), Opts::default()).unwrap();
    let b = Socket::bind(
        lo(),
        Opts {
            recv_buffer: MIB,
            send_buffer: MIB,
            memory_budget: Some(4 * MIB),
            ..Opts::default()
        },
    )
    .unwrap();
    let to = b.local_addr();
    let mut s1 = a.connect(to).await.unwrap();
    let mut t1 = b.accept().await.unwrap();
    assert_eq!(t1.buffers(), (MIB, MIB), "alone: the most");
    // 900 kB arrive and wait unread in t1's receive buffer.
    let held = 900_000;
    s1.write_all(&pattern(held, 3)).await.unwrap();
    for _ in 0..1000 {
        if lock(&t1.cell.state).conn.received_unread() == held {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lock(&t1.cell.state).conn.received_unread(), held);
    let mut more = Vec::new();
    for _ in 0..7 {
        let s = a.connect(to).await.unwrap();
        more.push((s, b.accept().await.unwrap()));
    }
    let share = 4 * MIB / 16;
    for (_, t) in &more {
        assert_eq!(t.buffers(), (share, share), "eight share the budget");
    }
    let (recv, send) = t1.buffers();
    assert!(recv >= held, "never below what it holds: {recv}");
    assert_eq!(send, share);
    let mut got = vec![0u8; held];
    t1.read_exact(&mut got).await.unwrap();
    assert!(got == pattern(held, 3));
    assert_eq!(t1.buffers(), (share, share), "read: down to its share");
    drop(more);
    for _ in 0..500 {
        if t1.buffers() == (MIB, MIB) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(t1.buffers(), (MIB, MIB), "alone again: the most");
    assert_eq!(b.connections(), 1);
}

/// A path that hands each datagram to the other socket's channel, as a
/// proxy's relay would, with a switch to close it.
struct ChannelPath {
    from: SocketAddr,
    to: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    open: std::sync::atomic::AtomicBool,
}

impl DatagramPath for ChannelPath {
    fn try_send_to(&self, _to: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        self.to
            .try_send((self.from, datagram.to_vec()))
            .map_err(|_| io::Error::from(io::ErrorKind::WouldBlock))
    }

    fn is_open(&self) -> bool {
        self.open.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// uTP over a [`DatagramPath`] (how it goes through a SOCKS5 relay):
/// a connection carries megabytes both ways, one datagram per send; once
/// the path is closed a new connection fails at once instead of waiting
/// out its SYN retries.
#[tokio::test]
async fn a_socket_over_a_path_carries_a_connection_and_fails_fast_once_closed() {
    let (a_addr, b_addr): (SocketAddr, SocketAddr) = (
        "10.0.0.1:6881".parse().unwrap(),
        "10.0.0.2:6881".parse().unwrap(),
    );
    let (to_a, a_in) = mpsc::channel(4096);
    let (to_b, b_in) = mpsc::channel(4096);
    let a_path = Arc::new(ChannelPath {
        from: a_addr,
        to: to_b,
        open: true.into(),
    });
    let b_path = Arc::new(ChannelPath {
        from: b_addr,
        to: to_a,
        open: true.into(),
    });
    let a = Socket::over(a_path.clone(), a_in, a_addr, Opts::default());
    let b = Socket::over(b_path, b_in, b_addr, Opts::default());
    let up = pattern(2 << 20, 3);
    let up2 = up.clone();
    let server = tokio::spawn(async move {
        let mut s = b.accept().await.unwrap();
        assert_eq!(s.remote_addr(), a_addr);
        let mut got = vec![0u8; up2.len()];
        s.read_exact(&mut got).await.unwrap();
        assert!(got == up2, "the server got other bytes");
        s.write_all(b"thanks").await.unwrap();
        s.flush().await.unwrap();
        s
    });
    let mut s = a.connect(b_addr).await.unwrap();
    s.write_all(&up).await.unwrap();
    let mut back = [0u8; 6];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"thanks");
    let _server_side = server.await.unwrap();

    a_path
        .open
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let t0 = tokio::time::Instant::now();
    let e = a.connect(b_addr).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotConnected);
    assert!(t0.elapsed() < Duration::from_secs(1));
}
