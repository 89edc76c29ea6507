use super::*;
use crate::peer::message::Message;
use crate::session::shared::{Limits, Shared};
use tokio_util::codec::Decoder;

/// The driver's timers on tokio's paused clock: a peer that says
/// nothing gets our keep-alives, and is dropped after two minutes of
/// silence, with its slot given back.
#[tokio::test(start_paused = true)]
async fn silent_peer_gets_keepalives_then_is_dropped() {
    let limits = Limits {
        max_peers: 8,
        max_per_ip: 1,
    };
    let token = CancellationToken::new();
    let shared = Shared::create(
        InfoHash([1; 20]),
        PeerId([2; 20]),
        6881,
        None,
        limits,
        token,
    );
    let host: Arc<dyn PeerHost> = shared.clone();
    let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
    let hs = Handshake::ours(InfoHash([1; 20]), PeerId([3; 20]), false);
    let addr: SocketAddr = "10.0.0.1:6881".parse().unwrap();
    let t0 = Instant::now();
    let task = tokio::spawn(run(ours, hs, addr, false, Link::default(), host));
    // Read what btc sends, as a peer that never answers.
    let mut buf = bytes::BytesMut::new();
    let mut keepalives = Vec::new();
    let mut codec = PeerCodec;
    while let Ok(n) = theirs.read_buf(&mut buf).await {
        if n == 0 {
            break;
        }
        while let Ok(Some(m)) = codec.decode(&mut buf) {
            if m == Message::KeepAlive {
                keepalives.push(t0.elapsed());
            }
        }
    }
    let result = task.await.unwrap();
    let took = t0.elapsed();
    assert!(
        matches!(result, Err(ConnError::Peer(PeerError::Idle))),
        "{result:?}"
    );
    assert!(
        took >= Duration::from_secs(120) && took <= Duration::from_secs(123),
        "{took:?}"
    );
    assert_eq!(keepalives.len(), 1, "{keepalives:?}");
    assert!(keepalives[0] >= Duration::from_secs(60));
    assert!(shared.lock().peers.is_empty(), "the slot was given back");
}

#[tokio::test]
async fn a_hybrid_answers_in_the_swarm_the_peer_asked_for() {
    let host = test_host();
    let (v1, v2) = (InfoHash([1; 20]), InfoHash([7; 20]));
    let theirs = Handshake::ours(v2, PeerId([9; 20]), false);
    let (mut ours, mut peer) = tokio::io::duplex(512);
    // Not known as a hybrid: the other hash is another torrent.
    assert!(matches!(
        send_answer(&mut ours, &*host, &theirs).await,
        Err(ConnError::WrongTorrent(_))
    ));
    host.hybrid.set((v1, v2)).unwrap();
    send_answer(&mut ours, &*host, &theirs).await.unwrap();
    let back = read_handshake(&mut peer, HANDSHAKE_TIMEOUT).await.unwrap();
    assert_eq!(back.info_hash, v2, "answered in another swarm");
    assert!(back.supports_v2(), "a hybrid offers the v2 upgrade");
    // The v2 swarm speaks v2 without the bit; the v1 swarm with it only.
    assert!(speaks_v2_with(&*host, &theirs));
    let plain = Handshake::ours(v1, PeerId([9; 20]), false);
    assert!(!speaks_v2_with(&*host, &plain));
    assert!(speaks_v2_with(&*host, &plain.with_v2(true)));
    // A third hash is still no torrent of ours.
    let stranger = Handshake::ours(InfoHash([3; 20]), PeerId([9; 20]), false);
    assert!(matches!(
        send_answer(&mut ours, &*host, &stranger).await,
        Err(ConnError::WrongTorrent(_))
    ));
}

fn test_host() -> Arc<Shared> {
    let limits = Limits {
        max_peers: 8,
        max_per_ip: 1,
    };
    Shared::create(
        InfoHash([1; 20]),
        PeerId([2; 20]),
        6881,
        None,
        limits,
        CancellationToken::new(),
    )
}

/// Serves one connection the way a peer does: MSE (when `mse`) or
/// plaintext, as a plaintext-only client does: it reads 68 bytes and
/// hangs up unless they are a BitTorrent handshake; then echoes 4 bytes.
async fn serve_one<S>(sock: S, mse: Option<Encryption>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let ih = InfoHash([1; 20]);
    let served = [ih];
    let lookup = mse::lookup_in(&served);
    let mut s = match mse {
        Some(policy) => match mse::accept_any(sock, &lookup, policy, HANDSHAKE_TIMEOUT).await {
            Ok(a) => a.stream,
            Err(_) => return,
        },
        None => MseStream::replay(sock, Vec::new()),
    };
    let Ok(theirs) = read_handshake(&mut s, HANDSHAKE_TIMEOUT).await else {
        return;
    };
    assert_eq!(theirs.info_hash, ih);
    let ours = Handshake::ours(ih, PeerId([9; 20]), false);
    s.write_all(&ours.encode()).await.unwrap();
    let mut ping = [0u8; 4];
    s.read_exact(&mut ping).await.unwrap();
    s.write_all(&ping).await.unwrap();
    s.flush().await.unwrap();
}

/// A peer on loopback that answers `conns` TCP connections.
async fn fake_peer(mse: Option<Encryption>, conns: usize) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..conns {
            let (sock, _) = listener.accept().await.unwrap();
            serve_one(sock, mse).await;
        }
    });
    addr
}

fn tcp_only() -> Dialer {
    Dialer {
        bind: None,
        utp: None,
        tcp: true,
    }
}

/// A peer with TCP turned off (it closes TCP connections unread, as
/// libtorrent does) is reached over uTP on the same port number; with
/// uTP first, TCP is not touched.
#[tokio::test]
async fn a_peer_without_tcp_is_reached_over_utp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tcp_seen = Arc::new(AtomicU64::new(0));
    let seen = tcp_seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::Relaxed);
            drop(sock);
        }
    });
    let theirs_utp = crate::utp::Socket::bind(addr, Default::default()).unwrap();
    tokio::spawn(async move {
        while let Ok(s) = theirs_utp.accept().await {
            serve_one(s, Some(Encryption::Prefer)).await;
        }
    });
    let ours_utp =
        crate::utp::Socket::bind("127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
    let dialer = Dialer {
        bind: None,
        utp: Some(Arc::new(ours_utp)),
        tcp: true,
    };
    let host = test_host();
    for utp_first in [false, true] {
        let before = tcp_seen.load(Ordering::Relaxed);
        let (mut s, theirs) = connect(addr, &dialer, utp_first, &*host, host.info_hash())
            .await
            .unwrap();
        assert_eq!(theirs.peer_id, PeerId([9; 20]));
        assert_eq!(s.link("--peer").transport, Transport::Utp);
        s.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
        let tcp_tries = tcp_seen.load(Ordering::Relaxed) - before;
        if utp_first {
            assert_eq!(tcp_tries, 0, "uTP first does not dial TCP");
        } else {
            // MSE, then the plaintext retry, both closed unread.
            assert_eq!(tcp_tries, 2);
        }
    }
    // Without uTP the same peer cannot be reached.
    assert!(
        connect(addr, &tcp_only(), false, &*host, host.info_hash())
            .await
            .is_err()
    );
}

async fn dial(addr: SocketAddr, policy: Encryption) -> Result<bool, ConnError> {
    let host = test_host();
    let (mut s, theirs) = connect_over(
        Transport::Tcp,
        addr,
        &tcp_only(),
        &*host,
        host.info_hash(),
        policy,
    )
    .await?;
    assert_eq!(theirs.peer_id, PeerId([9; 20]));
    s.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
    Ok(s.is_encrypted())
}

#[tokio::test]
async fn dialing_follows_the_encryption_policy() {
    use Encryption::*;
    // An MSE peer: require gets RC4; prefer an obfuscated handshake
    // (RC4 if the peer insists); disable plaintext.
    assert!(
        !dial(fake_peer(Some(Prefer), 1).await, Prefer)
            .await
            .unwrap()
    );
    assert!(
        dial(fake_peer(Some(Require), 1).await, Prefer)
            .await
            .unwrap()
    );
    assert!(
        dial(fake_peer(Some(Require), 1).await, Require)
            .await
            .unwrap()
    );
    assert!(
        !dial(fake_peer(Some(Prefer), 1).await, Disable)
            .await
            .unwrap()
    );
    // A plaintext-only peer: prefer falls back once, require refuses.
    assert!(!dial(fake_peer(None, 2).await, Prefer).await.unwrap());
    let r = dial(fake_peer(None, 1).await, Require).await;
    assert!(matches!(r, Err(ConnError::Encryption(_))), "{r:?}");
    // A peer that requires encryption refuses our plaintext dial.
    let r = dial(fake_peer(Some(Require), 1).await, Disable).await;
    assert!(r.is_err(), "{r:?}");
}
