//! Reliability-test support: real `proprio run` processes (killed with
//! SIGKILL when asked, or when dropped), their /metrics, JetStream consumer
//! state, and telemetry published with JetStream acks so "published" means
//! "stored".

use super::{free_port, proprio_bin};
use async_nats::jetstream;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn registry() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/services.yaml")
}

/// `proprio run` arguments: `roles` on deploy/services.yaml, a 60-step cold
/// start (a first model within seconds), then `extra`.
pub fn roles_args<'a>(roles: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--roles",
        roles,
        "--registry",
        registry(),
        "--cold-steps",
        "60",
    ];
    v.extend_from_slice(extra);
    v
}

/// One `proprio run` process. Its log goes to a file, printed if a test
/// asks (`log_tail`).
pub struct Proprio {
    child: Option<Child>,
    pub addr: String,
    url: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
    pub starts: u32,
}

impl Proprio {
    /// Starts `proprio run --nats URL <args>` and waits for /readyz.
    pub fn start(url: &str, args: &[&str]) -> Proprio {
        Self::start_env(url, args, &[])
    }

    pub fn start_env(url: &str, args: &[&str], env: &[(&str, &str)]) -> Proprio {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Proprio {
            child: None,
            addr: String::new(),
            url: url.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: dir.path().join("proprio.log"),
            _dir: dir,
            starts: 0,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        self.addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(proprio_bin())
            .args(["--metrics-addr", &self.addr, "run", "--nats", &self.url])
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting proprio");
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(&self.addr, "/readyz").0 != 200 {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("proprio exited ({st}) before ready:\n{}", self.log_tail(40));
            }
            assert!(Instant::now() < deadline, "proprio never ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown path runs, nothing in flight is acked.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A new process with the same arguments (a new metrics port).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    pub fn metrics(&self) -> BTreeMap<String, f64> {
        scrape(&self.addr)
    }

    /// One sample; 0 when absent.
    pub fn metric(&self, key: &str) -> f64 {
        self.metrics().get(key).copied().unwrap_or(0.0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until a metric reaches `min`.
    pub async fn wait_metric(&self, key: &str, min: f64, secs: u64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.metric(key);
            if v >= min {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{key} stayed at {v} < {min}\n{}",
                self.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Proprio {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return (0, String::new());
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// `name{labels}` → value, from a /metrics scrape.
pub fn scrape(addr: &str) -> BTreeMap<String, f64> {
    samples(&http_get(addr, "/metrics").1)
}

/// Sample lines of a Prometheus text exposition as `name{labels}` → value.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// (pending, ack pending, redelivered) of a durable consumer on the telemetry stream.
pub async fn consumer_state(js: &jetstream::Context, name: &str) -> Option<(u64, usize, usize)> {
    let mut c: jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream(name, proprio::contract::STREAM_TELEMETRY)
        .await
        .ok()?;
    let i = c.info().await.ok()?;
    Some((i.num_pending, i.num_ack_pending, i.num_redelivered))
}

/// Waits until every telemetry message is settled (acked or terminated) by
/// the named consumers. Returns the time it took.
pub async fn wait_settled(js: &jetstream::Context, names: &[&str], secs: u64) -> Duration {
    let t0 = Instant::now();
    loop {
        let mut all = true;
        for n in names {
            match consumer_state(js, n).await {
                Some((0, 0, _)) => {}
                _ => all = false,
            }
        }
        if all {
            return t0.elapsed();
        }
        let mut states = Vec::new();
        for n in names {
            states.push((n.to_string(), consumer_state(js, n).await));
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "consumers never settled: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Publishes `(subject, payload, id)` with JetStream acks, `window` in
/// flight; a message whose publish or ack fails is sent again with the same
/// `Nats-Msg-Id` (the stream drops the copy) until stored. Returns how many
/// publishes had to be retried.
pub async fn publish_all(
    js: &jetstream::Context,
    msgs: impl IntoIterator<Item = (String, Vec<u8>, String)>,
    window: usize,
) -> u64 {
    let mut retries = 0u64;
    let msgs: Vec<_> = msgs.into_iter().collect();
    for chunk in msgs.chunks(window.max(1)) {
        let mut todo: Vec<&(String, Vec<u8>, String)> = chunk.iter().collect();
        let t0 = Instant::now();
        while !todo.is_empty() {
            let mut acks = Vec::with_capacity(todo.len());
            for m in &todo {
                let p = jetstream::message::PublishMessage::build()
                    .payload(m.1.clone().into())
                    .message_id(m.2.as_str());
                // Bounded: while the server is away a publish may wait.
                let sent = tokio::time::timeout(
                    Duration::from_millis(500),
                    js.send_publish(m.0.clone(), p),
                )
                .await;
                acks.push(sent.ok().and_then(|r| r.ok()));
            }
            // Acks awaited together: lost in an outage, they time out
            // together rather than one after another.
            let oks = futures::future::join_all(acks.into_iter().map(|a| async move {
                match a {
                    Some(fut) => tokio::time::timeout(Duration::from_secs(5), fut)
                        .await
                        .is_ok_and(|r| r.is_ok()),
                    None => false,
                }
            }))
            .await;
            let mut again = Vec::new();
            for (m, ok) in todo.into_iter().zip(oks) {
                if !ok {
                    again.push(m);
                }
            }
            if !again.is_empty() {
                retries += again.len() as u64;
                assert!(
                    t0.elapsed() < Duration::from_secs(120),
                    "publishing never succeeded"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            todo = again;
        }
    }
    retries
}

/// Normal telemetry for a first model: `rounds` of a pulse, a log line and a
/// flux heartbeat from each of `sources`, as raw JSON.
pub fn normal(sources: usize, rounds: usize, t0: i64) -> Vec<(String, Vec<u8>, String)> {
    let mut v = Vec::new();
    for i in 0..rounds {
        for s in 0..sources {
            let ts = t0 + (i as i64) * 1000 + s as i64;
            let cpu = 20 + ((i * 7 + s * 3) % 5);
            v.push((
                format!("os.pulse.svc{s}"),
                format!(r#"{{"ts":{ts},"metrics":{{"cpu":{cpu},"mem_mb":512}}}}"#).into_bytes(),
                format!("n-p-{s}-{i}"),
            ));
            v.push((
                format!("os.log.svc{s}"),
                format!(
                    r#"{{"ts":{},"level":"info","message":"GET /health 200 in {}ms"}}"#,
                    ts + 1,
                    3 + (i % 4)
                )
                .into_bytes(),
                format!("n-l-{s}-{i}"),
            ));
            v.push((
                format!("os.flux.svc{s}.heartbeat"),
                format!(r#"{{"ts":{},"state":"healthy"}}"#, ts + 2).into_bytes(),
                format!("n-f-{s}-{i}"),
            ));
        }
    }
    v
}

/// Trains a first model through a running proprio (harvester, scorer and
/// trainer roles): `msgs` (normal telemetry), one tick, the scorer's swap.
pub async fn train_first_model(
    p: &Proprio,
    js: &jetstream::Context,
    client: &async_nats::Client,
    msgs: Vec<(String, Vec<u8>, String)>,
) {
    publish_all(js, msgs, 512).await;
    wait_settled(js, &[proprio::contract::CONSUMER_HARVESTER], 60).await;
    client
        .publish(proprio::contract::SUBJECT_TICK_TRAIN, "{}".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    p.wait_metric(r#"proprio_growth_cycles_total{outcome="ok"}"#, 1.0, 120)
        .await;
    p.wait_metric("proprio_model_swaps_total", 1.0, 30).await;
}

/// The telemetry stream's state now (messages, bytes, last sequence).
pub async fn telemetry_state(js: &jetstream::Context) -> jetstream::stream::State {
    js.get_stream(proprio::contract::STREAM_TELEMETRY)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .clone()
}

/// Every message of a stream on `filter`, handed to `f` with its headers.
pub async fn scan(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
    mut f: impl FnMut(&async_nats::Message),
) -> u64 {
    use futures::StreamExt;
    let mut s = js.get_stream(stream).await.unwrap();
    let last = s.info().await.unwrap().state.last_sequence;
    let c = s
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    if c.cached_info().num_pending == 0 {
        return 0;
    }
    let mut msgs = c.messages().await.unwrap();
    let mut n = 0;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), msgs.next()).await {
        let info = m.info().unwrap();
        let (seq, pending) = (info.stream_sequence, info.pending);
        f(&m.message);
        n += 1;
        if pending == 0 || seq >= last {
            break;
        }
    }
    n
}
