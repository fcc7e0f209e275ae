//! Prometheus metrics and the small HTTP endpoint that serves them:
//! `/metrics` (text exposition), `/healthz` (the process is alive) and
//! `/readyz` (roles started and NATS connected).
//!
//! Naming follows Prometheus: a `proprio_` prefix, counters end in
//! `_total`, durations are in seconds, and labels are low-cardinality
//! (`kind`, `curriculum`, `reason`, `step`, `role`, `consumer`): never a
//! source name, which is unbounded.
//!
//! Two kinds of metrics live here:
//! - the counters the roles already keep as atomics ([`ScorerStats`],
//!   [`HarvestStats`], ...) are read at scrape time by a collector, so the
//!   hot paths pay nothing more for them;
//! - distributions and states no counter holds (event loss, scoring time,
//!   batch size, growth-loop step durations, the model in service, consumer
//!   lag) are recorded where they happen, on [`global`].

use crate::bus::Bus;
use crate::contract::{CONSUMER_HARVESTER, CONSUMER_SCORER, STREAM_TELEMETRY};
use crate::event::Reason;
use crate::harvester::HarvestStats;
use crate::scorer::role::ScorerStats;
use crate::silence::SilenceStats;
use crate::trainer::cycle::TrainerStats;
use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    exponential_buckets, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The metrics recorded where things happen.
pub struct Metrics {
    pub registry: Registry,
    /// Per-token loss of each scored event (nats), by kind.
    pub event_loss: HistogramVec,
    /// Score of each scored event, by kind.
    pub event_score: HistogramVec,
    /// One forward pass of a scoring batch.
    pub scoring_seconds: Histogram,
    /// Events per scoring batch.
    pub batch_size: Histogram,
    /// Documents published on the curriculum stream, by curriculum.
    pub curriculum_documents: IntCounterVec,
    /// Messages of a consumer not yet delivered, and delivered but unacked.
    pub consumer_pending: IntGaugeVec,
    pub consumer_ack_pending: IntGaugeVec,
    /// Seconds between JetStream storing an event and the scorer taking it
    /// (the last event of the last batch).
    pub scorer_lag_seconds: Gauge,
    /// 1 for the model version in service.
    pub model_info: IntGaugeVec,
    /// When the model in service was trained (unix seconds).
    pub model_trained: Gauge,
    /// Losses of the last published model: train, validation, heldout.
    pub training_loss: GaugeVec,
    pub growth_step_seconds: HistogramVec,
    pub growth_steps: IntCounterVec,
    pub log_suppressed: IntCounterVec,
    stats: Arc<StatsCollector>,
}

static GLOBAL: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn global() -> &'static Metrics {
    GLOBAL.get_or_init(|| Metrics::new().expect("metric definitions are valid"))
}

fn hist(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(buckets)
}

impl Metrics {
    fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new("proprio_build_info", "proprio's build; the value is 1"),
            &["version", "tokens"],
        )?;
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), &tokens_hash()])
            .set(1);
        registry.register(Box::new(build))?;
        let m = Metrics {
            event_loss: HistogramVec::new(
                hist(
                    "proprio_event_loss",
                    "Per-token loss (nats) the model assigned to each scored event",
                    vec![0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0],
                ),
                &["kind"],
            )?,
            event_score: HistogramVec::new(
                hist(
                    "proprio_event_score",
                    "Anomaly score of each scored event (robust z of its loss)",
                    vec![-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0, 20.0],
                ),
                &["kind"],
            )?,
            scoring_seconds: Histogram::with_opts(hist(
                "proprio_scoring_duration_seconds",
                "Time to score one batch (forward pass)",
                exponential_buckets(0.0005, 2.0, 14)?,
            ))?,
            batch_size: Histogram::with_opts(hist(
                "proprio_scoring_batch_size",
                "Events per scoring batch",
                exponential_buckets(1.0, 2.0, 10)?,
            ))?,
            curriculum_documents: IntCounterVec::new(
                Opts::new(
                    "proprio_curriculum_documents_total",
                    "Documents the harvester published on the curriculum stream",
                ),
                &["curriculum"],
            )?,
            consumer_pending: IntGaugeVec::new(
                Opts::new(
                    "proprio_consumer_pending_messages",
                    "Messages of the telemetry stream a durable consumer has not yet been delivered (its lag)",
                ),
                &["consumer"],
            )?,
            consumer_ack_pending: IntGaugeVec::new(
                Opts::new(
                    "proprio_consumer_ack_pending_messages",
                    "Messages delivered to a durable consumer and not yet acknowledged",
                ),
                &["consumer"],
            )?,
            scorer_lag_seconds: Gauge::new(
                "proprio_scorer_lag_seconds",
                "Age of the newest scored event when the scorer took it (since JetStream stored it)",
            )?,
            model_info: IntGaugeVec::new(
                Opts::new("proprio_model_info", "The model version in service; the value is 1"),
                &["version"],
            )?,
            model_trained: Gauge::new(
                "proprio_model_trained_timestamp_seconds",
                "When the model in service was trained (unix time)",
            )?,
            training_loss: GaugeVec::new(
                Opts::new(
                    "proprio_training_loss",
                    "Loss (nats per token) of the last published model, by split",
                ),
                &["split"],
            )?,
            growth_step_seconds: HistogramVec::new(
                hist(
                    "proprio_growth_step_duration_seconds",
                    "Duration of each growth-loop step",
                    exponential_buckets(0.01, 2.0, 16)?,
                ),
                &["step"],
            )?,
            growth_steps: IntCounterVec::new(
                Opts::new("proprio_growth_steps_total", "Growth-loop steps run, by outcome"),
                &["step", "outcome"],
            )?,
            log_suppressed: IntCounterVec::new(
                Opts::new(
                    "proprio_log_messages_suppressed_total",
                    "Repeated warning and error log lines suppressed by the rate limit",
                ),
                &["level"],
            )?,
            stats: Arc::new(StatsCollector::new()?),
            registry,
        };
        for c in [
            Box::new(m.event_loss.clone()) as Box<dyn Collector>,
            Box::new(m.event_score.clone()),
            Box::new(m.scoring_seconds.clone()),
            Box::new(m.batch_size.clone()),
            Box::new(m.curriculum_documents.clone()),
            Box::new(m.consumer_pending.clone()),
            Box::new(m.consumer_ack_pending.clone()),
            Box::new(m.scorer_lag_seconds.clone()),
            Box::new(m.model_info.clone()),
            Box::new(m.model_trained.clone()),
            Box::new(m.training_loss.clone()),
            Box::new(m.growth_step_seconds.clone()),
            Box::new(m.growth_steps.clone()),
            Box::new(m.log_suppressed.clone()),
            Box::new(SharedStats(m.stats.clone())),
        ] {
            m.registry.register(c)?;
        }
        Ok(m)
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Exposes the counters of the roles that have started.
    pub fn watch(&self, sources: StatsSources) {
        if let Ok(mut s) = self.stats.sources.lock() {
            *s = sources;
        }
    }

    /// The model now in service.
    pub fn set_model(&self, version: &str, trained_at_ms: i64) {
        self.model_info.reset();
        self.model_info.with_label_values(&[version]).set(1);
        if trained_at_ms > 0 {
            self.model_trained.set(trained_at_ms as f64 / 1000.0);
        }
    }

    /// One growth-loop step: its duration and outcome.
    pub fn growth_step(&self, step: &str, elapsed: Duration, ok: bool) {
        self.growth_step_seconds
            .with_label_values(&[step])
            .observe(elapsed.as_secs_f64());
        self.growth_steps
            .with_label_values(&[step, if ok { "ok" } else { "failed" }])
            .inc();
    }
}

/// Hash of the special-token list, so a dashboard can tell builds whose
/// checkpoints are incompatible.
fn tokens_hash() -> String {
    use sha2::{Digest, Sha256};
    let list = include_str!("../proto/tokens.txt");
    hex::encode(&Sha256::digest(list.as_bytes())[..6])
}

/// The roles' own counters, read at scrape time.
#[derive(Default, Clone)]
pub struct StatsSources {
    pub scorer: Option<Arc<ScorerStats>>,
    pub harvester: Option<Arc<HarvestStats>>,
    pub trainer: Option<Arc<TrainerStats>>,
    pub silence: Option<Arc<SilenceStats>>,
}

/// A counter family built fresh at each scrape from the atomics.
struct Family {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    template: IntCounterVec,
}

struct StatsCollector {
    sources: Mutex<StatsSources>,
    families: Vec<Family>,
    tracked: prometheus::IntGauge,
}

struct SharedStats(Arc<StatsCollector>);

const TRACKED: (&str, &str) = (
    "proprio_silence_sources_tracked",
    "Sources whose rhythm the silence watch knows",
);

const FAMILIES: &[(&str, &str, &[&str])] = &[
    (
        "proprio_events_received_total",
        "Telemetry messages delivered to a role (a redelivery counts again)",
        &["role"],
    ),
    (
        "proprio_events_rejected_total",
        "Telemetry refused by validation and dead-lettered, by reason",
        &["reason"],
    ),
    (
        "proprio_events_dropped_total",
        "Valid telemetry the harvester left out of the curriculum on purpose, by reason",
        &["reason"],
    ),
    (
        "proprio_events_harvested_total",
        "Documents published on the curriculum stream",
        &[],
    ),
    (
        "proprio_harvest_failures_total",
        "Curriculum or dead-letter publishes that failed (the message is redelivered)",
        &[],
    ),
    (
        "proprio_events_scored_total",
        "Events scored by the model",
        &[],
    ),
    (
        "proprio_events_unscored_total",
        "Events the scorer did not score, by reason (warming: no model yet; invalid; shed: older than scorer.max_lag)",
        &["reason"],
    ),
    (
        "proprio_scoring_batches_total",
        "Scoring batches (forward passes)",
        &[],
    ),
    (
        "proprio_alerts_published_total",
        "Alerts stored on the alerts stream, by reason (surprise, silence)",
        &["reason"],
    ),
    (
        "proprio_alerts_suppressed_total",
        "Alerts not published, by reason (cooldown, muted, duplicate)",
        &["reason"],
    ),
    (
        "proprio_model_swaps_total",
        "Models the scorer switched to",
        &[],
    ),
    (
        "proprio_growth_cycles_total",
        "Growth-loop cycles, by outcome (ok, failed, skipped: another trainer held the lock)",
        &["outcome"],
    ),
    ("proprio_digests_published_total", "Digests published", &[]),
    (
        "proprio_silence_observations_total",
        "Telemetry arrivals the silence watch learned from",
        &[],
    ),
];

impl StatsCollector {
    fn new() -> prometheus::Result<StatsCollector> {
        let mut families = Vec::new();
        for (name, help, labels) in FAMILIES {
            families.push(Family {
                name,
                help,
                labels,
                template: IntCounterVec::new(Opts::new(*name, *help), labels)?,
            });
        }
        Ok(StatsCollector {
            sources: Mutex::new(StatsSources::default()),
            families,
            tracked: prometheus::IntGauge::new(TRACKED.0, TRACKED.1)?,
        })
    }

    fn values(&self, s: &StatsSources) -> Vec<(&'static str, Vec<&'static str>, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut v: Vec<(&'static str, Vec<&'static str>, u64)> = Vec::new();
        if let Some(h) = &s.harvester {
            v.push((
                "proprio_events_received_total",
                vec!["harvester"],
                g(&h.received),
            ));
            for r in Reason::ALL {
                v.push((
                    "proprio_events_rejected_total",
                    vec![r.as_str()],
                    h.rejected(r),
                ));
            }
            v.push((
                "proprio_events_dropped_total",
                vec!["sampled_out"],
                g(&h.sampled_out),
            ));
            v.push((
                "proprio_events_dropped_total",
                vec!["collapsed"],
                g(&h.collapsed),
            ));
            v.push(("proprio_events_harvested_total", vec![], g(&h.harvested)));
            v.push(("proprio_harvest_failures_total", vec![], g(&h.failed)));
        }
        if let Some(sc) = &s.scorer {
            let received = g(&sc.scored) + g(&sc.warming) + g(&sc.invalid) + g(&sc.shed);
            v.push(("proprio_events_received_total", vec!["scorer"], received));
            v.push(("proprio_events_scored_total", vec![], g(&sc.scored)));
            v.push((
                "proprio_events_unscored_total",
                vec!["warming"],
                g(&sc.warming),
            ));
            v.push((
                "proprio_events_unscored_total",
                vec!["invalid"],
                g(&sc.invalid),
            ));
            v.push(("proprio_events_unscored_total", vec!["shed"], g(&sc.shed)));
            v.push(("proprio_scoring_batches_total", vec![], g(&sc.batches)));
            v.push((
                "proprio_alerts_published_total",
                vec!["surprise"],
                g(&sc.alerts),
            ));
            v.push((
                "proprio_alerts_suppressed_total",
                vec!["cooldown"],
                g(&sc.cooled_down),
            ));
            v.push((
                "proprio_alerts_suppressed_total",
                vec!["duplicate"],
                g(&sc.duplicate_alerts),
            ));
            v.push(("proprio_model_swaps_total", vec![], g(&sc.swaps)));
        }
        let muted = s.scorer.as_ref().map_or(0, |x| g(&x.muted))
            + s.silence.as_ref().map_or(0, |x| g(&x.muted));
        if s.scorer.is_some() || s.silence.is_some() {
            v.push(("proprio_alerts_suppressed_total", vec!["muted"], muted));
        }
        if let Some(t) = &s.trainer {
            v.push(("proprio_growth_cycles_total", vec!["ok"], g(&t.cycles)));
            v.push(("proprio_growth_cycles_total", vec!["failed"], g(&t.failed)));
            v.push((
                "proprio_growth_cycles_total",
                vec!["skipped"],
                g(&t.skipped),
            ));
            v.push(("proprio_digests_published_total", vec![], g(&t.digests)));
        }
        if let Some(si) = &s.silence {
            v.push((
                "proprio_alerts_published_total",
                vec!["silence"],
                g(&si.alerts),
            ));
            v.push((
                "proprio_silence_observations_total",
                vec![],
                g(&si.observed),
            ));
        }
        v
    }
}

impl Collector for SharedStats {
    fn desc(&self) -> Vec<&Desc> {
        let mut d: Vec<&Desc> = self
            .0
            .families
            .iter()
            .flat_map(|f| f.template.desc())
            .collect();
        d.extend(self.0.tracked.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let sources = match self.0.sources.lock() {
            Ok(s) => s.clone(),
            Err(_) => return Vec::new(),
        };
        let values = self.0.values(&sources);
        let mut out = Vec::new();
        for f in &self.0.families {
            let Ok(vec) = IntCounterVec::new(Opts::new(f.name, f.help), f.labels) else {
                continue;
            };
            let mut any = false;
            for (_, labels, n) in values.iter().filter(|(name, _, _)| *name == f.name) {
                vec.with_label_values(labels).inc_by(*n);
                any = true;
            }
            if any {
                out.extend(vec.collect());
            }
        }
        if let Some(si) = &sources.silence {
            if let Ok(g) = prometheus::IntGauge::new(TRACKED.0, TRACKED.1) {
                g.set(si.tracked.load(Ordering::Relaxed) as i64);
                out.extend(g.collect());
            }
        }
        out
    }
}

// ---- consumer lag ----

/// Polls the durable consumers' pending counts every `every` until `stop`.
/// Consumer lag is the server's to know; asking is cheap and keeps the
/// gauge true even for a consumer whose role runs in another process.
pub async fn poll_consumers(
    bus: Bus,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let m = global();
    let mut iv = tokio::time::interval(every);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = iv.tick() => {}
        }
        let Ok(stream) = bus.js().get_stream(STREAM_TELEMETRY).await else {
            continue;
        };
        for name in [CONSUMER_SCORER, CONSUMER_HARVESTER] {
            if let Ok(info) = stream.consumer_info(name).await {
                m.consumer_pending
                    .with_label_values(&[name])
                    .set(info.num_pending as i64);
                m.consumer_ack_pending
                    .with_label_values(&[name])
                    .set(info.num_ack_pending as i64);
            }
        }
    }
}

// ---- health ----

/// What /readyz answers from: set once the roles run.
#[derive(Default)]
pub struct Health {
    client: Mutex<Option<async_nats::Client>>,
}

static HEALTH: OnceLock<Health> = OnceLock::new();

pub fn health() -> &'static Health {
    HEALTH.get_or_init(Health::default)
}

impl Health {
    /// The roles are running on `client`'s connection.
    pub fn set_ready(&self, client: async_nats::Client) {
        if let Ok(mut c) = self.client.lock() {
            *c = Some(client);
        }
    }

    pub fn set_not_ready(&self) {
        if let Ok(mut c) = self.client.lock() {
            *c = None;
        }
    }

    /// Ok when ready, else why not.
    pub fn readiness(&self) -> std::result::Result<(), String> {
        let c = self.client.lock().map_err(|_| "poisoned".to_string())?;
        match c.as_ref().map(|c| c.connection_state()) {
            None => Err("roles not started".into()),
            Some(async_nats::connection::State::Connected) => Ok(()),
            Some(s) => Err(format!("NATS connection {s:?}")),
        }
    }
}

// ---- the HTTP endpoint ----

/// The running endpoint; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves /metrics, /healthz and /readyz on `addr` (port 0: any free one;
/// see [`Server::addr`]). Failing to listen is a start-up error.
pub async fn serve(addr: SocketAddr) -> Result<Server> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics.addr {addr}: cannot listen"))?;
    let addr = listener.local_addr()?;
    global();
    tracing::info!(%addr, "metrics: serving /metrics /healthz /readyz");
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(io, hyper::service::service_fn(handle))
                    .await;
            });
        }
    });
    Ok(Server { addr, task })
}

async fn handle<B>(
    req: Request<B>,
) -> std::result::Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |code: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    let text = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "GET only\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            global().render(),
        ),
        "/healthz" => reply(StatusCode::OK, text, "ok\n".into()),
        "/readyz" => match health().readiness() {
            Ok(()) => reply(StatusCode::OK, text, "ready\n".into()),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                text,
                format!("not ready: {why}\n"),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            text,
            "not found (try /metrics, /healthz, /readyz)\n".into(),
        ),
    })
}

/// A plain HTTP GET of `path` on `addr`; Ok with the body on a 2xx. For
/// container health checks (`proprio health`), where no curl is installed.
pub fn probe(addr: &str, path: &str, timeout: Duration) -> Result<String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let sa = addr
        .to_socket_addrs()
        .with_context(|| format!("{addr}: not an address"))?
        .next()
        .with_context(|| format!("{addr}: no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).context("reading the answer")?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') {
        Ok(body.to_string())
    } else {
        anyhow::bail!("{path}: HTTP {status}: {}", body.trim())
    }
}

/// `proprio health`: exits non-zero unless /readyz (or `path`) answers 2xx.
#[derive(clap::Args, Debug, Clone)]
pub struct HealthArgs {
    /// Where the metrics endpoint listens.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub addr: String,
    /// Which endpoint to ask.
    #[arg(long, default_value = "/readyz")]
    pub path: String,
}

pub fn health_command(a: &HealthArgs) -> Result<()> {
    let body = probe(&a.addr, &a.path, Duration::from_secs(3))?;
    print!("{body}");
    Ok(())
}
