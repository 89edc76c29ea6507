//! The IPv4 and IPv6 nodes together on loopback: lookups, announces,
//! saved state, bootstrap resolution and rebuilds.

use super::*;
use tokio_util::sync::CancellationToken;

fn loopback(bootstrap: Vec<String>, state_dir: Option<PathBuf>) -> DhtConfig {
    DhtConfig {
        port: 0,
        bind: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        bootstrap: Some(bootstrap),
        state_dir,
        server_mode: true,
        ipv6: false,
        proxy: None,
    }
}

/// A first node plus `n` nodes bootstrapped from it, all on loopback.
fn swarm(n: usize) -> (DhtHandle, Vec<DhtHandle>, String) {
    let first = DhtHandle::start(loopback(vec![], None)).unwrap();
    let boot = first.local_addr().to_string();
    let rest = (0..n)
        .map(|_| DhtHandle::start(loopback(vec![boot.clone()], None)).unwrap())
        .collect();
    (first, rest, boot)
}

fn hash(byte: u8) -> InfoHash {
    InfoHash([byte; 20])
}

/// Runs one whole lookup and checks that `peer` was among the answers.
async fn assert_finds(node: &DhtHandle, ih: InfoHash, peer: &str) {
    let mut stream = Box::pin(node.get_peers(ih));
    let mut got = Vec::new();
    while let Some(batch) = stream.next().await {
        got.extend(batch);
    }
    assert!(got.contains(&peer.parse().unwrap()), "{got:?}");
}

/// A saved public IP gives the node a BEP 42 id valid for it at once.
#[test]
fn saved_public_ip_sets_a_secure_id() {
    let dir = tempfile::tempdir().unwrap();
    let ip = Ipv4Addr::new(93, 184, 216, 34);
    let state = SavedState {
        nodes: vec!["127.0.0.1:1".parse().unwrap()],
        public_ip: Some(ip),
    };
    write_state(&dir.path().join(STATE_FILE), &state).unwrap();
    for _ in 0..3 {
        let node = DhtHandle::start(loopback(vec![], Some(dir.path().into()))).unwrap();
        #[allow(deprecated)]
        let id = *node.inner.as_ref().unwrap().current().unwrap().info().id();
        assert!(id.is_valid_for_ip(ip), "{id} is not a BEP 42 id for {ip}");
    }
    // Without it the id is random: valid for a given IP 1 time in 2^21.
    let node = DhtHandle::start(loopback(vec![], None)).unwrap();
    #[allow(deprecated)]
    let id = *node.inner.as_ref().unwrap().current().unwrap().info().id();
    assert!(!id.is_valid_for_ip(ip));
}

#[test]
fn resolve_keeps_literals_and_skips_bad_names() {
    let t = Instant::now();
    let out = resolve_bounded(
        &[
            "127.0.0.1:1".to_string(),
            "nonexistent.invalid:6881".to_string(),
            "no port".to_string(),
        ],
        Duration::from_secs(2),
    );
    assert_eq!(out, vec!["127.0.0.1:1".parse::<SocketAddrV4>().unwrap()]);
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_announce_then_get_peers() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (_first, rest, _) = swarm(3);
        let (a, b) = (&rest[0], &rest[1]);
        let ih = hash(0x42);
        let t = Instant::now();
        a.announce(ih, 7777).await.unwrap();
        let announced = t.elapsed();
        let t = Instant::now();
        let mut stream = Box::pin(b.get_peers(ih));
        let mut first_hit = None;
        let mut got = Vec::new();
        while let Some(batch) = stream.next().await {
            if first_hit.is_none() && !batch.is_empty() {
                first_hit = Some(t.elapsed());
            }
            got.extend(batch);
        }
        let done = t.elapsed();
        eprintln!(
            "loopback: announce {announced:?}, first peers after {first_hit:?}, lookup done after {done:?}"
        );
        assert!(got.contains(&"127.0.0.1:7777".parse().unwrap()), "{got:?}");
        assert!(b.routing_table_size() <= 10);
    })
    .await
    .expect("loopback dht test timed out");
}

#[tokio::test(start_paused = true)]
async fn dht_rounds_of_many_torrents_are_held_to_the_announce_budget() {
    // 300 torrents asking for a round at once: the first burst goes
    // at once, the rest at ROUNDS_PER_SECOND, whatever the slots.
    let pace = round_pace();
    let t0 = tokio::time::Instant::now();
    let mut started = Vec::new();
    let rounds: Vec<_> = (0..300)
        .map(|_| {
            let pace = pace.clone();
            tokio::spawn(async move {
                pace.consume(1).await;
                tokio::time::Instant::now()
            })
        })
        .collect();
    for r in rounds {
        started.push(r.await.unwrap().duration_since(t0));
    }
    started.sort();
    let at_once = started.iter().filter(|d| d.is_zero()).count();
    assert!(
        at_once >= ROUNDS_BURST as usize - 1 && at_once <= ROUNDS_BURST as usize + 1,
        "{at_once}"
    );
    let last = started.last().unwrap().as_secs_f64();
    let expect = (300.0 - ROUNDS_BURST) / ROUNDS_PER_SECOND;
    assert!(
        (last - expect).abs() < 1.0,
        "last round at {last} s, expected {expect} s"
    );
    // In any one second after the burst, at most the budget.
    for s in 1..(last as u64) {
        let n = started.iter().filter(|d| d.as_secs() == s).count();
        assert!(
            n as f64 <= ROUNDS_PER_SECOND + 1.0,
            "{n} rounds in second {s}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_delivers_through_channel() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (_first, rest, _) = swarm(2);
        let ih = hash(0x17);
        rest[0].announce(ih, 7777).await.unwrap();
        let (tx, mut rx) = crate::mailbox::channel(16);
        let found = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let t = Instant::now();
        let task = spawn_discovery(
            rest[1].clone(),
            ih,
            AnnouncePort {
                local: 6000,
                external: Default::default(),
            },
            true,
            Arc::new(|| true),
            tx,
            found.clone(),
            shutdown.clone(),
        );
        let batch = rx.recv().await.unwrap();
        eprintln!("discovery: first batch after {:?}", t.elapsed());
        assert!(batch.contains(&"127.0.0.1:7777".parse().unwrap()));
        assert!(found.load(Ordering::Relaxed) >= 1);
        shutdown.cancel();
        task.await.unwrap();
    })
    .await
    .expect("discovery test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_saved_and_used_on_restart() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let (_first, rest, boot) = swarm(2);
        let node = DhtHandle::start(loopback(vec![boot.clone()], Some(dir.path().into()))).unwrap();
        // Wait until the node knows its neighbours.
        while node.routing_table_size() < 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        node.save_state().unwrap();
        let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(text.contains(&format!("node {boot}")), "{text}");
        drop(node);
        // Restart with no bootstrap at all: only the state file helps.
        let again = DhtHandle::start(loopback(vec![], Some(dir.path().into()))).unwrap();
        let t = Instant::now();
        while again.routing_table_size() == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("restart: routing table non-empty after {:?}", t.elapsed());
        // And it is useful: it finds what another node announced.
        let ih = hash(0x99);
        rest[0].announce(ih, 7777).await.unwrap();
        assert_finds(&again, ih, "127.0.0.1:7777").await;
    })
    .await
    .expect("state test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_bootstrap_returns_promptly() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let t = Instant::now();
        let cfg = loopback(
            vec![
                "127.0.0.1:1".to_string(),
                "nonexistent.invalid:6881".to_string(),
            ],
            None,
        );
        let dht = tokio::task::spawn_blocking(move || DhtHandle::start(cfg))
            .await
            .unwrap()
            .unwrap();
        let took = t.elapsed();
        eprintln!("start with dead bootstrap took {took:?}");
        assert!(took < RESOLVE_DEADLINE + Duration::from_secs(1));
        // Lookups and announces fail softly, without panicking.
        let mut stream = Box::pin(dht.get_peers(hash(1)));
        while let Some(batch) = stream.next().await {
            assert!(batch.is_empty());
        }
        assert!(dht.announce(hash(1), 1).await.is_err());
        assert_eq!(dht.routing_table_size(), 0);
    })
    .await
    .expect("dead bootstrap test timed out");
}

#[test]
fn empty_table_does_not_clobber_saved_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(STATE_FILE);
    let state = SavedState {
        nodes: vec!["127.0.0.1:1".parse().unwrap()],
        public_ip: None,
    };
    write_state(&path, &state).unwrap();
    // It bootstraps from the saved node, which never answers.
    let lonely = DhtHandle::start(loopback(vec![], Some(dir.path().into()))).unwrap();
    lonely.save_state().unwrap();
    assert_eq!(load_state(&path), state);
}

#[test]
fn widened_adds_only_new_addresses() {
    let a: SocketAddrV4 = "1.1.1.1:1".parse().unwrap();
    let b: SocketAddrV4 = "2.2.2.2:2".parse().unwrap();
    assert_eq!(widened(&[a], &[a]), None);
    assert_eq!(widened(&[a], &[]), None);
    assert_eq!(widened(&[a], &[b, a, b]), Some(vec![a, b]));
    assert_eq!(widened(&[], &[b]), Some(vec![b]));
}

#[test]
fn retry_backs_off_to_a_cap() {
    let delays: Vec<u64> = (0..8).map(|n| retry_delay(n).as_secs()).collect();
    assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
}

/// The rebuild that follows an offline start: same port, and the new
/// node joins the DHT through the address it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_rebinds_the_port_and_joins() {
    tokio::time::timeout(Duration::from_secs(40), async {
        let (_first, rest, boot) = swarm(2);
        let cfg = loopback(vec!["nonexistent.invalid:6881".to_string()], None);
        let node = tokio::task::spawn_blocking(move || DhtHandle::start(cfg))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            node.inner.as_ref().unwrap().names,
            vec!["nonexistent.invalid:6881".to_string()]
        );
        let port = node.local_addr().port();
        let ih = hash(0x55);
        rest[0].announce(ih, 7777).await.unwrap();
        // An announce in flight on the old node holds it for a while.
        let pending = tokio::spawn({
            let node = node.clone();
            async move { node.announce(ih, 1).await }
        });
        let t = Instant::now();
        let n = node.clone();
        let boot_addr: SocketAddrV4 = boot.parse().unwrap();
        let rebuilt = tokio::task::spawn_blocking(move || {
            n.inner.as_ref().unwrap().rebuild_with(&[boot_addr])
        })
        .await
        .unwrap();
        assert!(rebuilt);
        eprintln!("rebuild took {:?}", t.elapsed());
        assert!(pending.await.unwrap().is_err());
        #[allow(deprecated)]
        let bound = node
            .inner
            .as_ref()
            .unwrap()
            .current()
            .expect("rebuilt")
            .info()
            .local_addr();
        assert_eq!(bound.port(), port);
        // Nothing new resolved and the node is up: no second rebuild.
        assert!(!node.inner.as_ref().unwrap().rebuild_with(&[boot_addr]));
        while node.routing_table_size() == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_finds(&node, ih, "127.0.0.1:7777").await;
    })
    .await
    .expect("rebuild test timed out");
}

#[test]
fn bind_conflict_is_an_error() {
    let a = DhtHandle::start(loopback(vec![], None)).unwrap();
    let port = a.local_addr().port();
    let mut cfg = loopback(vec![], None);
    cfg.port = port;
    let err = DhtHandle::start(cfg).err().expect("second bind must fail");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")));
}
