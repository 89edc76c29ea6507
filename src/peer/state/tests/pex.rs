//! PEX (BEP 11) on one connection: offered only for public torrents, sent
//! at most once a minute as a diff of what the peer heard last, taken in
//! at most every [`PEX_MIN_GAP`].

use super::*;
use crate::peer::pex::{FLAG_REACHABLE, FLAG_SEED, LOCAL_UT_PEX, MAX_PEX_PEERS, PexMessage};

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A started connection whose peer speaks ut_pex under id 9.
fn pex_peer(swarm: &FakeSwarm, now: Instant) -> (PeerState, Outbox) {
    let mut st = PeerState::new(1, local(), true, now);
    let mut out = Outbox::default();
    st.start(swarm, &mut out);
    let hs = ExtendedHandshake {
        ut_pex: Some(9),
        listen_port: Some(7000),
        ..ExtendedHandshake::default()
    };
    st.on_message(ext_handshake(hs), now, swarm, &mut out)
        .unwrap();
    (st, out)
}

fn pex_sent(out: &mut Outbox) -> Vec<PexMessage> {
    out.drain_messages()
        .into_iter()
        .filter_map(|m| match m {
            Message::Extended { id: 9, payload } => Some(PexMessage::decode(&payload).unwrap()),
            _ => None,
        })
        .collect()
}

fn our_handshake(out: &mut Outbox) -> ExtendedHandshake {
    out.drain_messages()
        .into_iter()
        .find_map(|m| match m {
            Message::Extended { id: 0, payload } => ExtendedHandshake::decode(&payload).ok(),
            _ => None,
        })
        .unwrap()
}

#[test]
fn pex_is_offered_only_for_public_torrents() {
    let now = Instant::now();
    let public = FakeSwarm::new(4, &[]);
    let mut st = PeerState::new(1, local(), true, now);
    let mut out = Outbox::default();
    st.start(&public, &mut out);
    assert_eq!(our_handshake(&mut out).ut_pex, Some(LOCAL_UT_PEX));

    let private = FakeSwarm::new(4, &[]);
    private.f().private = true;
    let (mut st, mut out) = pex_peer(&private, now);
    assert_eq!(our_handshake(&mut out).ut_pex, None);
    // Nothing sent, nothing taken in.
    private.f().pex_peers = vec![(a("10.0.0.9:1"), 0)];
    st.on_tick(now + Duration::from_secs(1), &private, &mut out)
        .unwrap();
    assert!(pex_sent(&mut out).is_empty());
    let m = PexMessage {
        added: vec![(a("10.0.0.8:1"), 0)],
        dropped: vec![],
    };
    let msg = Message::Extended {
        id: LOCAL_UT_PEX,
        payload: Bytes::from(m.encode()),
    };
    st.on_message(msg, now, &private, &mut out).unwrap();
    assert!(private.f().pex_learned.is_empty());

    // A magnet offers nothing until its metadata says the torrent is public.
    let magnet = FakeSwarm::magnet();
    let mut st = PeerState::new(1, local(), true, now);
    let mut out = Outbox::default();
    st.start(&magnet, &mut out);
    assert_eq!(our_handshake(&mut out).ut_pex, None);
}

#[test]
fn pex_sends_diffs_at_most_once_a_minute() {
    let swarm = FakeSwarm::new(4, &[]);
    let t0 = Instant::now();
    let (mut st, mut out) = pex_peer(&swarm, t0);
    assert_eq!(swarm.f().listen_port, Some(7000));
    out.drain_messages();
    swarm.f().pex_peers = vec![
        (a("10.0.0.2:6881"), FLAG_REACHABLE),
        (a("[2001:db8::2]:6881"), FLAG_SEED),
    ];
    let at = |s| t0 + Duration::from_secs(s);
    // A talkative peer, so the idle timer never fires.
    let tick = |st: &mut PeerState, out: &mut Outbox, s| {
        st.on_message(Message::KeepAlive, at(s), &swarm, out)
            .unwrap();
        st.on_tick(at(s), &swarm, out).unwrap();
    };
    tick(&mut st, &mut out, 1);
    let sent = pex_sent(&mut out);
    assert_eq!(sent.len(), 1, "the first one right after the handshake");
    assert_eq!(sent[0].added, swarm.f().pex_peers);
    assert!(sent[0].dropped.is_empty());
    // One peer leaves, another comes: nothing before the minute is up.
    swarm.f().pex_peers = vec![(a("10.0.0.2:6881"), 0), (a("10.0.0.3:1"), 0)];
    for s in 2..61 {
        tick(&mut st, &mut out, s);
    }
    assert!(pex_sent(&mut out).is_empty());
    tick(&mut st, &mut out, 61);
    let sent = pex_sent(&mut out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].added, vec![(a("10.0.0.3:1"), 0)]);
    assert_eq!(sent[0].dropped, vec![a("[2001:db8::2]:6881")]);
    // Nothing changed: nothing sent.
    tick(&mut st, &mut out, 122);
    assert!(pex_sent(&mut out).is_empty());
}

#[test]
fn pex_sends_at_most_fifty_per_family_the_rest_later() {
    let swarm = FakeSwarm::new(4, &[]);
    let t0 = Instant::now();
    let (mut st, mut out) = pex_peer(&swarm, t0);
    swarm.f().pex_peers = (0..120u16)
        .map(|i| (SocketAddr::new("10.1.0.1".parse().unwrap(), 1000 + i), 0))
        .collect();
    st.on_tick(t0, &swarm, &mut out).unwrap();
    assert_eq!(pex_sent(&mut out)[0].added.len(), MAX_PEX_PEERS);
    st.on_message(Message::KeepAlive, t0 + PEX_INTERVAL, &swarm, &mut out)
        .unwrap();
    st.on_tick(t0 + PEX_INTERVAL, &swarm, &mut out).unwrap();
    assert_eq!(pex_sent(&mut out)[0].added.len(), MAX_PEX_PEERS);
    st.on_message(Message::KeepAlive, t0 + 2 * PEX_INTERVAL, &swarm, &mut out)
        .unwrap();
    st.on_tick(t0 + 2 * PEX_INTERVAL, &swarm, &mut out).unwrap();
    assert_eq!(pex_sent(&mut out)[0].added.len(), 20);
}

#[test]
fn pex_from_the_peer_reaches_the_address_book_rate_limited() {
    let swarm = FakeSwarm::new(4, &[]);
    let t0 = Instant::now();
    let (mut st, mut out) = pex_peer(&swarm, t0);
    let msg = |port| Message::Extended {
        id: LOCAL_UT_PEX,
        payload: Bytes::from(
            PexMessage {
                added: vec![(
                    SocketAddr::new("10.0.0.5".parse().unwrap(), port),
                    FLAG_SEED,
                )],
                dropped: vec![],
            }
            .encode(),
        ),
    };
    st.on_message(msg(1), t0, &swarm, &mut out).unwrap();
    // Too soon after the last one: ignored.
    st.on_message(msg(2), t0 + Duration::from_secs(5), &swarm, &mut out)
        .unwrap();
    st.on_message(msg(3), t0 + PEX_MIN_GAP, &swarm, &mut out)
        .unwrap();
    let ports: Vec<u16> = swarm
        .f()
        .pex_learned
        .iter()
        .map(|(a, _)| a.port())
        .collect();
    assert_eq!(ports, vec![1, 3]);
    // Garbage is not fatal.
    let junk = Message::Extended {
        id: LOCAL_UT_PEX,
        payload: Bytes::from_static(b"not bencode"),
    };
    st.on_message(junk, t0 + 3 * PEX_MIN_GAP, &swarm, &mut out)
        .unwrap();
}

#[test]
fn a_magnet_offers_pex_once_its_metadata_says_public() {
    let magnet = FakeSwarm::magnet();
    let now = Instant::now();
    let mut st = PeerState::new(1, local(), true, now).with_fast(true);
    let mut out = Outbox::default();
    st.start(&magnet, &mut out);
    let msgs = out.drain_messages();
    assert!(msgs.contains(&Message::HaveNone), "{msgs:?}");
    // The peer is a seed; it says so before we know the piece count.
    st.on_message(Message::HaveAll, now, &magnet, &mut out)
        .unwrap();
    let geometry = crate::geometry::Geometry::new(6 * 4 * BLOCK_LEN as u64, 4 * BLOCK_LEN);
    *magnet.late_info.lock().unwrap() = Some(TorrentInfo {
        geometry,
        metadata_size: 1000,
    });
    magnet.f().have = vec![false; 6];
    st.on_pieces_changed(&magnet, &mut out).unwrap();
    assert!(
        st.bitfield().unwrap().is_full(),
        "the early HAVE ALL is adopted"
    );
    let msgs = out.drain_messages();
    let hs = msgs
        .iter()
        .find_map(|m| match m {
            Message::Extended { id: 0, payload } => ExtendedHandshake::decode(payload).ok(),
            _ => None,
        })
        .expect("a second extended handshake");
    assert_eq!(hs.ut_pex, Some(LOCAL_UT_PEX));
    assert_eq!(hs.metadata_size, Some(1000));
    assert!(msgs.contains(&Message::Interested));
}
