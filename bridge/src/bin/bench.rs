//! `mcpgw-bridge-bench`: the bridge side by side with the seeds' stdio proxy
//! (`mcp-streamablehttp-proxy`) and `supergateway`, in one run, with the same trivial echo child
//! (`mcpgw-echo-child`). For each peer: session-open time, calls/s and p50/p99 latency within one
//! session at 1 and 8 concurrent calls, and the peer's own memory per open session (children
//! excluded); direct stdio to the echo child as the floor (overhead = bridge p50 − direct p50);
//! then 1,000 concurrent sessions held by the bridge. Run by `make bench-bridge`.
//!
//! Every peer runs for the whole benchmark and the throughput rows are measured round-robin,
//! several rounds each (`MCPGW_BENCH_ROUNDS`, default 3), every row keeping its median round: a
//! burst of load elsewhere on the machine then skews one round of every row rather than the whole
//! of one row, so the ratios stay fair. The client is one thread (a current-thread runtime) for
//! every peer alike, so it adds no cross-thread hand-off of its own to any of them.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Benchmark options.
#[derive(Debug, Parser)]
#[command(name = "mcpgw-bridge-bench")]
struct Args {
    /// The bridge binary.
    #[arg(long)]
    bridge: PathBuf,
    /// The echo child binary.
    #[arg(long)]
    echo: PathBuf,
    /// The seeds' proxy (`mcp-streamablehttp-proxy`); skipped when absent.
    #[arg(long)]
    seeds_proxy: Option<PathBuf>,
    /// `supergateway`; skipped when absent.
    #[arg(long)]
    supergateway: Option<PathBuf>,
    /// Seconds each throughput measurement runs.
    #[arg(long, env = "MCPGW_BENCH_SECONDS", default_value_t = 2.0)]
    seconds: f64,
    /// Round-robin rounds of the throughput rows; each row reports its median round.
    #[arg(long, env = "MCPGW_BENCH_ROUNDS", default_value_t = 3)]
    rounds: usize,
    /// Sessions opened for the session-open time.
    #[arg(long, default_value_t = 10)]
    opens: usize,
    /// Sessions held open to measure memory per session.
    #[arg(long, default_value_t = 100)]
    memory_sessions: usize,
    /// Concurrent sessions the bridge must hold.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Directory for the peers' logs.
    #[arg(long, default_value = "target/bench-logs")]
    logs: PathBuf,
}

const VERSION: &str = "2025-06-18";
/// The subject and client id every benchmark request carries.
const BENCH_SUBJECT: &str = "oidc:bench";
const BENCH_CLIENT: &str = "bench";
/// Concurrent calls of the two throughput rows.
const CONCURRENCY: [usize; 2] = [1, 8];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Bridge,
    SeedsProxy,
    Supergateway,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Bridge => "mcpgw-bridge",
            Peer::SeedsProxy => "seeds' mcp-streamablehttp-proxy 0.2.0",
            Peer::Supergateway => "supergateway 4 (stateful)",
        }
    }
}

/// One throughput measurement: calls/s, p50 and p99 latency in µs, and the CPU time the peer
/// process itself spent per call (its children excluded), which load elsewhere on the machine
/// moves far less than calls/s.
#[derive(Debug, Default, Clone, Copy)]
struct Measure {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us: f64,
}

/// One peer's figures.
#[derive(Debug, Default, Clone)]
struct Figures {
    open_p50_ms: f64,
    /// The median round at each of [`CONCURRENCY`].
    calls: [Measure; 2],
    mem_per_session_kib: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.logs)?;
    let echo = args.echo.display().to_string();
    let mut peers = vec![(Peer::Bridge, args.bridge.clone())];
    for (peer, bin) in [
        (Peer::SeedsProxy, &args.seeds_proxy),
        (Peer::Supergateway, &args.supergateway),
    ] {
        match bin {
            Some(b) if b.exists() => peers.push((peer, b.clone())),
            _ => println!("(skipping {}: not installed)", peer.name()),
        }
    }
    let mut servers = Vec::new();
    for (peer, bin) in &peers {
        match Server::start(*peer, bin, &echo, &args).await {
            Ok(s) => servers.push(s),
            Err(e) => {
                stop_all(servers).await;
                return Err(e);
            }
        }
    }
    let measured = measure_all(&servers, &args).await;
    stop_all(servers).await;
    let (results, direct) = measured?;
    println!();
    println!(
        "median of {} round-robin rounds of {}s per throughput row",
        args.rounds.max(1),
        args.seconds
    );
    println!(
        "{:<40} {:>9} {:>10} {:>8} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>12}",
        "peer (echo child)",
        "open p50",
        "calls/s c1",
        "p50 c1",
        "p99 c1",
        "cpu c1",
        "calls/s c8",
        "p50 c8",
        "p99 c8",
        "cpu c8",
        "mem/session"
    );
    for (peer, f) in &results {
        let [c1, c8] = f.calls;
        println!(
            "{:<40} {:>7.2}ms {:>10.0} {:>6.0}µs {:>6.0}µs {:>6.0}µs {:>10.0} {:>6.0}µs {:>6.0}µs {:>6.0}µs {:>8.0} KiB",
            peer.name(),
            f.open_p50_ms,
            c1.rate,
            c1.p50_us,
            c1.p99_us,
            c1.cpu_us,
            c8.rate,
            c8.p50_us,
            c8.p99_us,
            c8.cpu_us,
            f.mem_per_session_kib
        );
    }
    println!(
        "{:<40} {:>9} {:>10.0} {:>6.0}µs {:>6.0}µs",
        "direct stdio (no HTTP, floor)", "-", direct.rate, direct.p50_us, direct.p99_us
    );
    println!("(cpu: the peer process's own CPU time per call, its children excluded)");
    println!();
    let bridge = results
        .iter()
        .find(|(p, _)| *p == Peer::Bridge)
        .map(|(_, f)| f.clone())
        .unwrap_or_default();
    for (peer, f) in results.iter().filter(|(p, _)| *p != Peer::Bridge) {
        println!(
            "bridge vs {}: {:.1}x calls/s at c1, {:.1}x at c8, session open {:.0}x faster",
            peer.name(),
            bridge.calls[0].rate / f.calls[0].rate.max(f64::MIN_POSITIVE),
            bridge.calls[1].rate / f.calls[1].rate.max(f64::MIN_POSITIVE),
            f.open_p50_ms / bridge.open_p50_ms.max(f64::MIN_POSITIVE)
        );
    }
    println!(
        "bridge p50 overhead over direct stdio at c1: {:.0} µs (target < 100 µs)",
        bridge.calls[0].p50_us - direct.p50_us
    );
    per_call_rules(bridge.calls[0].rate);
    many_sessions(&args).await
}

/// What the per-user rules add to each call, timed in this process over many calls and set
/// against one call of the bridge at 1 at a time (`rate` calls/s): the session binding (the
/// identity headers read from a request's header map, and the check that the caller owns the
/// session) and the tool-call limiter (one subject's bucket among 1,000).
fn per_call_rules(rate: f64) {
    use mcpgw_bridge::limits::CallLimiter;
    use mcpgw_core::session::SessionOwner;
    const N: u32 = 1_000_000;
    let mut h = hyper::HeaderMap::new();
    for (k, v) in [
        ("host", "127.0.0.1"),
        ("accept", "application/json, text/event-stream"),
        ("content-type", "application/json"),
        ("mcp-protocol-version", VERSION),
        ("mcp-session-id", "0123456789abcdef0123456789abcdef"),
        ("x-mcpgw-subject", BENCH_SUBJECT),
        ("x-mcpgw-client-id", BENCH_CLIENT),
        ("x-mcpgw-user", "bench"),
        ("x-mcpgw-groups", "engineering"),
        ("x-mcpgw-scopes", "mcp:tools"),
    ] {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    let owner = mcpgw_bridge::http::caller(&h)
        .map(|c| SessionOwner::new(&c))
        .ok();
    let t = Instant::now();
    let mut admitted = 0u32;
    for _ in 0..N {
        let h = std::hint::black_box(&h);
        if let (Ok(c), Some(o)) = (mcpgw_bridge::http::caller(h), owner.as_ref()) {
            admitted += u32::from(o.admits(&c));
        }
    }
    let binding_ns = t.elapsed().as_nanos() as f64 / f64::from(N);
    let limiter = CallLimiter::new(u32::MAX);
    let subjects: Vec<String> = (0..1000).map(|i| format!("oidc:user-{i}")).collect();
    let now = Instant::now();
    let t = Instant::now();
    for i in 0..N as usize {
        let _ = std::hint::black_box(limiter.admit(&subjects[i % subjects.len()], now));
    }
    let limiter_ns = t.elapsed().as_nanos() as f64 / f64::from(N);
    let call_ns = 1e9 / rate.max(f64::MIN_POSITIVE);
    println!(
        "session binding (identity headers + owner check): {binding_ns:.0} ns per call = {:.3}% of a bridge call at c1 ({admitted} of {N} admitted)",
        100.0 * binding_ns / call_ns
    );
    println!(
        "tool-call limiter (1,000 subjects' buckets): {limiter_ns:.0} ns per call = {:.3}% of a bridge call at c1",
        100.0 * limiter_ns / call_ns
    );
}

async fn stop_all(servers: Vec<Server>) {
    for s in servers {
        s.stop().await;
    }
}

/// A peer process on a free loopback port.
struct Server {
    peer: Peer,
    proc: Child,
    port: u16,
}

impl Server {
    async fn start(peer: Peer, bin: &PathBuf, echo: &str, args: &Args) -> Result<Server> {
        let port = free_port()?;
        let mut cmd = Command::new(bin);
        match peer {
            Peer::Bridge => {
                let state = args.logs.join(format!("bridge-state-{port}"));
                cmd.args(["--listen", &format!("127.0.0.1:{port}")])
                    .args(["--pool-size", "4", "--max-sessions", "5000"])
                    // One client speaks for one user throughout: the per-user limits would cut
                    // the 1,000 sessions and the calls/s short, so they are lifted (their cost is
                    // measured on its own below), and isolation `session` keeps the warm pool the
                    // other peers' session-open times are compared with.
                    .args(["--isolation", "session", "--max-sessions-per-user", "5000"])
                    .args(["--tool-calls-per-second", "0", "--state-dir"])
                    .arg(state)
                    // The pool initialises children with the revision the clients speak, as an
                    // operator sets it; otherwise every open would start a child cold.
                    .args(["--pool-protocol-version", VERSION])
                    .args(["--", echo])
                    .env("RUST_LOG", "warn");
            }
            Peer::SeedsProxy => {
                cmd.args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--",
                    echo,
                ]);
            }
            Peer::Supergateway => {
                cmd.args(["--stdio", echo])
                    .args(["--outputTransport", "streamableHttp", "--stateful"])
                    .args(["--port", &port.to_string(), "--logLevel", "none"]);
            }
        }
        let log = std::fs::File::create(args.logs.join(format!("{peer:?}.log")))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        let proc = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("{} did not listen on {port}", peer.name());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Server { peer, proc, port })
    }

    fn pid(&self) -> u32 {
        self.proc.id().unwrap_or(0)
    }

    async fn stop(mut self) {
        if let Some(pid) = self.proc.id().and_then(|p| i32::try_from(p).ok()) {
            signal_group(pid, libc::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(5), self.proc.wait())
                .await
                .is_err()
            {
                signal_group(pid, libc::SIGKILL);
                let _ = self.proc.wait().await;
            }
            // Whatever the peer left behind in its group.
            signal_group(pid, libc::SIGKILL);
        }
    }
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill(2) on the process group this program created; no memory is touched.
    #[allow(unsafe_code)] // reason: signalling a process group has no safe std API
    unsafe {
        libc::kill(-pgid, sig);
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    tx: SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(port: u16) -> Result<Conn> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn { tx })
    }

    /// POSTs `msg` to /mcp; returns the session header and the JSON-RPC message answering it
    /// (from a JSON body or the last event of an SSE body).
    async fn post(
        &mut self,
        session: Option<&str>,
        msg: &Value,
    ) -> Result<(Option<String>, Value)> {
        let mut req = hyper::Request::post("/mcp")
            .header("host", "127.0.0.1")
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", VERSION)
            // The identity the gateway sets in front of a bridge (the other peers ignore it).
            .header("x-mcpgw-subject", BENCH_SUBJECT)
            .header("x-mcpgw-client-id", BENCH_CLIENT);
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        let req = req.body(Full::new(Bytes::from(msg.to_string())))?;
        self.tx.ready().await?;
        let resp = self.tx.send_request(req).await?;
        let status = resp.status();
        let sid = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let sse = resp
            .headers()
            .get("content-type")
            .is_some_and(|c| c.as_bytes().starts_with(b"text/event-stream"));
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        if body.is_empty() {
            return Ok((sid, Value::Null));
        }
        let msg = if sse {
            let text = String::from_utf8_lossy(&body);
            let last = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .next_back()
                .unwrap_or("null");
            serde_json::from_str(last.trim())?
        } else {
            serde_json::from_slice(&body)?
        };
        Ok((sid, msg))
    }
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": VERSION, "capabilities": {},
        "clientInfo": {"name": "mcpgw-bridge-bench", "version": "0"}}})
}

fn call(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"n": id}}})
}

/// Opens a session: initialize, then notifications/initialized. Returns the session id.
async fn open_session(port: u16) -> Result<String> {
    let mut c = Conn::open(port).await?;
    let (sid, resp) = c.post(None, &initialize()).await?;
    if resp.get("result").is_none() {
        bail!("initialize failed: {resp}");
    }
    let sid = sid.context("no Mcp-Session-Id in the initialize response")?;
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    c.post(Some(&sid), &done).await?;
    Ok(sid)
}

/// Session-open times, then the throughput rows round-robin (each peer at 1 and 8 concurrent
/// calls, and direct stdio), then memory per session. Returns each peer's figures and the
/// direct-stdio floor.
async fn measure_all(servers: &[Server], args: &Args) -> Result<(Vec<(Peer, Figures)>, Measure)> {
    let mut figures = vec![Figures::default(); servers.len()];
    let mut sessions = Vec::new();
    for (s, f) in servers.iter().zip(&mut figures) {
        f.open_p50_ms = open_time(s, args.opens)
            .await
            .with_context(|| format!("opening sessions on {}", s.peer.name()))?;
        println!(
            "{}: session open p50 {:.2} ms",
            s.peer.name(),
            f.open_p50_ms
        );
        sessions.push(open_session(s.port).await?);
    }
    let mut direct = Direct::start(&args.echo)?;
    let rounds = args.rounds.max(1);
    let mut calls = vec![[const { Vec::new() }, const { Vec::new() }]; servers.len()];
    let mut floor = Vec::new();
    for round in 1..=rounds {
        println!("round {round}/{rounds}");
        for (i, conc) in CONCURRENCY.into_iter().enumerate() {
            for ((s, session), row) in servers.iter().zip(&sessions).zip(&mut calls) {
                let m = throughput(s, session, conc, args.seconds)
                    .await
                    .with_context(|| format!("benchmarking {}", s.peer.name()))?;
                println!("    {:<40} c{conc}: {}", s.peer.name(), show(m));
                row[i].push(m);
            }
        }
        let m = direct.measure(args.seconds).await?;
        println!("    {:<40} c1: {}", "direct stdio", show(m));
        floor.push(m);
    }
    for ((s, f), row) in servers.iter().zip(&mut figures).zip(&mut calls) {
        f.calls = [median(&mut row[0]), median(&mut row[1])];
        f.mem_per_session_kib = memory_per_session(s, args.memory_sessions).await?;
    }
    let peers = servers.iter().map(|s| s.peer).zip(figures).collect();
    Ok((peers, median(&mut floor)))
}

fn show(m: Measure) -> String {
    format!(
        "{:.0} calls/s, p50 {:.0} µs, p99 {:.0} µs, peer CPU {:.0} µs/call",
        m.rate, m.p50_us, m.p99_us, m.cpu_us
    )
}

/// The round with the median rate, so its latencies come from the same round.
fn median(v: &mut [Measure]) -> Measure {
    v.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// p50 of `opens` session opens, spaced out as clients arrive, so a warm pool can refill.
async fn open_time(server: &Server, opens: usize) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..opens {
        let t = Instant::now();
        open_session(server.port).await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(percentile(&mut times, 0.5))
}

/// The peer's growth in resident memory per extra open session.
async fn memory_per_session(server: &Server, n: usize) -> Result<f64> {
    let before = rss_kib(server.pid());
    for _ in 0..n {
        open_session(server.port).await?;
    }
    // Let the peer settle (pool refills, lazy allocations) before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(server.pid());
    println!(
        "{} memory: {before} KiB → {after} KiB with {n} more sessions",
        server.peer.name()
    );
    Ok(after.saturating_sub(before) as f64 / n.max(1) as f64)
}

/// Calls within one session for `seconds`, `conc` at a time (one connection each).
async fn throughput(server: &Server, session: &str, conc: usize, seconds: f64) -> Result<Measure> {
    let port = server.port;
    let cpu_before = cpu_ns(server.pid());
    let ids = Arc::new(AtomicU64::new(1));
    let warm_until = Instant::now() + Duration::from_millis(300);
    let end = warm_until + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let session = session.to_owned();
        let ids = Arc::clone(&ids);
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(port).await?;
            let mut lat = Vec::new();
            loop {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let (_, resp) = c.post(Some(&session), &call(id)).await?;
                if resp.get("id").and_then(Value::as_u64) != Some(id) {
                    bail!("wrong answer: {resp}");
                }
                let now = Instant::now();
                if now >= end {
                    return Ok::<_, anyhow::Error>(lat);
                }
                if now >= warm_until {
                    lat.push((now - t).as_secs_f64() * 1e6);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let calls = ids.load(Ordering::Relaxed).saturating_sub(1).max(1);
    let cpu = cpu_ns(server.pid()).saturating_sub(cpu_before);
    Ok(Measure {
        cpu_us: cpu as f64 / 1e3 / calls as f64,
        ..summarise(all, seconds)
    })
}

/// CPU time the process has run, all its threads (exited ones included) but not its children:
/// utime + stime from `/proc/<pid>/stat`, in clock ticks converted to ns.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    // SAFETY: sysconf(3) reads a constant of the running system; no memory is touched.
    #[allow(unsafe_code)] // reason: the clock-tick rate has no safe std API
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).unwrap_or(100).max(1);
    fields.iter().sum::<u64>() * 1_000_000_000 / hz
}

fn summarise(mut lat: Vec<f64>, seconds: f64) -> Measure {
    Measure {
        rate: lat.len() as f64 / seconds,
        p50_us: percentile(&mut lat, 0.5),
        p99_us: percentile(&mut lat, 0.99),
        cpu_us: 0.0,
    }
}

/// The echo child over its own stdio, one call at a time: the floor every bridge adds to.
struct Direct {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl Direct {
    fn start(echo: &PathBuf) -> Result<Direct> {
        let mut child = Command::new(echo)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        Ok(Direct {
            _child: child,
            stdin,
            stdout,
            next_id: 1,
        })
    }

    async fn measure(&mut self, seconds: f64) -> Result<Measure> {
        let mut line = String::new();
        let mut lat = Vec::new();
        let warm_until = Instant::now() + Duration::from_millis(300);
        let end = warm_until + Duration::from_secs_f64(seconds);
        loop {
            let id = self.next_id;
            self.next_id += 1;
            let t = Instant::now();
            let mut msg = call(id).to_string().into_bytes();
            msg.push(b'\n');
            self.stdin.write_all(&msg).await?;
            line.clear();
            if self.stdout.read_line(&mut line).await? == 0 {
                bail!("the echo child exited");
            }
            let now = Instant::now();
            if now >= end {
                return Ok(summarise(lat, seconds));
            }
            if now >= warm_until {
                lat.push((now - t).as_secs_f64() * 1e6);
            }
        }
    }
}

/// The bridge holds `args.sessions` sessions at once, each with its own child, and every one of
/// them answers a call while all are open.
async fn many_sessions(args: &Args) -> Result<()> {
    let n = args.sessions;
    println!();
    println!("==> {n} concurrent sessions on mcpgw-bridge (one echo child each)");
    let echo = args.echo.display().to_string();
    let server = Server::start(Peer::Bridge, &args.bridge, &echo, args).await?;
    let result = hold_sessions(&server, n).await;
    server.stop().await;
    result
}

async fn hold_sessions(server: &Server, n: usize) -> Result<()> {
    let before = rss_kib(server.pid());
    let t = Instant::now();
    let port = server.port;
    let mut sessions = Vec::with_capacity(n);
    // Open 16 at a time.
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let opening: Vec<_> = chunk
            .iter()
            .map(|_| tokio::spawn(open_session(port)))
            .collect();
        for o in opening {
            sessions.push(o.await??);
        }
    }
    let opened = t.elapsed();
    let t = Instant::now();
    let calls: Vec<_> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut c = Conn::open(port).await?;
                let id = i as u64 + 1;
                let (_, resp) = c.post(Some(&s), &call(id)).await?;
                Ok::<_, anyhow::Error>(resp.get("id").and_then(Value::as_u64) == Some(id))
            })
        })
        .collect();
    let mut ok = 0;
    for c in calls {
        if c.await?? {
            ok += 1;
        }
    }
    let called = t.elapsed();
    let after = rss_kib(server.pid());
    println!(
        "    opened {n} sessions in {:.2} s; one call in each, all at once: {ok}/{n} answered in {:.2} s",
        opened.as_secs_f64(),
        called.as_secs_f64()
    );
    println!(
        "    bridge RSS {before} KiB → {after} KiB: {:.0} KiB per session (children excluded)",
        after.saturating_sub(before) as f64 / n as f64
    );
    if ok != n {
        bail!("only {ok} of {n} sessions answered");
    }
    Ok(())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}
