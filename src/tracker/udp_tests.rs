//! The BEP 15 retransmit schedule on tokio's paused clock, against a real
//! UDP socket on loopback playing a tracker that drops datagrams.

use super::*;
use crate::id::{InfoHash, PeerId};
use crate::tracker::announce::Event;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn request() -> AnnounceRequest {
    AnnounceRequest {
        info_hash: InfoHash([1; 20]),
        peer_id: PeerId([2; 20]),
        port: 6881,
        uploaded: 0,
        downloaded: 0,
        left: 1,
        event: Event::Started,
        numwant: Some(50),
        key: 7,
        tracker_id: None,
        also_at: Vec::new(),
    }
}

/// A tracker that ignores the first `drop_first` datagrams, then answers
/// connect and announce (one peer, 10.1.2.3:4567). Counts what it got.
async fn lossy_tracker(drop_first: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            if counter.fetch_add(1, Ordering::SeqCst) < drop_first || n < 16 {
                continue;
            }
            let tid = &buf[12..16];
            let mut reply = Vec::new();
            if n == 16 {
                reply.extend_from_slice(&0u32.to_be_bytes());
                reply.extend_from_slice(tid);
                reply.extend_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
            } else {
                reply.extend_from_slice(&1u32.to_be_bytes());
                reply.extend_from_slice(tid);
                reply.extend_from_slice(&1800u32.to_be_bytes());
                reply.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
                reply.extend_from_slice(&[10, 1, 2, 3]);
                reply.extend_from_slice(&4567u16.to_be_bytes());
            }
            let _ = sock.send_to(&reply, from).await;
        }
    });
    (addr, seen)
}

#[tokio::test(start_paused = true)]
async fn lost_datagrams_are_sent_again_on_the_bep15_schedule() {
    let (addr, seen) = lossy_tracker(2).await;
    let mut t = UdpTracker::new(&format!("udp://{addr}/announce"), None).unwrap();
    let t0 = tokio::time::Instant::now();
    let resp = t.announce(&request()).await.expect("third try answers");
    let took = t0.elapsed();
    assert_eq!(resp.peers, vec!["10.1.2.3:4567".parse().unwrap()]);
    // Connect sent at 0 s (lost), 15 s (lost), 45 s (answered), then announce.
    assert_eq!(seen.load(Ordering::SeqCst), 4);
    assert!(
        took >= Duration::from_secs(45) && took < Duration::from_secs(46),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_tracker_gives_up_after_three_tries() {
    let (addr, seen) = lossy_tracker(usize::MAX).await;
    let mut t = UdpTracker::new(&format!("udp://{addr}/announce"), None).unwrap();
    let t0 = tokio::time::Instant::now();
    assert!(t.announce(&request()).await.is_err());
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(105) && took < Duration::from_secs(106),
        "{took:?}"
    );
}
