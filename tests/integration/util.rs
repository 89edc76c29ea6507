//! Shared test harness: temp dirs, ports, process guards with hard timeouts,
//! deterministic payloads, byte-for-byte comparison, opentracker and helpers
//! that run the real `btc` binary.
//!
//! Every test builds a [`Ctx`] with a hard deadline. A watchdog thread
//! SIGKILLs every process the test started when the deadline passes, so no
//! wait can outlive it, and every [`Proc`] is killed (SIGTERM, then SIGKILL)
//! when dropped, including on panic.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test, built by cargo for this test target.
pub const BTC: &str = env!("CARGO_BIN_EXE_btc");

/// Debian's python3 (where `python3-libtorrent` lives), not a pyenv shim.
pub const PYTHON: &str = "/usr/bin/python3";

pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;
pub const SIGKILL: i32 = 9;

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
    fn geteuid() -> u32;
}

/// Subcommands of btc that never map ports.
const NO_MAPPING_SUBCOMMANDS: &[&str] = &["create", "info", "dht", "completions", "man"];

/// Refuses a command that would start a btc download or seed outside a
/// network namespace without `--no-port-mapping` (it would send PCP and
/// NAT-PMP to the machine's real router and SSDP to its LAN). btc is found
/// as the program, as an argument (`sh -c 'exec "$0" …' BTC …`) or inside
/// a script (`bash -c "'BTC' …"`); `ip netns exec` runs it in a namespace
/// of the test's own. Every process a test starts passes through this (see
/// [`Ctx::spawn`]).
pub fn port_mapping_guard(cmd: &Command) -> Result<(), String> {
    let words: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    let in_netns = Path::new(&words[0]).file_name() == Some("ip".as_ref())
        && words.get(1).map(String::as_str) == Some("netns")
        && words.get(2).map(String::as_str) == Some("exec");
    let Some(at) = words.iter().position(|w| w.contains(BTC)) else {
        return Ok(());
    };
    if in_netns {
        return Ok(());
    }
    // The word after btc's path: in the same word (a script) or the next.
    let after = words[at]
        .split_once(BTC)
        .map(|(_, rest)| rest)
        .unwrap_or("");
    let next = after
        .trim_start_matches(['\'', '"'])
        .split_whitespace()
        .next()
        .or_else(|| words.get(at + 1).map(String::as_str))
        .unwrap_or("");
    if NO_MAPPING_SUBCOMMANDS.contains(&next) {
        return Ok(());
    }
    if words[at..].iter().any(|w| w.contains("--no-port-mapping")) {
        return Ok(());
    }
    Err(format!(
        "btc started outside a test namespace without --no-port-mapping: {words:?}"
    ))
}

/// Whether the tests run as root (CI does).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { geteuid() == 0 }
}

/// Sends `sig` to one process by PID.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        kill(pid as i32, sig);
    }
}

// ---------------------------------------------------------------------------
// Temp dirs and the per-test context

/// A temporary directory, removed on drop unless `BTC_KEEP_TEST_DIRS` is set
/// (then its path is printed, for post-mortems).
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("btc-it-{name}-"))
            .tempdir()
            .expect("creating a temp dir");
        let path = dir.path().to_path_buf();
        TestDir {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// A new empty sub-directory.
    pub fn mkdir(&self, p: impl AsRef<Path>) -> PathBuf {
        let d = self.path.join(p);
        fs::create_dir_all(&d).expect("mkdir");
        d
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if (std::env::var_os("BTC_KEEP_TEST_DIRS").is_some() || thread::panicking())
            && let Some(d) = self.dir.take()
        {
            let p = d.keep();
            eprintln!("[harness] kept test dir {}", p.display());
        }
    }
}

type Pids = Arc<Mutex<Vec<u32>>>;

/// One test: its temp dir, its deadline and the processes it started.
pub struct Ctx {
    pub dir: TestDir,
    pub name: String,
    /// Where `btc` and opentracker run, for tests of a machine offline.
    pub netns: Option<Netns>,
    deadline: Instant,
    pids: Pids,
    done: Arc<AtomicBool>,
    timed_out: Arc<AtomicBool>,
    seq: AtomicUsize,
}

impl Ctx {
    /// A context whose processes are all SIGKILLed after `timeout`.
    pub fn new(name: &str, timeout: Duration) -> Ctx {
        let dir = TestDir::new(name);
        fs::create_dir_all(dir.join("logs")).unwrap();
        let pids: Pids = Arc::default();
        let done = Arc::new(AtomicBool::new(false));
        let timed_out = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + timeout;
        {
            let (pids, done, timed_out) = (pids.clone(), done.clone(), timed_out.clone());
            let name = name.to_string();
            thread::spawn(move || {
                while Instant::now() < deadline {
                    if done.load(Ordering::SeqCst) {
                        return;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
                if done.load(Ordering::SeqCst) {
                    return;
                }
                timed_out.store(true, Ordering::SeqCst);
                eprintln!("[harness] {name}: hard timeout of {timeout:?} hit; killing everything");
                for pid in pids.lock().unwrap().iter() {
                    signal(*pid, SIGKILL);
                }
            });
        }
        Ctx {
            dir,
            name: name.to_string(),
            netns: None,
            deadline,
            pids,
            done,
            timed_out,
            seq: AtomicUsize::new(0),
        }
    }

    /// A context whose `btc` and opentracker processes run in a network
    /// namespace of their own with nothing but loopback: a machine with no
    /// network at all (see [`Netns`]).
    pub fn offline(name: &str, timeout: Duration) -> Ctx {
        let mut ctx = Ctx::new(name, timeout);
        ctx.netns = Some(Netns::new());
        ctx
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.dir.join(p)
    }

    pub fn mkdir(&self, p: impl AsRef<Path>) -> PathBuf {
        self.dir.mkdir(p)
    }

    /// A command for `program`, inside the context's namespace if it has one.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.netns {
            Some(ns) => ns.command(program),
            None => Command::new(program),
        }
    }

    /// Whether something accepts TCP connections at `addr`, seen from
    /// where the context's processes run.
    pub fn tcp_open(&self, addr: &str) -> bool {
        match &self.netns {
            Some(ns) => ns.tcp_open(addr),
            None => tcp_open(addr),
        }
    }

    /// Waits (at most `timeout`) until `proc` accepts TCP connections at
    /// `addr`; false if it exited or never did.
    pub fn wait_listening(&self, proc: &mut Proc, addr: &str, timeout: Duration) -> bool {
        wait_for(timeout, || proc.is_running() && self.tcp_open(addr))
    }

    /// Time left before the hard deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Panics if the hard deadline has passed.
    pub fn check_deadline(&self) {
        if self.timed_out.load(Ordering::SeqCst) || Instant::now() >= self.deadline {
            panic!("{}: hard test timeout exceeded", self.name);
        }
    }

    /// Starts `cmd` with stdin closed and stdout/stderr captured to files in
    /// `logs/`. The process is killed when the returned guard drops.
    pub fn spawn(&self, name: &str, mut cmd: Command) -> Proc {
        self.check_deadline();
        if let Err(e) = port_mapping_guard(&cmd) {
            panic!("{name}: {e}");
        }
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        let out = self.join(format!("logs/{n:02}-{name}.stdout"));
        let err = self.join(format!("logs/{n:02}-{name}.stderr"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap());
        let desc = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {desc}: {e} (is it installed?)"));
        self.pids.lock().unwrap().push(child.id());
        Proc {
            name: name.to_string(),
            desc,
            child,
            stdout: out,
            stderr: err,
            status: None,
            deadline: self.deadline,
        }
    }

    /// Runs `cmd` to completion (at most `timeout`) and returns its output.
    pub fn run(&self, name: &str, cmd: Command, timeout: Duration) -> Output {
        let mut p = self.spawn(name, cmd);
        let status = p.wait_timeout(timeout);
        let status = match status {
            Some(s) => s,
            None => panic!(
                "{name}: still running after {timeout:?}: {}\n{}",
                p.desc,
                p.tails()
            ),
        };
        Output {
            status,
            stdout: p.stdout(),
            stderr: p.stderr(),
        }
    }

    /// A `btc` command with a private XDG state home and no inherited
    /// RUST_LOG, so runs never touch the user's state.
    pub fn btc(&self, args: &[&str]) -> Command {
        let mut c = self.command(BTC);
        c.args(args);
        // Tests on the host's network share its multicast groups: with LSD
        // on, btc processes of concurrent tests would find each other (and
        // a test's seeder and leecher would also meet by LSD, connecting
        // twice). LSD is on only inside a test's own namespace.
        const SUBCOMMANDS: &[&str] = &["create", "info", "dht", "completions", "man"];
        let subcommand = args.first().is_some_and(|a| SUBCOMMANDS.contains(a));
        if self.netns.is_none() && !subcommand && !args.contains(&"--no-lsd") {
            c.arg("--no-lsd");
        }
        // Port mapping would ask the machine's real router (PCP, NAT-PMP)
        // and LAN (SSDP): not ours to probe. Only a test's own namespace,
        // whose router is the test's, may see it on.
        if self.netns.is_none() && !subcommand && !args.contains(&"--no-port-mapping") {
            c.arg("--no-port-mapping");
        }
        c.env_remove("RUST_LOG")
            .env("XDG_STATE_HOME", self.join("xdg-state"))
            .env("HOME", self.path());
        c
    }

    /// A `btc` command run inside `ns` (a namespace the test made), with
    /// the same private state as [`Ctx::btc`]; port mapping stays on.
    pub fn btc_in(&self, ns: &Netns, args: &[&str]) -> Command {
        let mut c = ns.command(BTC);
        c.args(args)
            .env_remove("RUST_LOG")
            .env("XDG_STATE_HOME", self.join("xdg-state"))
            .env("HOME", self.path());
        c
    }

    /// Runs `btc ARGS` to completion within `timeout`.
    pub fn run_btc(&self, args: &[&str], timeout: Duration) -> Output {
        self.run("btc", self.btc(args), timeout)
    }

    /// Waits (bounded by `timeout` and the deadline) until `cond` holds.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + timeout.min(self.remaining());
        loop {
            if cond() {
                return;
            }
            if Instant::now() >= end {
                panic!(
                    "{}: timed out after {timeout:?} waiting for {what}",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

/// Waits until `cond` holds or `timeout` passes; true if it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A finished command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// Panics with both streams unless the command exited 0.
    pub fn assert_ok(&self, what: &str) -> &Self {
        assert!(
            self.ok(),
            "{what}: exited {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

// ---------------------------------------------------------------------------
// Processes

/// A running process; SIGTERM then SIGKILL on drop.
pub struct Proc {
    pub name: String,
    pub desc: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
    deadline: Instant,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stdout).unwrap_or_default()).into_owned()
    }

    /// stdout as bytes (for binary output such as `--stream`).
    pub fn stdout_bytes(&self) -> Vec<u8> {
        fs::read(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    /// stdout followed by stderr.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    /// The last lines of both streams, for failure messages.
    pub fn tails(&self) -> String {
        fn tail(s: &str) -> String {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        }
        format!(
            "--- {} ({}) stdout:\n{}\n--- {} stderr:\n{}",
            self.name,
            self.desc,
            tail(&self.stdout()),
            self.name,
            tail(&self.stderr())
        )
    }

    /// The exit status if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits for exit at most `timeout` (and never past the test deadline).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = (Instant::now() + timeout).min(self.deadline + Duration::from_secs(1));
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for exit and panics (with the logs) unless it exits 0 in time.
    pub fn expect_success(&mut self, timeout: Duration) {
        match self.wait_timeout(timeout) {
            Some(s) if s.success() => {}
            Some(s) => panic!("{} exited with {s}\n{}", self.name, self.tails()),
            None => panic!(
                "{} did not finish within {timeout:?}\n{}",
                self.name,
                self.tails()
            ),
        }
    }

    /// Panics (with the logs) if the process has already exited.
    pub fn assert_running(&mut self) {
        if let Some(s) = self.try_status() {
            panic!("{} exited early with {s}\n{}", self.name, self.tails());
        }
    }

    /// SIGKILL now, and reap.
    pub fn kill_hard(&mut self) {
        if self.is_running() {
            signal(self.pid(), SIGKILL);
            self.status = self.child.wait().ok();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`. Returns the exit status.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.is_running() {
            signal(self.pid(), SIGTERM);
            if self.wait_timeout(grace).is_none() {
                self.kill_hard();
            }
        }
        self.status
    }

    /// Waits until the captured stdout+stderr contains `needle`; panics with
    /// the logs on timeout or if the process exits first.
    pub fn wait_output(&mut self, needle: &str, timeout: Duration) -> String {
        let end = (Instant::now() + timeout).min(self.deadline);
        loop {
            let out = self.output();
            if out.contains(needle) {
                return out;
            }
            if let Some(s) = self.try_status() {
                let out = self.output();
                if out.contains(needle) {
                    return out;
                }
                panic!(
                    "{} exited ({s}) before printing {needle:?}\n{}",
                    self.name,
                    self.tails()
                );
            }
            if Instant::now() >= end {
                panic!(
                    "{}: no {needle:?} in its output within {timeout:?}\n{}",
                    self.name,
                    self.tails()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.tails());
        }
        self.terminate(Duration::from_secs(3));
    }
}

// ---------------------------------------------------------------------------
// Ports and sockets

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static S: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    S.get_or_init(Mutex::default)
}

/// A port free for both TCP and UDP on 127.0.0.0/8 right now, never handed
/// out twice in this test process.
///
/// Ports come from below the kernel's ephemeral range (32768 and up by
/// default), never from a `bind(0)`: outgoing connections take their local
/// port from that range, so a port handed out from it could be taken by
/// some test's outgoing connection before the process meant to listen on
/// it starts (seen as "Address already in use" when the hostile tests open
/// a thousand connections next to other tests).
pub fn free_port() -> u16 {
    let (low, high) = (12_000u32, ephemeral_floor().clamp(13_000, 32_768));
    let mut x = (std::process::id() as u64) << 32 | Instant::now().elapsed().subsec_nanos() as u64;
    x ^= std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    for _ in 0..5000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = (low + (x % u64::from(high - low)) as u32) as u16;
        let ok = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.2", port)).is_ok()
            && TcpListener::bind(("127.0.0.2", port)).is_ok();
        if ok && handed_out().lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("no free port found");
}

/// The lowest port the kernel hands out for outgoing connections.
fn ephemeral_floor() -> u32 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Whether something accepts TCP connections at `addr`.
pub fn tcp_open(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().expect("socket address");
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

// ---------------------------------------------------------------------------
// Payloads

/// xorshift64*: deterministic bytes from a seed, no crate needed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

/// Writes `len` deterministic bytes from `seed` to `path` (parents created).
pub fn write_random_file(path: &Path, len: u64, seed: u64) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    let mut f = io::BufWriter::new(File::create(path).unwrap());
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// A payload: files relative to a root folder (one entry with an empty
/// path means a single-file torrent named `name`).
pub struct Payload {
    /// Torrent name: the file (single) or top folder (multi).
    pub name: String,
    /// (path inside the folder, length); empty for a single file.
    pub files: Vec<(String, u64)>,
    /// Length of the single file when `files` is empty.
    pub single_len: u64,
}

impl Payload {
    pub fn single(name: &str, len: u64) -> Payload {
        Payload {
            name: name.into(),
            files: vec![],
            single_len: len,
        }
    }

    pub fn multi(name: &str, files: &[(&str, u64)]) -> Payload {
        Payload {
            name: name.into(),
            files: files.iter().map(|(p, l)| (p.to_string(), *l)).collect(),
            single_len: 0,
        }
    }

    /// A few MiB over nested folders, with sizes that make pieces cross
    /// file boundaries, a tiny and an empty-ish file included.
    pub fn nested(name: &str, scale: u64) -> Payload {
        let k = 1024u64;
        Payload::multi(
            name,
            &[
                ("README.txt", 1_234 * scale),
                ("a/one.bin", 700 * k * scale + 17),
                ("a/b/two.bin", 1_100 * k * scale + 3),
                ("a/b/c/three.dat", 33 * scale),
                ("a/b/c/four.dat", 913 * k * scale + 511),
                ("d/five.bin", 1),
                ("d/e/six.bin", 1_500 * k * scale + 4_097),
                ("z.last", 65_537 * scale),
            ],
        )
    }

    pub fn total(&self) -> u64 {
        if self.files.is_empty() {
            self.single_len
        } else {
            self.files.iter().map(|f| f.1).sum()
        }
    }

    /// Writes the content under `dir` (creating `dir/name`), seeded by `seed`.
    /// Returns the path of the torrent root (file or folder).
    pub fn write(&self, dir: &Path, seed: u64) -> PathBuf {
        let root = dir.join(&self.name);
        if self.files.is_empty() {
            write_random_file(&root, self.single_len, seed);
        } else {
            for (i, (p, len)) in self.files.iter().enumerate() {
                write_random_file(&root.join(p), *len, seed ^ ((i as u64 + 1) << 32));
            }
        }
        root
    }
}

/// Asserts that the tree at `got` holds exactly the files of `want` (a file
/// or a folder), byte for byte.
pub fn assert_same_tree(want: &Path, got: &Path) {
    let mut a = list_files(want);
    let mut b = list_files(got);
    a.sort();
    b.sort();
    assert_eq!(
        a,
        b,
        "file sets differ between {} and {}",
        want.display(),
        got.display()
    );
    for rel in &a {
        let (x, y) = if rel.as_os_str().is_empty() {
            (want.to_path_buf(), got.to_path_buf())
        } else {
            (want.join(rel), got.join(rel))
        };
        assert_same_file(&x, &y);
    }
}

fn list_files(root: &Path) -> Vec<PathBuf> {
    let meta = fs::metadata(root).unwrap_or_else(|e| panic!("{} is missing: {e}", root.display()));
    if meta.is_file() {
        return vec![PathBuf::new()];
    }
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out
}

/// Asserts two files are identical, naming the first differing offset.
pub fn assert_same_file(want: &Path, got: &Path) {
    let la = fs::metadata(want).unwrap().len();
    let lb = fs::metadata(got)
        .unwrap_or_else(|e| panic!("{} is missing: {e}", got.display()))
        .len();
    assert_eq!(la, lb, "length of {} vs {}", want.display(), got.display());
    let mut fa = io::BufReader::new(File::open(want).unwrap());
    let mut fb = io::BufReader::new(File::open(got).unwrap());
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = read_full(&mut fa, &mut ba);
        let m = read_full(&mut fb, &mut bb);
        assert_eq!(n, m, "read lengths differ at {off}");
        if n == 0 {
            return;
        }
        if ba[..n] != bb[..n] {
            let i = (0..n).find(|&i| ba[i] != bb[i]).unwrap();
            panic!(
                "{} and {} differ at byte {}",
                want.display(),
                got.display(),
                off + i as u64
            );
        }
        off += n as u64;
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Total bytes of regular files under `p` (0 if missing).
pub fn tree_size(p: &Path) -> u64 {
    match fs::metadata(p) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum())
            .unwrap_or(0),
        _ => 0,
    }
}

/// Allocated bytes (st_blocks * 512) under `p`: grows as data is really
/// written even when files are pre-allocated sparse.
pub fn tree_allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_file() => m.blocks() * 512,
        Ok(m) if m.is_dir() => fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| tree_allocated(&e.path())).sum())
            .unwrap_or(0),
        _ => 0,
    }
}

/// Number of entries (recursively) under `p`.
pub fn count_entries(p: &Path) -> usize {
    fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    1 + if e.path().is_dir() {
                        count_entries(&e.path())
                    } else {
                        0
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Torrents

/// The info-hash as `transmission-show` reports it (an oracle independent of
/// btc).
pub fn transmission_hash(ctx: &Ctx, torrent: &Path) -> String {
    let mut c = Command::new("transmission-show");
    c.arg(torrent);
    let out = ctx.run("transmission-show", c, Duration::from_secs(30));
    out.assert_ok("transmission-show");
    out.stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Hash: "))
        .unwrap_or_else(|| panic!("no Hash: in transmission-show output:\n{}", out.stdout))
        .trim()
        .to_string()
}

/// libtorrent's v1 and v2 info-hashes of `torrent` (hex; the v1 one is all
/// zeros for a v2-only torrent, the v2 one for a v1 torrent).
pub fn libtorrent_hashes(ctx: &Ctx, torrent: &Path) -> (String, String) {
    require_tool(PYTHON);
    let mut c = Command::new(PYTHON);
    c.arg("-c")
        .arg("import sys, libtorrent as lt; h = lt.torrent_info(sys.argv[1]).info_hashes(); print(h.v1, h.v2)")
        .arg(torrent);
    let out = ctx.run("libtorrent-hashes", c, Duration::from_secs(60));
    out.assert_ok("libtorrent info-hashes");
    let mut it = out.stdout.split_whitespace().map(str::to_lowercase);
    let v1 = it.next().unwrap_or_default();
    (v1, it.next().unwrap_or_default())
}

/// `btc create PATH -o OUT EXTRA...`, asserted to succeed. A v1 torrent
/// unless `EXTRA` names a `--format`: these torrents go to Transmission 3
/// (`transmission-show` names the tracker whitelist) and to aria2c, which
/// cannot read or would mis-read the hybrid `btc create` makes by default.
pub fn btc_create(ctx: &Ctx, path: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "create",
        path.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--format") {
        args.extend(["--format", "v1"]);
    }
    ctx.run_btc(&args, Duration::from_secs(120))
        .assert_ok("btc create");
    assert!(out.is_file(), "btc create wrote no {}", out.display());
}

/// The `Info-hash:` line of `btc info SOURCE`.
pub fn btc_info_hash(ctx: &Ctx, source: &str) -> String {
    let out = ctx.run_btc(&["info", source], Duration::from_secs(30));
    out.assert_ok("btc info");
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Info-hash:"))
        .unwrap_or_else(|| panic!("no Info-hash: line in btc info output:\n{}", out.stdout))
        .trim()
        .to_string()
}

/// Parses the byte count of btc's summary line
/// (`downloaded NAME: 12.00 MiB in 3.1s, 3.87 MiB/s average, from 1 peer,
/// uploaded 0 B`), approximately (the line rounds to two decimals).
pub fn summary_downloaded_bytes(stdout: &str) -> Option<u64> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("downloaded "))?;
    let rest = line.rsplit_once(": ")?.1;
    let mut it = rest.split_whitespace();
    let num: f64 = it.next()?.parse().ok()?;
    let unit = it.next()?;
    let mul = match unit {
        "B" => 1u64,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    Some((num * mul as f64) as u64)
}

/// Pieces found on disk at start, from `-v`'s `N of M pieces already on
/// disk` log line or the plain `downloading NAME (SIZE, N pieces already on
/// disk)` phase line.
pub fn resumed_pieces(stderr: &str) -> Option<u64> {
    let l = stderr
        .lines()
        .find(|l| l.contains("pieces already on disk"))?;
    let before = l.split(" pieces already on disk").next()?;
    if let Some((n, _)) = before.rsplit_once(" of ") {
        return n.rsplit([' ', ',', '(']).next()?.parse().ok();
    }
    before.rsplit([' ', ',', '(']).next()?.parse().ok()
}

/// Milliseconds of a `-v` log line `<what> N ms after start`.
pub fn ms_after_start(stderr: &str, what: &str) -> Option<f64> {
    let l = stderr.lines().find(|l| l.contains(what))?;
    let rest = l.split(what).nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

// ---------------------------------------------------------------------------
// btc processes

/// A seeding btc: `btc -o DIR TORRENT --port P EXTRA...`, waited on until it
/// reports that it is seeding.
pub fn start_btc_seeder(
    ctx: &Ctx,
    name: &str,
    dir: &Path,
    source: &str,
    port: u16,
    extra: &[&str],
) -> Proc {
    let p = port.to_string();
    let mut args = vec!["-o", dir.to_str().unwrap(), source, "--port", &p];
    args.extend_from_slice(extra);
    let mut proc = ctx.spawn(name, ctx.btc(&args));
    proc.wait_output("seeding ", Duration::from_secs(120));
    proc
}

/// A libtorrent seeder (`lt.py seed`) of `torrent` with its data in
/// `save`, listening on `listen`; returns once it seeds.
pub fn start_lt_seeder(ctx: &Ctx, torrent: &Path, save: &Path, listen: &str) -> Proc {
    start_lt_seeder_with(ctx, torrent, save, listen, &[])
}

/// [`start_lt_seeder`] with more `lt.py seed` arguments.
pub fn start_lt_seeder_with(
    ctx: &Ctx,
    torrent: &Path,
    save: &Path,
    listen: &str,
    extra: &[&str],
) -> Proc {
    let mut c = Command::new(PYTHON);
    c.arg("-u").arg(py_script("lt.py")).args([
        "seed",
        "--torrent",
        s(torrent),
        "--save",
        s(save),
        "--listen",
        listen,
    ]);
    c.args(extra);
    let mut p = ctx.spawn("libtorrent-seeder", c);
    p.wait_output("SEEDING", secs(60));
    p
}

/// A local DHT: a `btc dht` node and a btc seeding `torrent` from
/// `seed_dir` (bound to 127.0.0.1, with `extra` arguments) that
/// bootstraps from it and announces there. Returns both and the node's
/// port.
pub fn dht_node_and_seeder(
    ctx: &Ctx,
    seed_dir: &Path,
    torrent: &Path,
    extra: &[&str],
) -> (Proc, Proc, u16) {
    let d = free_port();
    let node = start_btc_dht(ctx, d);
    let boot = format!("127.0.0.1:{d}");
    let state = ctx.mkdir("state-seeder");
    let mut args = vec![
        "--dht-bootstrap",
        &boot,
        "--state-dir",
        state.to_str().unwrap(),
        "--bind",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    let seeder = start_btc_seeder(
        ctx,
        "seeder",
        seed_dir,
        torrent.to_str().unwrap(),
        free_port(),
        &args,
    );
    (node, seeder, d)
}

/// A standalone DHT node on 127.0.0.1:`port` that bootstraps from nobody.
pub fn start_btc_dht(ctx: &Ctx, port: u16) -> Proc {
    start_btc_dht_on(ctx, "127.0.0.1", port)
}

/// A standalone DHT node bound to `ip` (IPv4: its IPv4 node alone; IPv6:
/// its IPv6 node alone) on `port`, bootstrapping from nobody.
pub fn start_btc_dht_on(ctx: &Ctx, ip: &str, port: u16) -> Proc {
    let state = ctx.mkdir(format!("dht-node-{port}"));
    let p = port.to_string();
    let mut proc = ctx.spawn(
        "btc-dht",
        ctx.btc(&[
            "dht",
            "--port",
            &p,
            "--bind",
            ip,
            "--no-bootstrap",
            "--state-dir",
            state.to_str().unwrap(),
        ]),
    );
    proc.wait_output("dht node listening on", Duration::from_secs(30));
    proc
}

// ---------------------------------------------------------------------------
// A machine with no network

/// A network namespace with only loopback up, and its own `/etc/hosts` and
/// `/etc/resolv.conf` (`ip netns exec` bind-mounts the files of
/// `/etc/netns/NAME/` over `/etc/`). Inside it no public host name
/// resolves and no address outside 127.0.0.0/8 is reachable, yet loopback
/// works, so a test can run a whole swarm offline. Needs root, as CI has;
/// removed on drop.
pub struct Netns {
    pub name: String,
    etc: PathBuf,
}

impl Netns {
    pub fn new() -> Netns {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        assert!(
            is_root(),
            "offline tests make a network namespace and must run as root (CI does)"
        );
        require_tool("ip");
        let name = format!(
            "btc-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let etc = offline_etc(&name);
        let ns = Netns { name, etc };
        ns.ip(&["netns", "add", &ns.name]);
        ns.ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Lets multicast flow on the namespace's loopback (for LSD): the
    /// interface takes multicast and 224.0.0.0/4 is routed to it.
    pub fn enable_multicast(&self) {
        self.ip(&["-n", &self.name, "link", "set", "lo", "multicast", "on"]);
        self.ip(&["-n", &self.name, "route", "add", "224.0.0.0/4", "dev", "lo"]);
    }

    /// Lets IPv6 multicast flow on the namespace's loopback (for LSD on
    /// ff15::efc0:988f). The kernel turns any IPv6 route through `lo` into
    /// a reject route unless it is `local` (so `ff00::/8 dev lo`, even as
    /// `multicast`, drops every datagram: `Ip6OutNoRoutes`); a `local`
    /// route makes a datagram to a group go out on `lo` and come back in,
    /// where UDP hands it to every socket that joined the group, from ::1.
    /// Without it a join names no interface and fails (ENODEV). Unlike
    /// IPv4, `lo` needs no `multicast on` flag for this.
    pub fn enable_multicast_v6(&self) {
        self.ip(&[
            "-n", &self.name, "-6", "route", "add", "local", "ff00::/8", "dev", "lo", "table",
            "local",
        ]);
    }

    /// `program` to be run inside the namespace. `ip netns exec` execs it,
    /// so the PID is the program's own.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// [`tcp_open`] from inside the namespace, through bash's /dev/tcp.
    pub fn tcp_open(&self, addr: &str) -> bool {
        let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
        self.command("bash")
            .args(["-c", &format!(": </dev/tcp/{host}/{port}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Makes `host` resolve to `ip` from now on, for processes already
    /// running too: the file is appended to in place, so their bind mount
    /// sees it, and glibc reads /etc/hosts on every lookup.
    pub fn add_host(&self, host: &str, ip: &str) {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.etc.join("hosts"))
            .unwrap();
        writeln!(f, "{ip} {host}").unwrap();
    }
}

/// The packets of an nftables counter, from `nft list counter …`'s text.
pub fn nft_packets(text: &str) -> u64 {
    text.split("packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {text:?}"))
}

/// `/etc/netns/NAME/` for a namespace that resolves nothing: `hosts` with
/// localhost alone, and a resolver that answers nothing, at once (DNS
/// fails as offline). `ip netns exec` mounts these over `/etc/`.
pub fn offline_etc(name: &str) -> PathBuf {
    let etc = Path::new("/etc/netns").join(name);
    fs::create_dir_all(&etc).unwrap();
    fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::write(
        etc.join("resolv.conf"),
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    etc
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = fs::remove_dir_all(&self.etc);
    }
}

// ---------------------------------------------------------------------------
// nginx

/// Debian's nginx serving `root` on 127.0.0.1 (a web seed: it honours Range
/// requests), in the foreground as one process so its guard can end it.
pub struct Nginx {
    pub port: u16,
    pub proc: Proc,
}

impl Nginx {
    pub fn start(ctx: &Ctx, root: &Path) -> Nginx {
        require_tool("nginx");
        let dir = ctx.mkdir("nginx");
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  default_type application/octet-stream;\n  \
             server {{ listen 127.0.0.1:{port}; root {}; }}\n}}\n",
            root.display()
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).unwrap();
        let mut c = ctx.command("nginx");
        c.arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log"));
        let mut proc = ctx.spawn("nginx", c);
        if !ctx.wait_listening(&mut proc, &format!("127.0.0.1:{port}"), secs(10)) {
            let log = fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            panic!("nginx did not start\n{}\n{log}", proc.tails());
        }
        Nginx { port, proc }
    }

    /// The URL of `path` (relative to the served root).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

// ---------------------------------------------------------------------------
// opentracker

/// A Debian opentracker on 127.0.0.1, HTTP and UDP on the same port, that
/// tracks only the whitelisted info-hashes.
pub struct Opentracker {
    pub port: u16,
    pub proc: Proc,
}

impl Opentracker {
    /// Starts opentracker tracking `hashes` (40-hex). It must run as root to
    /// chroot into its dir, then drops to `nobody`; the whitelist is read
    /// after that, relative to the chroot, so both must be world-readable.
    pub fn start(ctx: &Ctx, hashes: &[&str]) -> Opentracker {
        Opentracker::start_at(ctx, ctx.netns.as_ref(), "127.0.0.1", hashes)
    }

    /// [`Opentracker::start`] on `ip`, in `ns` (else on the host).
    pub fn start_at(ctx: &Ctx, ns: Option<&Netns>, ip: &str, hashes: &[&str]) -> Opentracker {
        use std::os::unix::fs::PermissionsExt;
        let dir = ctx.mkdir("opentracker");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let wl = dir.join("whitelist");
        let mut text = String::new();
        for h in hashes {
            assert_eq!(h.len(), 40, "whitelist wants 40-hex hashes: {h}");
            text.push_str(&h.to_lowercase());
            text.push('\n');
        }
        fs::write(&wl, text).unwrap();
        fs::set_permissions(&wl, fs::Permissions::from_mode(0o644)).unwrap();
        let port = free_port();
        let p = port.to_string();
        let mut c = match ns {
            Some(ns) => ns.command("opentracker"),
            None => Command::new("opentracker"),
        };
        c.args(["-i", ip, "-p", &p, "-P", &p, "-d"])
            .arg(&dir)
            .args(["-w", "whitelist"]);
        // As root it chroots into -d and refuses to keep root: drop to nobody.
        if is_root() {
            c.args(["-u", "nobody"]);
        }
        let mut proc = ctx.spawn("opentracker", c);
        let addr = format!("{ip}:{port}");
        let up = wait_for(secs(10), || {
            proc.is_running() && ns.map_or_else(|| tcp_open(&addr), |ns| ns.tcp_open(&addr))
        });
        if !up {
            panic!("opentracker did not start\n{}", proc.tails());
        }
        // The whitelist is loaded by a helper thread right after start-up.
        thread::sleep(Duration::from_millis(300));
        Opentracker { port, proc }
    }

    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.port)
    }

    pub fn udp(&self) -> String {
        format!("udp://127.0.0.1:{}/announce", self.port)
    }
}

/// Makes `out`, a torrent of `root` (`create_args` passed to `btc create`)
/// whose info-hash a fresh opentracker whitelists, and returns the tracker.
/// The announce URL only exists once the tracker runs, and the whitelist
/// must be given at start: the info-hash does not depend on the announce
/// URL, so a probe torrent supplies it first. `announce` picks the URL
/// written into `out` (`None`: no announce URL; pass `--tracker` instead).
pub fn torrent_behind_tracker(
    ctx: &Ctx,
    root: &Path,
    out: &Path,
    create_args: &[&str],
    announce: Option<fn(&Opentracker) -> String>,
) -> Opentracker {
    let probe = ctx.join("probe.torrent");
    btc_create(ctx, root, &probe, create_args);
    let hash = transmission_hash(ctx, &probe);
    let tracker = Opentracker::start(ctx, &[&hash]);
    let url = announce.map(|f| f(&tracker));
    let mut args = create_args.to_vec();
    if let Some(u) = &url {
        args.extend(["--tracker", u.as_str()]);
    }
    btc_create(ctx, root, out, &args);
    assert_eq!(
        transmission_hash(ctx, out),
        hash,
        "announce must not change the hash"
    );
    tracker
}

/// Panics unless `tool` is on PATH: a missing external tool fails the test.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new(tool).is_file();
    assert!(found, "required tool {tool} is not installed (see .ci/run)");
}

/// Path of a python helper script in tests/integration/py/.
pub fn py_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/integration/py")
        .join(name)
}

/// Path inside testdata/.
pub fn testdata(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(p)
}

/// Runs `btc ARGS` as `name` to completion (a leecher with `--no-seed`),
/// asserts exit 0 and returns (stdout, stderr, elapsed).
pub fn leech(
    ctx: &Ctx,
    name: &str,
    args: &[&str],
    timeout: Duration,
) -> (String, String, Duration) {
    let start = Instant::now();
    let mut p = ctx.spawn(name, ctx.btc(args));
    p.expect_success(timeout);
    let el = start.elapsed();
    eprintln!(
        "[{}] {name} finished in {el:?}: {}",
        ctx.name,
        p.stdout().trim()
    );
    (p.stdout(), p.stderr(), el)
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
