//! The scorer role on the bus: every replica binds the one durable pull
//! consumer `proprio-scorer` (scale out = start another replica), scores
//! micro-batches in the model thread and publishes an alert when an event's
//! score passes the threshold. A telemetry message is acknowledged only after
//! its alert, if any, is stored; the alert's `Nats-Msg-Id` is the telemetry
//! message's stream sequence, so a redelivered event never alerts twice.

use super::decide::{crosses, Cooldown};
use super::worker::ModelWorker;
use super::{finish, EventScorer, Prepared, Scored};
use crate::alert::{Alert, AlertBaseline, AlertReason, Diagnoser, Span};
use crate::bus::{Bus, CONSUMER_SCORER, STREAM_TELEMETRY, SUBJECT_MODEL_PUBLISHED};
use crate::curriculum::{RenderConfig, Renderer};
use crate::event::{Event, Kind, Limits};
use crate::freshness::{Clock, SystemClock};
use crate::model::checkpoint::Checkpoint;
use crate::trainer::cycle::ModelNotice;
use anyhow::Result;
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ScorerConfig {
    /// Score at or above which an alert is published.
    pub threshold: f32,
    /// Most events in one forward pass.
    pub batch: usize,
    /// Threads a batch's forward passes are split across.
    pub threads: usize,
    /// Longest wait for a batch to fill once its first event has arrived.
    pub max_wait: Duration,
    /// Per source and kind, at most one alert per this much event time.
    pub cooldown_ms: i64,
    /// Keys whose context is kept (least recently used evicted).
    pub max_keys: usize,
    /// Back-pressure: an event that reaches the scorer more than this long
    /// after JetStream stored it is acknowledged unscored and counted as
    /// shed, so a scorer that fell behind skips to the present instead of
    /// alerting ever later (the harvester still trains on every event, and
    /// the backlog waits in the stream, not in memory). None: never shed.
    pub max_lag: Option<Duration>,
    pub limits: Limits,
    /// Rendering before the first model; after, the model's own.
    pub render: RenderConfig,
    pub diagnoser: Diagnoser,
}

impl Default for ScorerConfig {
    fn default() -> Self {
        ScorerConfig {
            threshold: 3.0,
            batch: 256,
            threads: crate::model::score::all_cores(),
            max_wait: Duration::from_millis(20),
            cooldown_ms: 60_000,
            max_keys: super::Contexts::DEFAULT_MAX_KEYS,
            max_lag: Some(Duration::from_secs(300)),
            limits: Limits::default(),
            render: RenderConfig::default(),
            diagnoser: Diagnoser::default(),
        }
    }
}

/// Counters a test or the metrics endpoint can read.
#[derive(Debug, Default)]
pub struct ScorerStats {
    pub scored: AtomicU64,
    pub batches: AtomicU64,
    /// Events that arrived while there was no model yet.
    pub warming: AtomicU64,
    pub invalid: AtomicU64,
    pub alerts: AtomicU64,
    /// Alerts the stream had already stored (a redelivery, or another replica).
    pub duplicate_alerts: AtomicU64,
    pub cooled_down: AtomicU64,
    /// Events acknowledged unscored because they were older than `max_lag`.
    pub shed: AtomicU64,
    pub muted: AtomicU64,
    pub swaps: AtomicU64,
}

impl ScorerStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

pub struct Scorer {
    bus: Bus,
    cfg: ScorerConfig,
    worker: ModelWorker,
    stats: Arc<ScorerStats>,
    clock: Arc<dyn Clock>,
}

impl Scorer {
    /// A scorer with the model currently published on the bus, if any.
    pub async fn new(bus: Bus, cfg: ScorerConfig) -> Result<Scorer> {
        let worker = ModelWorker::spawn(None, cfg.batch, cfg.threads);
        let s = Scorer {
            bus,
            cfg,
            worker,
            stats: Arc::new(ScorerStats::default()),
            clock: Arc::new(SystemClock),
        };
        if let Some(notice) = ModelNotice::current(&s.bus).await? {
            if let Err(e) = load_and_swap(&s.bus, &s.worker, &notice, &s.stats).await {
                tracing::warn!(
                    "the published model {} could not be loaded: {e:#}",
                    notice.version
                );
            }
        }
        Ok(s)
    }

    pub fn stats(&self) -> Arc<ScorerStats> {
        self.stats.clone()
    }

    pub fn worker(&self) -> ModelWorker {
        self.worker.clone()
    }

    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        // Model notices: swap between batches, never inside one.
        let mut notices = self.bus.client().subscribe(SUBJECT_MODEL_PUBLISHED).await?;
        let (bus2, worker2, stats2) = (self.bus.clone(), self.worker.clone(), self.stats.clone());
        let watcher = tokio::spawn(async move {
            while let Some(m) = notices.next().await {
                match serde_json::from_slice::<ModelNotice>(&m.payload) {
                    Ok(n) => {
                        if let Err(e) = load_and_swap(&bus2, &worker2, &n, &stats2).await {
                            tracing::warn!("model {} not swapped in: {e:#}", n.version);
                        }
                    }
                    Err(e) => tracing::warn!("ignoring a malformed model notice: {e}"),
                }
            }
        });
        let mut feed = self
            .bus
            .feed(
                STREAM_TELEMETRY,
                CONSUMER_SCORER,
                &self.bus.telemetry_filter(),
            )
            .await?;
        let mut reads = Reads {
            render: self.cfg.render.clone(),
            block_size: crate::model::GptConfig::default().block_size,
            swaps_seen: None,
        };
        let mut scorer = EventScorer::new(
            Renderer::new(&reads.render)?,
            reads.block_size,
            self.cfg.max_keys,
        );
        let mut cooldown = Cooldown::new(self.cfg.cooldown_ms);
        tokio::pin!(shutdown);
        loop {
            let first = tokio::select! {
                m = feed.next() => m,
                _ = &mut shutdown => break,
            };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.cfg.max_wait;
            while batch.len() < self.cfg.batch {
                match tokio::time::timeout_at(deadline, feed.next()).await {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            self.follow_model(&mut scorer, &mut reads).await;
            if let Err(e) = self.process(&mut scorer, &mut cooldown, batch).await {
                tracing::warn!("scoring a batch: {e:#}");
            }
        }
        watcher.abort();
        Ok(())
    }

    /// Renders and cuts contexts the way the model in service reads: a model
    /// trained under other render settings or another block size starts the
    /// contexts afresh, since the old ones are in the old form. The model
    /// thread is asked only after a swap, not for every batch.
    async fn follow_model(&self, scorer: &mut EventScorer, reads: &mut Reads) {
        let swaps = self.stats.swaps.load(Ordering::Relaxed);
        if reads.swaps_seen == Some(swaps) {
            return;
        }
        // A model enters the worker at start-up or through a swap, which
        // counts: with none in service yet, the next swap brings us back.
        reads.swaps_seen = Some(swaps);
        let Some(info) = self.worker.info().await else {
            return;
        };
        if *info.render == reads.render && info.block_size == reads.block_size {
            return;
        }
        match Renderer::new(&info.render) {
            Ok(r) => {
                tracing::info!(
                    model = %info.version,
                    block_size = info.block_size,
                    "scoring with the model's render settings and block size"
                );
                *scorer = EventScorer::new(r, info.block_size, self.cfg.max_keys);
                reads.render = (*info.render).clone();
                reads.block_size = info.block_size;
            }
            Err(e) => tracing::warn!("model {} render settings unusable: {e:#}", info.version),
        }
    }

    async fn process(
        &self,
        scorer: &mut EventScorer,
        cooldown: &mut Cooldown,
        batch: Vec<jetstream::Message>,
    ) -> Result<()> {
        let now = self.clock.now_ms();
        let root = self.bus.root().to_string();
        let batch = self.shed_stale(batch).await;
        let mut valid: Vec<(jetstream::Message, Event, Prepared)> = Vec::with_capacity(batch.len());
        for m in batch {
            match Event::decode(
                &m.payload,
                Some((&root, m.subject.as_str())),
                &self.cfg.limits,
                Some(now),
            ) {
                Ok(ev) => {
                    let p = scorer.prepare_event(&ev);
                    valid.push((m, ev, p));
                }
                Err(_) => {
                    // The harvester dead-letters it; here it is just not scored.
                    self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                    let _ = m.ack_with(AckKind::Term).await;
                }
            }
        }
        if valid.is_empty() {
            return Ok(());
        }
        let items = valid.iter().map(|(_, _, p)| p.item.clone()).collect();
        let t = std::time::Instant::now();
        let scored = self.worker.score(items).await;
        let metrics = crate::metrics::global();
        let Some((losses, info)) = scored else {
            self.stats
                .warming
                .fetch_add(valid.len() as u64, Ordering::Relaxed);
            for (m, _, _) in valid {
                let _ = m.ack().await;
            }
            return Ok(());
        };
        metrics.scoring_seconds.observe(t.elapsed().as_secs_f64());
        metrics.batch_size.observe(valid.len() as f64);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .scored
            .fetch_add(valid.len() as u64, Ordering::Relaxed);
        let mut done: Vec<(jetstream::Message, Option<Alert>)> = Vec::with_capacity(valid.len());
        let mut candidates: Vec<(usize, Event)> = Vec::new();
        for ((m, ev, p), loss) in valid.into_iter().zip(&losses) {
            let s = finish(&p, loss, &info.baselines);
            let kind = [ev.kind().as_str()];
            metrics
                .event_loss
                .with_label_values(&kind)
                .observe(s.loss as f64);
            metrics
                .event_score
                .with_label_values(&kind)
                .observe(s.score as f64);
            let alert = crosses(s.score, self.cfg.threshold).then(|| {
                let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                surprise_alert(&ev, &s, &self.cfg.diagnoser, Some(&info.version), seq)
            });
            if alert.is_some() {
                candidates.push((done.len(), ev));
            }
            done.push((m, alert));
        }
        // Alerts of a batch go out together: their mute checks and publish
        // acknowledgements are round trips to the server, and one after the
        // other they were most of a batch's time under load.
        let muted = futures::future::join_all(
            candidates
                .iter()
                .map(|(_, ev)| self.bus.is_muted(&ev.source, now)),
        )
        .await;
        let mut failed = vec![false; done.len()];
        let mut outgoing: Vec<usize> = Vec::new();
        for ((i, ev), muted) in candidates.iter().zip(muted) {
            match muted {
                Ok(true) => {
                    self.stats.muted.fetch_add(1, Ordering::Relaxed);
                    done[*i].1 = None;
                }
                Ok(false) if !cooldown.admit(&ev.source, ev.kind(), ev.ts) => {
                    self.stats.cooled_down.fetch_add(1, Ordering::Relaxed);
                    done[*i].1 = None;
                }
                Ok(false) => outgoing.push(*i),
                Err(e) => {
                    tracing::warn!("reading the mute of {}, will retry: {e:#}", ev.source);
                    failed[*i] = true;
                }
            }
        }
        let published = futures::future::join_all(outgoing.iter().map(|&i| {
            let a = done[i].1.as_ref().expect("an outgoing alert");
            self.bus.publish_alert(a)
        }))
        .await;
        for (&i, r) in outgoing.iter().zip(published) {
            match r {
                Ok(true) => {
                    self.stats.alerts.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {
                    self.stats.duplicate_alerts.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let source = done[i].1.as_ref().map_or("", |a| a.source.as_str());
                    tracing::warn!("alert for {source} not published, will retry: {e:#}");
                    failed[i] = true;
                }
            }
        }
        // Acknowledged only once its alert, if any, is stored.
        for ((m, _), failed) in done.into_iter().zip(failed) {
            if failed {
                let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
            } else {
                let _ = m.ack().await;
            }
        }
        Ok(())
    }

    /// Records how far behind the scorer is and acknowledges, unscored, the
    /// events older than `max_lag` (see [`ScorerConfig::max_lag`]).
    async fn shed_stale(&self, batch: Vec<jetstream::Message>) -> Vec<jetstream::Message> {
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let lag = |m: &jetstream::Message| {
            m.info()
                .map(|i| ((now_ns - i.published.unix_timestamp_nanos()) as f64 / 1e9).max(0.0))
                .unwrap_or(0.0)
        };
        if let Some(last) = batch.last() {
            crate::metrics::global().scorer_lag_seconds.set(lag(last));
        }
        let Some(max) = self.cfg.max_lag else {
            return batch;
        };
        let max = max.as_secs_f64();
        let mut keep = Vec::with_capacity(batch.len());
        let mut shed = 0u64;
        let mut oldest = 0f64;
        for m in batch {
            let l = lag(&m);
            if l > max {
                shed += 1;
                oldest = oldest.max(l);
                let _ = m.ack().await;
            } else {
                keep.push(m);
            }
        }
        if shed > 0 {
            self.stats.shed.fetch_add(shed, Ordering::Relaxed);
            tracing::warn!(
                shed,
                lag_s = oldest as u64,
                "scorer is behind: events older than max_lag ({max:.0} s) are shed unscored"
            );
        }
        keep
    }
}

/// The alert for a surprising event.
pub fn surprise_alert(
    ev: &Event,
    s: &Scored,
    diagnoser: &Diagnoser,
    model: Option<&str>,
    stream_seq: u64,
) -> Alert {
    let b = s.baseline.unwrap_or(crate::baseline::Stat {
        median: 0.0,
        scale: 0.0,
        n: 0,
    });
    Alert {
        id: Alert::id_for_message(STREAM_TELEMETRY, stream_seq),
        ts: ev.ts,
        source: ev.source.clone(),
        key: ev.key.clone(),
        kind: ev.kind(),
        score: s.score,
        loss: s.loss,
        baseline: AlertBaseline {
            median: b.median,
            scale: b.scale,
            of: s.baseline_of,
        },
        rendered: s.rendered.clone(),
        span: Span {
            text: s.span.text.clone(),
            start: s.span.start,
            end: s.span.end,
            loss: s.span.loss,
        },
        diagnosis: diagnoser.diagnose_event(ev),
        model: model.map(str::to_string),
        reason: AlertReason::Surprise,
    }
}

async fn load_and_swap(
    bus: &Bus,
    worker: &ModelWorker,
    n: &ModelNotice,
    stats: &ScorerStats,
) -> Result<()> {
    if worker.info().await.map(|i| i.version) == Some(n.version.clone()) {
        return Ok(());
    }
    let bytes = bus
        .get_model_bytes(&n.object)
        .await?
        .ok_or_else(|| anyhow::anyhow!("model object {} is missing", n.object))?;
    let ck = tokio::task::spawn_blocking(move || Checkpoint::from_bytes(&bytes)).await??;
    let info = worker.swap(ck).await?;
    stats.swaps.fetch_add(1, Ordering::Relaxed);
    crate::metrics::global().set_model(&info.version, info.created_at_ms);
    tracing::info!(version = %info.version, "scorer switched model");
    Ok(())
}

/// How the scorer reads events now: the rendering and block size of the
/// model in service, and the swap count it last checked them at.
struct Reads {
    render: RenderConfig,
    block_size: usize,
    swaps_seen: Option<u64>,
}
