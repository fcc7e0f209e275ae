//! The harvester: turns the telemetry stream into the curriculum the trainer
//! learns from.
//!
//! Each telemetry message is decoded and validated against its subject;
//! what fails is dead-lettered with its reason and terminated (a bad payload
//! stays bad, so redelivering it would only loop). What passes is rendered
//! to one line, sampled so that no single source dominates what the model
//! learns, stamped with the fingerprint epoch, and published on
//! `proprio.curriculum.<curriculum>`. The telemetry message is acknowledged
//! only once that publish is acknowledged: a crash or an outage in between
//! means a redelivery, never a silent loss.
//!
//! Each message goes through [`Harvester::decide`] (what to do with it),
//! [`carry_out`] (the publish) and [`settle`] (the ack).

use crate::bus::{self, Feed};
use crate::context::{settle, Context, Role};
use crate::contract;
use crate::curriculum::{Document, Renderer, Sample, Sampler, Sampling, Scaler};
use crate::event::{Event, Reason};
use crate::freshness::Gates;
use crate::metrics::{self, Family, ReadAtScrape, Report};
use anyhow::{Context as _, Result};
use async_nats::jetstream::{self, AckKind};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Harvester settings (with [`crate::context::Shared`]'s limits, gates and
/// rendering).
#[derive(Debug, Clone)]
pub struct HarvesterConfig {
    /// The curriculum's sampling, the rule offline training follows too.
    pub sampling: Sampling,
    /// How often the key files are re-hashed. Hashing per message would
    /// cost disk reads on the hot path for a change that happens on deploys.
    pub fingerprint_every: Duration,
    /// Curriculum publishes awaiting their ack at once; bounds memory and
    /// how much is redelivered after a crash.
    pub in_flight: usize,
}

impl Default for HarvesterConfig {
    fn default() -> Self {
        HarvesterConfig {
            sampling: Sampling::default(),
            fingerprint_every: Duration::from_secs(60),
            in_flight: 256,
        }
    }
}

/// What the harvester has done, for metrics and tests.
#[derive(Debug, Default)]
pub struct HarvestStats {
    /// Deliveries seen (a redelivery counts again).
    pub received: AtomicU64,
    /// Documents published and acknowledged on the curriculum stream.
    pub harvested: AtomicU64,
    /// Dropped on purpose: the source was over its per-minute budget.
    pub sampled_out: AtomicU64,
    /// Dropped on purpose: a pulse identical to the key's previous one.
    pub collapsed: AtomicU64,
    /// Curriculum or DLQ publishes that failed; the message was handed back
    /// for redelivery.
    pub failed: AtomicU64,
    rejected: [AtomicU64; Reason::ALL.len()],
}

impl HarvestStats {
    pub fn rejected(&self, reason: Reason) -> u64 {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.rejected[i].load(Ordering::Relaxed)
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }

    /// Rejections per reason, only the reasons seen.
    pub fn rejected_by_reason(&self) -> Vec<(Reason, u64)> {
        Reason::ALL
            .iter()
            .zip(&self.rejected)
            .map(|(r, a)| (*r, a.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    fn count_reject(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

static REJECTED: Family = Family::counter(
    "proprio_events_rejected_total",
    "Telemetry refused by validation and dead-lettered, by reason",
    &["reason"],
);
static DROPPED: Family = Family::counter(
    "proprio_events_dropped_total",
    "Valid telemetry the harvester left out of the curriculum on purpose, by reason",
    &["reason"],
);
static HARVESTED: Family = Family::counter(
    "proprio_events_harvested_total",
    "Documents published on the curriculum stream",
    &[],
);
static FAILED: Family = Family::counter(
    "proprio_harvest_failures_total",
    "Curriculum or dead-letter publishes that failed (the message is redelivered)",
    &[],
);

impl ReadAtScrape for HarvestStats {
    fn report(&self, out: &mut Report) {
        out.add(
            &metrics::EVENTS_RECEIVED,
            &["harvester"],
            load(&self.received),
        );
        for r in Reason::ALL {
            out.add(&REJECTED, &[r.as_str()], self.rejected(r));
        }
        out.add(&DROPPED, &["sampled_out"], load(&self.sampled_out));
        out.add(&DROPPED, &["collapsed"], load(&self.collapsed));
        out.add(&HARVESTED, &[], load(&self.harvested));
        out.add(&FAILED, &[], load(&self.failed));
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl std::fmt::Display for HarvestStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received={} harvested={} sampled_out={} collapsed={} rejected={} failed={}",
            load(&self.received),
            load(&self.harvested),
            load(&self.sampled_out),
            load(&self.collapsed),
            self.rejected_total(),
            load(&self.failed)
        )
    }
}

/// The fingerprint epoch, re-read from the key files now and then.
struct Epoch {
    gates: Gates,
    every: Duration,
    value: String,
    at: Instant,
}

impl Epoch {
    fn new(gates: Gates, every: Duration) -> Result<Epoch> {
        let value = gates
            .fingerprint()
            .context("computing the fingerprint epoch")?;
        Ok(Epoch {
            gates,
            every,
            value,
            at: Instant::now(),
        })
    }

    fn current(&mut self) -> &str {
        if self.at.elapsed() >= self.every {
            self.at = Instant::now();
            match self.gates.fingerprint() {
                Ok(v) => {
                    if v != self.value {
                        tracing::info!(from = %self.value, to = %v, "fingerprint epoch changed");
                    }
                    self.value = v;
                }
                // Keep the last known epoch: a transient read error is not an
                // architecture change.
                Err(e) => tracing::warn!("fingerprint: {e:#}; keeping the previous epoch"),
            }
        }
        &self.value
    }
}

/// What to do with one telemetry message once it has been looked at.
enum Action {
    Publish { subject: String, payload: Vec<u8> },
    DeadLetter { reason: Reason, detail: String },
    Drop,
}

/// The harvester role.
pub struct Harvester {
    ctx: Context,
    cfg: HarvesterConfig,
    stats: Arc<HarvestStats>,
}

impl Harvester {
    pub fn new(ctx: &Context, cfg: HarvesterConfig) -> Harvester {
        Harvester {
            ctx: ctx.clone(),
            cfg,
            stats: ctx.metrics.counters(),
        }
    }

    pub fn stats(&self) -> Arc<HarvestStats> {
        self.stats.clone()
    }
}

impl Role for Harvester {
    /// Harvests until `shutdown` resolves, then lets the publishes in flight
    /// finish (and their messages be acked) for up to a few seconds.
    async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let shared = &self.ctx.shared;
        let renderer = Renderer::new(&shared.render).context("harvester renderer")?;
        let mut epoch = Epoch::new(shared.gates.clone(), self.cfg.fingerprint_every)?;
        let mut sampler = Sampler::new(self.cfg.sampling);
        // Pulses read against their own series, as each scorer reads them
        // (every event is rendered before sampling, so both walks see the
        // same values).
        let mut scaler = renderer.scaler();
        let bus = &self.ctx.bus;
        let mut feed: Feed = bus
            .feed(
                contract::STREAM_TELEMETRY,
                contract::CONSUMER_HARVESTER,
                &bus.telemetry_filter(),
            )
            .await?;
        let cap = self.cfg.in_flight.max(1);
        let mut inflight = FuturesUnordered::new();
        tokio::pin!(shutdown);
        tracing::info!("harvester: running");
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(()) = inflight.next(), if !inflight.is_empty() => {}
                msg = feed.next(), if inflight.len() < cap => {
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                    let action = self.decide(&msg, (&renderer, &mut scaler), &mut epoch, &mut sampler);
                    inflight.push(handle(self.ctx.clone(), self.stats.clone(), msg, action));
                }
            }
        }
        let drain = async { while inflight.next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            tracing::warn!(
                "harvester: publishes still in flight at shutdown; they will be redelivered"
            );
        }
        tracing::info!("harvester: stopped ({})", self.stats);
        Ok(())
    }
}

impl Harvester {
    /// What to do with one message: decoded and validated, rendered,
    /// sampled. No I/O (the epoch re-reads key files now and then).
    fn decide(
        &self,
        msg: &jetstream::Message,
        (renderer, scaler): (&Renderer, &mut Scaler),
        epoch: &mut Epoch,
        sampler: &mut Sampler,
    ) -> Action {
        let now = self.ctx.clock.now_ms();
        let ev = match Event::decode(
            &msg.payload,
            Some((self.ctx.bus.root(), msg.subject.as_str())),
            &self.ctx.shared.limits,
            Some(now),
        ) {
            Ok(ev) => ev,
            Err(rej) => {
                return Action::DeadLetter {
                    reason: rej.reason,
                    detail: rej.detail,
                }
            }
        };
        let doc = Document::of_event(renderer, scaler, &ev, epoch.current());
        // A redelivery was already admitted once; sampling it again would
        // find it "identical to itself" and drop it.
        let first_delivery = msg.info().map(|i| i.delivered <= 1).unwrap_or(true);
        if first_delivery {
            match sampler.admit(&ev, &doc.text) {
                Sample::Keep => {}
                Sample::OverBudget => {
                    self.stats.sampled_out.fetch_add(1, Ordering::Relaxed);
                    return Action::Drop;
                }
                Sample::Collapsed => {
                    self.stats.collapsed.fetch_add(1, Ordering::Relaxed);
                    return Action::Drop;
                }
            }
        }
        Action::Publish {
            subject: contract::curriculum_subject(doc.curriculum.as_str()),
            payload: doc.to_msgpack(),
        }
    }
}

/// Carries out an action, then settles the telemetry message by its outcome.
async fn handle(ctx: Context, stats: Arc<HarvestStats>, msg: jetstream::Message, action: Action) {
    let (outcome, done) = carry_out(&ctx, &stats, &msg, action).await;
    let kind = match outcome {
        Ok(()) => done,
        Err(e) => {
            let delivered = msg.info().map_or(1, |i| i.delivered);
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(subject = %msg.subject, delivered, "harvest failed, will retry: {e:#}");
            AckKind::Nak(Some(bus::nak_delay(delivered)))
        }
    };
    settle(&msg, kind).await;
}

/// The effects of an action: the document (or dead letter) published, with
/// how to settle the message once it is stored: acked, or terminated when
/// rejected (a failed publish is handed back with a growing delay).
async fn carry_out(
    ctx: &Context,
    stats: &HarvestStats,
    msg: &jetstream::Message,
    action: Action,
) -> (Result<()>, AckKind) {
    let bus = &ctx.bus;
    let id = msg
        .info()
        .ok()
        .map(|i| format!("{}:{}", i.stream, i.stream_sequence));
    match action {
        Action::Drop => (Ok(()), AckKind::Ack),
        Action::Publish { subject, payload } => {
            let curriculum = subject
                .strip_prefix(contract::SUBJECT_CURRICULUM_PREFIX)
                .map(|c| c.trim_start_matches('.').to_string());
            let r = match &id {
                Some(id) => bus
                    .publish_once(subject, payload, None, id)
                    .await
                    .map(|_| ()),
                None => bus.publish_acked(subject, payload, None).await,
            };
            if r.is_ok() {
                stats.harvested.fetch_add(1, Ordering::Relaxed);
                if let Some(c) = &curriculum {
                    ctx.metrics
                        .curriculum_documents
                        .with_label_values(&[c.as_str()])
                        .inc();
                }
            }
            (r, AckKind::Ack)
        }
        Action::DeadLetter { reason, detail } => {
            let r = bus
                .publish_dlq(
                    reason,
                    &detail,
                    msg.subject.as_str(),
                    msg.payload.clone(),
                    id.as_deref(),
                )
                .await;
            if r.is_ok() {
                stats.count_reject(reason);
                tracing::debug!(subject = %msg.subject, reason = reason.as_str(), "dead-lettered: {detail}");
            }
            (r, AckKind::Term)
        }
    }
}
