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
