//! Prometheus metrics: the registry every role records into, handed to it
//! in its context (module `context`); the module `endpoint` serves it.
//!
//! Naming follows Prometheus: a `proprio_` prefix, counters end in
//! `_total`, durations are in seconds, and labels are low-cardinality
//! (`kind`, `curriculum`, `reason`, `step`, `role`, `consumer`): never a
//! source name, which is unbounded.
//!
//! Two kinds of metrics live here:
//! - the counters the roles already keep as atomics are read at scrape time
//!   (each role registers a [`ReadAtScrape`] that reports them), so the hot
//!   paths pay nothing more for them;
//! - distributions and states no counter holds (event loss, scoring time,
//!   batch size, growth-loop step durations, the model in service, consumer
//!   lag) are recorded where they happen, on [`Metrics`]' fields.

use crate::bus::Bus;
use crate::contract::{
    CONSUMER_HARVESTER, CONSUMER_INCIDENTS, CONSUMER_SCORER, STREAM_ALERTS, STREAM_TELEMETRY,
};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    exponential_buckets, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::{Arc, Mutex};
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
    /// Alerts per incident, observed when it resolves.
    pub incident_alerts: Histogram,
    scraped: Arc<Scraped>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new().expect("metric definitions are valid")
    }
}

fn hist(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(buckets)
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new("proprio_build_info", "proprio's build; the value is 1"),
            &["version", "tokens"],
        )?;
        build
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                &crate::tokenizer::token_list_hash(),
            ])
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
                    "Messages of its stream (telemetry; alerts for proprio-incidents) a durable consumer has not yet been delivered (its lag)",
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
            incident_alerts: Histogram::with_opts(hist(
                "proprio_incident_alerts",
                "Alerts grouped into each resolved incident",
                exponential_buckets(1.0, 2.0, 12)?,
            ))?,
            scraped: Arc::default(),
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
            Box::new(m.incident_alerts.clone()),
            Box::new(ScrapedCollector(m.scraped.clone())),
        ] {
            m.registry.register(c)?;
        }
        m.read_at_scrape(Arc::new(LogSuppressed));
        Ok(m)
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// New counters of a role, read at every scrape from now on.
    pub fn counters<T: ReadAtScrape + Default + 'static>(&self) -> Arc<T> {
        let c = Arc::new(T::default());
        self.read_at_scrape(c.clone());
        c
    }

    /// Reads `source`'s counters at every scrape from now on.
    pub fn read_at_scrape(&self, source: Arc<dyn ReadAtScrape>) {
        if let Ok(mut s) = self.scraped.sources.lock() {
            s.push(source);
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

/// A family of values a role keeps itself (atomics) and reports at scrape
/// time. Several sources may report the same series: their values add up.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    /// A gauge; otherwise a counter.
    pub gauge: bool,
}

impl Family {
    pub const fn counter(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Family {
        Family {
            name,
            help,
            labels,
            gauge: false,
        }
    }
}

/// The families more than one role reports into.
pub static EVENTS_RECEIVED: Family = Family::counter(
    "proprio_events_received_total",
    "Telemetry messages delivered to a role (a redelivery counts again)",
    &["role"],
);
pub static ALERTS_PUBLISHED: Family = Family::counter(
    "proprio_alerts_published_total",
    "Alerts stored on the alerts stream, by reason (surprise, silence)",
    &["reason"],
);
pub static ALERTS_SUPPRESSED: Family = Family::counter(
    "proprio_alerts_suppressed_total",
    "Alerts not published, by reason (cooldown, muted, duplicate)",
    &["reason"],
);

/// The values one scrape collects.
#[derive(Default)]
pub struct Report {
    values: Vec<(&'static Family, Vec<&'static str>, u64)>,
}

impl Report {
    /// `family{labels} = value`.
    pub fn add(&mut self, family: &'static Family, labels: &[&'static str], value: u64) {
        self.values.push((family, labels.to_vec(), value));
    }
}

/// What a role registers to have its counters read at each scrape.
pub trait ReadAtScrape: Send + Sync {
    fn report(&self, out: &mut Report);
}

static LOG_SUPPRESSED: Family = Family::counter(
    "proprio_log_messages_suppressed_total",
    "Repeated warning and error log lines suppressed by the rate limit",
    &["level"],
);

/// The log rate limit's count (the limit is the subscriber's, process-wide).
struct LogSuppressed;

impl ReadAtScrape for LogSuppressed {
    fn report(&self, out: &mut Report) {
        for (level, n) in crate::logging::suppressed() {
            out.add(&LOG_SUPPRESSED, &[level], n);
        }
    }
}

#[derive(Default)]
struct Scraped {
    sources: Mutex<Vec<Arc<dyn ReadAtScrape>>>,
}

struct ScrapedCollector(Arc<Scraped>);

impl Collector for ScrapedCollector {
    /// None: the families are known only once the roles register, and the
    /// registry only needs descriptions to refuse duplicates.
    fn desc(&self) -> Vec<&Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut report = Report::default();
        match self.0.sources.lock() {
            Ok(sources) => sources.iter().for_each(|s| s.report(&mut report)),
            Err(_) => return Vec::new(),
        }
        let mut names: Vec<&'static str> = Vec::new();
        for (f, _, _) in &report.values {
            if !names.contains(&f.name) {
                names.push(f.name);
            }
        }
        let mut out = Vec::new();
        for name in names {
            let values = report.values.iter().filter(|(f, _, _)| f.name == name);
            let Some((f, _, _)) = values.clone().next() else {
                continue;
            };
            let opts = Opts::new(f.name, f.help);
            if f.gauge {
                let Ok(vec) = IntGaugeVec::new(opts, f.labels) else {
                    continue;
                };
                values.for_each(|(_, l, n)| vec.with_label_values(l).add(*n as i64));
                out.extend(vec.collect());
            } else {
                let Ok(vec) = IntCounterVec::new(opts, f.labels) else {
                    continue;
                };
                values.for_each(|(_, l, n)| vec.with_label_values(l).inc_by(*n));
                out.extend(vec.collect());
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
    m: Arc<Metrics>,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut iv = tokio::time::interval(every);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = iv.tick() => {}
        }
        let consumers = [
            (STREAM_TELEMETRY, CONSUMER_SCORER),
            (STREAM_TELEMETRY, CONSUMER_HARVESTER),
            (STREAM_ALERTS, CONSUMER_INCIDENTS),
        ];
        for (stream, name) in consumers {
            let Ok(stream) = bus.js().get_stream(stream).await else {
                continue;
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Muted(u64);

    impl ReadAtScrape for Muted {
        fn report(&self, out: &mut Report) {
            out.add(&ALERTS_SUPPRESSED, &["muted"], self.0);
        }
    }

    #[test]
    fn a_family_appears_once_reported_and_sources_add_up() {
        let m = Metrics::default();
        assert!(!m.render().contains("proprio_alerts_suppressed_total"));
        m.read_at_scrape(Arc::new(Muted(2)));
        m.read_at_scrape(Arc::new(Muted(3)));
        let text = m.render();
        assert!(
            text.contains(
                "# HELP proprio_alerts_suppressed_total Alerts not published, by reason (cooldown, muted, duplicate)\n\
                 # TYPE proprio_alerts_suppressed_total counter\n\
                 proprio_alerts_suppressed_total{reason=\"muted\"} 5\n"
            ),
            "{text}"
        );
    }
}
