//! `mcpgw-bridge-bench`: the bridge side by side with the seeds' stdio proxy
//! (`mcp-streamablehttp-proxy`) and `supergateway`, in one run, with the same trivial echo child
//! (`mcpgw-echo-child`). For each peer: session-open time, calls/s and p50/p99 latency within one
//! session at 1 and 8 concurrent calls, and the peer's own memory per open session (children
//! excluded). Then direct stdio to the echo child as the floor (overhead = bridge p50 − direct
//! p50), and 1,000 concurrent sessions held by the bridge. Run by `make bench-bridge`.

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
use tokio::process::{Child, Command};

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
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
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

/// One peer's figures.
#[derive(Debug, Default, Clone)]
struct Figures {
    open_p50_ms: f64,
    rate: [f64; 2],
    p50_us: [f64; 2],
    p99_us: [f64; 2],
    mem_per_session_kib: f64,
}

#[tokio::main]
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
    let mut results = Vec::new();
    for (peer, bin) in &peers {
        println!("==> {}", peer.name());
        let server = Server::start(*peer, bin, &echo, &args).await?;
        let figures = measure(&server, &args).await;
        server.stop().await;
        let figures = figures.with_context(|| format!("benchmarking {}", peer.name()))?;
        results.push((*peer, figures));
    }
    let direct = direct_stdio(&args.echo, args.seconds).await?;
    println!();
    println!(
        "{:<40} {:>9} {:>10} {:>8} {:>8} {:>10} {:>8} {:>8} {:>12}",
        "peer (echo child)",
        "open p50",
        "calls/s c1",
        "p50 c1",
        "p99 c1",
        "calls/s c8",
        "p50 c8",
        "p99 c8",
        "mem/session"
    );
    for (peer, f) in &results {
        println!(
            "{:<40} {:>7.2}ms {:>10.0} {:>6.0}µs {:>6.0}µs {:>10.0} {:>6.0}µs {:>6.0}µs {:>8.0} KiB",
            peer.name(),
            f.open_p50_ms,
            f.rate[0],
            f.p50_us[0],
            f.p99_us[0],
            f.rate[1],
            f.p50_us[1],
            f.p99_us[1],
            f.mem_per_session_kib
        );
    }
    println!(
        "{:<40} {:>9} {:>10.0} {:>6.0}µs {:>6.0}µs",
        "direct stdio (no HTTP, floor)", "-", direct.0, direct.1, direct.2
    );
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
            bridge.rate[0] / f.rate[0].max(f64::MIN_POSITIVE),
            bridge.rate[1] / f.rate[1].max(f64::MIN_POSITIVE),
            f.open_p50_ms / bridge.open_p50_ms.max(f64::MIN_POSITIVE)
        );
    }
    println!(
        "bridge p50 overhead over direct stdio at c1: {:.0} µs (target < 100 µs)",
        bridge.p50_us[0] - direct.1
    );
    many_sessions(&args).await
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
                cmd.args(["--listen", &format!("127.0.0.1:{port}")])
                    .args(["--pool-size", "4", "--max-sessions", "5000"])
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
            .header("mcp-protocol-version", VERSION);
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

async fn measure(server: &Server, args: &Args) -> Result<Figures> {
    let mut f = Figures::default();
    // Session open: spaced out, as clients arrive, so a warm pool can refill between them.
    let mut opens = Vec::new();
    for _ in 0..args.opens {
        let t = Instant::now();
        open_session(server.port).await?;
        opens.push(t.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f.open_p50_ms = percentile(&mut opens, 0.5);
    println!("    session open p50 {:.2} ms", f.open_p50_ms);
    let session = open_session(server.port).await?;
    for (i, conc) in [1usize, 8].into_iter().enumerate() {
        let (rate, p50, p99) = throughput(server.port, &session, conc, args.seconds).await?;
        println!("    c{conc}: {rate:.0} calls/s, p50 {p50:.0} µs, p99 {p99:.0} µs");
        f.rate[i] = rate;
        f.p50_us[i] = p50;
        f.p99_us[i] = p99;
    }
    let before = rss_kib(server.pid());
    for _ in 0..args.memory_sessions {
        open_session(server.port).await?;
    }
    // Let the peer settle (pool refills, lazy allocations) before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(server.pid());
    f.mem_per_session_kib = after.saturating_sub(before) as f64 / args.memory_sessions as f64;
    println!(
        "    {} memory: {before} KiB → {after} KiB with {} more sessions",
        server.peer.name(),
        args.memory_sessions
    );
    Ok(f)
}

/// Calls within one session for `seconds`, `conc` at a time (one connection each).
async fn throughput(
    port: u16,
    session: &str,
    conc: usize,
    seconds: f64,
) -> Result<(f64, f64, f64)> {
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
    let rate = all.len() as f64 / seconds;
    Ok((rate, percentile(&mut all, 0.5), percentile(&mut all, 0.99)))
}

/// The echo child over its own stdio, one call at a time: the floor every bridge adds to.
async fn direct_stdio(echo: &PathBuf, seconds: f64) -> Result<(f64, f64, f64)> {
    let mut child = Command::new(echo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    let mut lat = Vec::new();
    let warm_until = Instant::now() + Duration::from_millis(300);
    let end = warm_until + Duration::from_secs_f64(seconds);
    for id in 1u64.. {
        let t = Instant::now();
        let mut msg = call(id).to_string().into_bytes();
        msg.push(b'\n');
        stdin.write_all(&msg).await?;
        stdin.flush().await?;
        line.clear();
        stdout.read_line(&mut line).await?;
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= warm_until {
            lat.push((now - t).as_secs_f64() * 1e6);
        }
    }
    let rate = lat.len() as f64 / seconds;
    Ok((rate, percentile(&mut lat, 0.5), percentile(&mut lat, 0.99)))
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
