//! A userspace link emulator for tests and benchmarks: TCP and UDP relays
//! that add a round-trip time, a bandwidth cap with a bottleneck queue,
//! and (UDP only) loss and jitter.
//!
//! The kernel on our test machines has no `netem`, so long fat links are
//! emulated here: a client connects to the relay, the relay connects to
//! the target, and every byte waits half the round trip in each direction.
//!
//! ```text
//! linkemu --tcp 127.0.0.1:0=127.0.0.1:6881 --udp 127.0.0.1:0=127.0.0.1:6881 \
//!         --rtt-ms 100 --rate 100mbit [--queue-ms 200] [--loss 0.01] [--jitter-ms 5] [--seed 1]
//! ```
//!
//! Once listening it prints one line per relay on stdout,
//! `tcp 127.0.0.1:PORT` or `udp 127.0.0.1:PORT`, in the order given, then
//! runs until killed.
//!
//! The model, per direction (client to target, target to client), shared
//! by every flow through the relay so flows compete as on one link:
//! a datagram or chunk leaves the bottleneck when the link is free
//! (`len / rate` after the previous one) and arrives `rtt / 2` later. When
//! the bottleneck queue holds more than `--queue-ms` of data, a TCP reader
//! stops reading (the sender sees back-pressure, as behind a full router
//! buffer with TCP's own recovery), and a UDP datagram is dropped (tail
//! drop). Without `--rate` the link is infinitely fast and only delays.
//! TCP loss cannot be emulated from user space: the kernel's TCP would
//! hide it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

/// Bytes one TCP direction may hold in the relay (read, not yet written).
const TCP_BUDGET: usize = 256 << 20;
/// UDP clients remembered at once; more are refused.
const MAX_UDP_CLIENTS: usize = 1024;
/// Largest read of one TCP chunk.
const CHUNK: usize = 64 * 1024;

#[derive(Clone, Debug)]
struct Options {
    tcp: Vec<(SocketAddr, SocketAddr)>,
    udp: Vec<(SocketAddr, SocketAddr)>,
    one_way: Duration,
    /// Bytes per second per direction; `None` is unlimited.
    rate: Option<f64>,
    queue: Duration,
    loss: f64,
    jitter: Duration,
    seed: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: linkemu [--tcp LISTEN=TARGET]... [--udp LISTEN=TARGET]... [--rtt-ms N] \
         [--rate N[k|m|g|kbit|mbit|gbit]] [--queue-ms N] [--loss P] [--jitter-ms N] [--seed N]"
    );
    std::process::exit(2)
}

fn parse_pair(s: &str) -> (SocketAddr, SocketAddr) {
    let Some((a, b)) = s.split_once('=') else {
        usage()
    };
    match (a.parse(), b.parse()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => usage(),
    }
}

/// `100mbit` is 12.5e6 bytes/s; `10m` is 10 MiB/s; a bare number is bytes/s.
fn parse_rate(s: &str) -> f64 {
    let s = s.to_ascii_lowercase();
    let units: [(&str, f64); 6] = [
        ("kbit", 1e3 / 8.0),
        ("mbit", 1e6 / 8.0),
        ("gbit", 1e9 / 8.0),
        ("k", 1024.0),
        ("m", 1024.0 * 1024.0),
        ("g", 1024.0 * 1024.0 * 1024.0),
    ];
    for (suffix, mult) in units {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().unwrap_or_else(|_| usage()) * mult;
        }
    }
    s.parse().unwrap_or_else(|_| usage())
}

fn parse_args() -> Options {
    let mut o = Options {
        tcp: Vec::new(),
        udp: Vec::new(),
        one_way: Duration::ZERO,
        rate: None,
        queue: Duration::from_millis(200),
        loss: 0.0,
        jitter: Duration::ZERO,
        seed: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        let ms = |v: String| {
            Duration::from_micros((v.parse::<f64>().unwrap_or_else(|_| usage()) * 1e3) as u64)
        };
        match flag.as_str() {
            "--tcp" => o.tcp.push(parse_pair(&value())),
            "--udp" => o.udp.push(parse_pair(&value())),
            "--rtt-ms" => o.one_way = ms(value()) / 2,
            "--rate" => o.rate = Some(parse_rate(&value())).filter(|r| *r > 0.0),
            "--queue-ms" => o.queue = ms(value()),
            "--loss" => o.loss = value().parse().unwrap_or_else(|_| usage()),
            "--jitter-ms" => o.jitter = ms(value()),
            "--seed" => o.seed = value().parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    if o.tcp.is_empty() && o.udp.is_empty() {
        usage()
    }
    o
}

/// One direction of the emulated link: the bottleneck and the delay after it.
#[derive(Debug)]
struct Link {
    one_way: Duration,
    rate: Option<f64>,
    queue: Duration,
    /// When the bottleneck has sent everything queued so far.
    free_at: Instant,
}

enum Admit {
    /// Deliver at this instant.
    At(Instant),
    /// The queue is full: wait this long (TCP) or drop (UDP).
    Full(Duration),
}

impl Link {
    fn new(o: &Options) -> Link {
        Link {
            one_way: o.one_way,
            rate: o.rate,
            queue: o.queue,
            free_at: Instant::now(),
        }
    }

    fn admit(&mut self, now: Instant, len: usize) -> Admit {
        let Some(rate) = self.rate else {
            return Admit::At(now + self.one_way);
        };
        let start = self.free_at.max(now);
        let backlog = start - now;
        if backlog > self.queue {
            return Admit::Full(backlog - self.queue);
        }
        self.free_at = start + Duration::from_secs_f64(len as f64 / rate);
        Admit::At(self.free_at + self.one_way)
    }
}

type SharedLink = Arc<Mutex<Link>>;

#[tokio::main]
async fn main() {
    let o = parse_args();
    let up: SharedLink = Arc::new(Mutex::new(Link::new(&o)));
    let down: SharedLink = Arc::new(Mutex::new(Link::new(&o)));
    let mut lines = Vec::new();
    for &(listen, target) in &o.tcp {
        let l = TcpListener::bind(listen).await.unwrap_or_else(|e| {
            eprintln!("linkemu: bind tcp {listen}: {e}");
            std::process::exit(1)
        });
        lines.push(format!("tcp {}", l.local_addr().expect("bound")));
        tokio::spawn(tcp_accept(l, target, up.clone(), down.clone()));
    }
    for &(listen, target) in &o.udp {
        let s = udp_bind(listen).unwrap_or_else(|e| {
            eprintln!("linkemu: bind udp {listen}: {e}");
            std::process::exit(1)
        });
        lines.push(format!("udp {}", s.local_addr().expect("bound")));
        let o = o.clone();
        tokio::spawn(udp_relay(Arc::new(s), target, o, up.clone(), down.clone()));
    }
    println!("{}", lines.join("\n"));
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::future::pending::<()>().await;
}

async fn tcp_accept(l: TcpListener, target: SocketAddr, up: SharedLink, down: SharedLink) {
    loop {
        let Ok((client, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (up, down) = (up.clone(), down.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::join!(tcp_pipe(cr, sw, up), tcp_pipe(sr, cw, down));
        });
    }
}

/// Copies one TCP direction through the link: a reader that admits each
/// chunk to the bottleneck and a writer that releases it when it arrives.
async fn tcp_pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    link: SharedLink,
) {
    let budget = Arc::new(Semaphore::new(TCP_BUDGET));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer_budget = budget.clone();
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if w.write_all(&chunk).await.is_err() {
                return;
            }
            writer_budget.add_permits(chunk.len());
        }
        let _ = w.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let Ok(permit) = budget.acquire_many(n as u32).await else {
                return;
            };
            permit.forget();
            let at = loop {
                let admit = link.lock().expect("link lock").admit(Instant::now(), n);
                match admit {
                    Admit::At(at) => break at,
                    Admit::Full(wait) => tokio::time::sleep(wait).await,
                }
            };
            if tx.send((at, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}

/// A UDP socket with 8 MiB buffers: a burst the emulated link would carry
/// must not be lost in the relay's own socket.
fn udp_bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// A datagram waiting for its arrival time; the heap pops the earliest.
struct Pending {
    at: Instant,
    seq: u64,
    via: Arc<UdpSocket>,
    to: Option<SocketAddr>,
    data: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Sends each datagram at its arrival time; with jitter, out of order.
async fn udp_scheduler(mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut heap = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|p: &Pending| p.at);
        tokio::select! {
            item = rx.recv() => match item {
                Some(p) => heap.push(p),
                None => return,
            },
            _ = async { tokio::time::sleep_until(next.expect("guarded")).await }, if next.is_some() => {
                let now = Instant::now();
                while heap.peek().is_some_and(|p| p.at <= now) {
                    let p = heap.pop().expect("peeked");
                    let _ = match p.to {
                        Some(to) => p.via.send_to(&p.data, to).await,
                        None => p.via.send(&p.data).await,
                    };
                }
            }
        }
    }
}

/// The per-datagram fate: dropped by loss or a full queue, else its arrival.
struct Fate {
    rng: StdRng,
    loss: f64,
    jitter: Duration,
    seq: u64,
}

impl Fate {
    fn decide(&mut self, link: &SharedLink, len: usize) -> Option<(Instant, u64)> {
        if self.loss > 0.0 && self.rng.random::<f64>() < self.loss {
            return None;
        }
        let at = match link.lock().expect("link lock").admit(Instant::now(), len) {
            Admit::At(at) => at,
            Admit::Full(_) => return None,
        };
        let extra = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.jitter.mul_f64(self.rng.random::<f64>())
        };
        self.seq += 1;
        Some((at + extra, self.seq))
    }
}

async fn udp_relay(
    listen: Arc<UdpSocket>,
    target: SocketAddr,
    o: Options,
    up: SharedLink,
    down: SharedLink,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(udp_scheduler(rx));
    let fate = Arc::new(Mutex::new(Fate {
        rng: StdRng::seed_from_u64(o.seed),
        loss: o.loss,
        jitter: o.jitter,
        seq: 0,
    }));
    let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = listen.recv_from(&mut buf).await else {
            continue;
        };
        let upstream = match clients.get(&from) {
            Some(s) => s.clone(),
            None => {
                if clients.len() >= MAX_UDP_CLIENTS {
                    continue;
                }
                let local = SocketAddr::new(listen.local_addr().expect("bound").ip(), 0);
                let Ok(s) = udp_bind(local) else {
                    continue;
                };
                if s.connect(target).await.is_err() {
                    continue;
                }
                let s = Arc::new(s);
                clients.insert(from, s.clone());
                tokio::spawn(udp_back(
                    s.clone(),
                    listen.clone(),
                    from,
                    fate.clone(),
                    down.clone(),
                    tx.clone(),
                ));
                s
            }
        };
        let decided = fate.lock().expect("fate lock").decide(&up, n);
        if let Some((at, seq)) = decided {
            let data = buf[..n].to_vec();
            let _ = tx.send(Pending {
                at,
                seq,
                via: upstream,
                to: None,
                data,
            });
        }
    }
}

/// The target's answers to one client, back through the downstream link.
async fn udp_back(
    upstream: Arc<UdpSocket>,
    listen: Arc<UdpSocket>,
    client: SocketAddr,
    fate: Arc<Mutex<Fate>>,
    down: SharedLink,
    tx: mpsc::UnboundedSender<Pending>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok(n) = upstream.recv(&mut buf).await else {
            continue;
        };
        let decided = fate.lock().expect("fate lock").decide(&down, n);
        if let Some((at, seq)) = decided {
            let data = buf[..n].to_vec();
            let p = Pending {
                at,
                seq,
                via: listen.clone(),
                to: Some(client),
                data,
            };
            if tx.send(p).is_err() {
                return;
            }
        }
    }
}
