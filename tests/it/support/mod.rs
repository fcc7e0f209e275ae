//! Test support: a real nats-server per test, on a free port with its own
//! temporary JetStream store, stopped when dropped.

pub mod proc;
pub mod telemetry;

use proprio::bus::{Bus, BusConfig};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    pub port: u16,
    pub url: String,
    pub store: tempfile::TempDir,
    child: Child,
}

/// The project's tools folder (installed by scripts/setup.sh).
pub fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools")
}

pub fn nats_server_bin() -> PathBuf {
    let p = tools_dir().join("bin/nats-server");
    assert!(
        p.exists(),
        "{} missing: run `make setup` (or `make test`)",
        p.display()
    );
    p
}

/// The release or debug proprio binary cargo built for this test run.
pub fn proprio_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_proprio"))
}

/// Runs `cmd` to its end; it must succeed (its stderr shown if not).
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Waits up to 10 s for something to listen on `port`; fails with `what`.
pub fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every field name of the event contract (proto/README.md), for tests
/// that put a value of the wrong type, or any value, in each.
pub const EVENT_FIELDS: &[&str] = &[
    "ts",
    "source",
    "kind",
    "key",
    "event",
    "state",
    "attrs",
    "metrics",
    "message",
    "level",
    "actor",
    "action",
    "target",
    "outcome",
    "phase",
    "request",
    "summary",
    "duration_ms",
    "graph",
    "src",
    "rel",
    "dst",
    "label",
];

impl NatsServer {
    pub fn start() -> NatsServer {
        Self::start_with_args(&[])
    }

    /// Starts nats-server with JetStream; `extra` args are appended (e.g. `--config`).
    pub fn start_with_args(extra: &[&str]) -> NatsServer {
        let store = tempfile::tempdir().unwrap();
        Self::start_in(store, None, extra)
    }

    /// Starts on `port` (or a free one) with the given store directory, so a
    /// test can stop and restart a server on the same store.
    pub fn start_in(store: tempfile::TempDir, port: Option<u16>, extra: &[&str]) -> NatsServer {
        let port = port.unwrap_or_else(free_port);
        let child = Command::new(nats_server_bin())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        let url = format!("nats://127.0.0.1:{port}");
        wait_listening(port, &format!("nats-server did not listen on {port}"));
        NatsServer {
            port,
            url,
            store,
            child,
        }
    }

    /// Stops the server the way an operator would (SIGTERM: it flushes its
    /// store and closes client connections) and hands back its store.
    pub fn terminate(mut self) -> (tempfile::TempDir, u16) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop()
    }

    /// Stops the server and hands back its store, to restart on it.
    pub fn stop(mut self) -> (tempfile::TempDir, u16) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.port;
        let store = std::mem::replace(&mut self.store, tempfile::tempdir().unwrap());
        (store, port)
    }
}

impl NatsServer {
    /// A bus on this server, its streams and buckets not made yet.
    pub async fn connect(&self) -> Bus {
        Bus::connect(&BusConfig::with_url(&self.url)).await.unwrap()
    }

    /// A bus on this server with its streams and buckets made, as a role has.
    pub async fn bus(&self) -> Bus {
        let b = self.connect().await;
        b.ensure().await.unwrap();
        b
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
