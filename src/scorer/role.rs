//! The scorer role on the bus: every replica binds the one durable pull
//! consumer `proprio-scorer` (scale out = start another replica), scores
//! micro-batches in the model thread and publishes an alert when a key's
//! evidence reaches the alert policy's level ([`Decider`]). A telemetry message is acknowledged only after
//! its alert, if any, is stored; the alert's `Nats-Msg-Id` is the telemetry
//! message's stream sequence, so a redelivered event never alerts twice.
//!
//! A batch goes through the role's three steps: the pure decisions
//! ([`Decider::decide`] on each score, [`Decider::restated`] on each repeated
//! pulse, then [`judge`] once a candidate's mute is
//! known, and [`settlement`]), the effects (the forward pass, mute look-ups
//! and publishes, each batched), and settling every message.

use super::decide::{Cooldown, Decider};
use super::epoch::EpochWatch;
use super::feed::ScorerFeed;
use super::restate::LastPulses;
pub use super::stats::ScorerStats;
use super::worker::ModelWorker;
use super::{score_against, EventScorer, LiveTails, Prepared, Scored};
use crate::alert::{mute, Diagnoser};
use crate::bus::partition::{original_subject, source_sequence, PartitionCounts};
use crate::bus::{cut, Bus, Pull};
use crate::context::{settle, Context, Role};
use crate::contract::alert::{Alert, AlertBaseline, AlertReason};
use crate::contract::{ModelNotice, STREAM_TELEMETRY, SUBJECT_MODEL_PUBLISHED};
use crate::curriculum::{RenderConfig, Renderer};
use crate::event::{Event, Kind};
use crate::metrics::Metrics;
use crate::model::checkpoint::Checkpoint;
use crate::model_store;
use anyhow::Result;
use async_nats::jetstream::{self, AckKind};
use futures::future::join_all;
use futures::StreamExt;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Scorer settings (with [`crate::context::Shared`]'s limits and threshold).
#[derive(Debug, Clone)]
pub struct ScorerConfig {
    /// Most events in one forward pass.
    pub batch: usize,
    /// Threads a batch's forward passes are split across.
    pub threads: usize,
    /// Longest wait for a batch to fill once its first event has arrived,
    /// only while the scorer is behind ([`crate::bus::Feed::cut`]).
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
    /// Rendering before the first model; after, the model's own.
    pub render: RenderConfig,
    pub diagnoser: Diagnoser,
    /// 1: every replica shares one consumer of the telemetry stream. 2 or
    /// more: the telemetry is split by source into this many partitions,
    /// each scored by one replica at a time ([`crate::bus::partition`]).
    pub partitions: u32,
}

impl Default for ScorerConfig {
    fn default() -> Self {
        ScorerConfig {
            batch: 256,
            threads: crate::model::score::all_cores(),
            max_wait: Duration::from_millis(20),
            cooldown_ms: 60_000,
            max_keys: super::Contexts::DEFAULT_MAX_KEYS,
            max_lag: Some(Duration::from_secs(300)),
            render: RenderConfig::default(),
            diagnoser: Diagnoser::default(),
            partitions: 1,
        }
    }
}

/// What becomes of a scored event's message, decided before it is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Below the threshold.
    Quiet,
    /// Its source is muted.
    Muted,
    /// Its source and kind alerted less than a cooldown ago.
    CooledDown,
    /// Its alert goes out; settled by how the publish went.
    Publish,
    /// Its mute could not be read: handed back to decide again.
    Retry,
}

/// The fate of an event whose score crossed the threshold, once its mute
/// look-up answered. Only an alert that goes out counts against the
/// cooldown.
pub fn judge(
    muted: &Result<bool>,
    cooldown: &mut Cooldown,
    source: &str,
    kind: Kind,
    ts: i64,
) -> Fate {
    match muted {
        Ok(true) => Fate::Muted,
        Ok(false) if !cooldown.admit(source, kind, ts) => Fate::CooledDown,
        Ok(false) => Fate::Publish,
        Err(_) => Fate::Retry,
    }
}

/// How a message is settled: acknowledged once its alert, if any, is stored
/// (or was already: `Ok(false)`), else handed back to be decided again.
pub fn settlement(fate: Fate, published: Option<&Result<bool>>) -> AckKind {
    match (fate, published) {
        (Fate::Retry, _) | (Fate::Publish, Some(Err(_))) => AckKind::Nak(Some(RETRY_AFTER)),
        _ => AckKind::Ack,
    }
}

/// How long a message whose alert could not be decided or stored waits.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A decoded, prepared message of a batch; not prepared (None): a pulse
/// repeating its key's last one, left unscored ([`Decider::restated`]).
struct Valid {
    msg: jetstream::Message,
    ev: Event,
    prepared: Option<Prepared>,
}

pub struct Scorer {
    ctx: Context,
    cfg: ScorerConfig,
    worker: ModelWorker,
    stats: Arc<ScorerStats>,
    epoch: EpochWatch,
}

impl Scorer {
    /// A scorer with the model currently published on the bus, if any.
    pub async fn new(ctx: &Context, cfg: ScorerConfig) -> Result<Scorer> {
        // Before the process says it is ready, so nothing published after
        // that misses the partitions; a count other than the stream's
        // stops the start with its message.
        if cfg.partitions >= 2 {
            ctx.bus.ensure_scoring(cfg.partitions).await?;
        }
        let worker = ModelWorker::spawn(None, cfg.batch, cfg.threads);
        let s = Scorer {
            ctx: ctx.clone(),
            cfg,
            worker,
            stats: ctx.metrics.counters(),
            epoch: EpochWatch::spawn(ctx.bus.clone()),
        };
        if let Some(notice) = model_store::current(&s.ctx.bus).await? {
            if let Err(e) = load_and_swap(&s.ctx, &s.worker, &notice, &s.stats).await {
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
}

impl Role for Scorer {
    async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let bus = &self.ctx.bus;
        // Model notices: swap between batches, never inside one.
        let mut notices = bus.client().subscribe(SUBJECT_MODEL_PUBLISHED).await?;
        let (ctx2, worker2, stats2) = (self.ctx.clone(), self.worker.clone(), self.stats.clone());
        let watcher = tokio::spawn(async move {
            while let Some(m) = notices.next().await {
                match serde_json::from_slice::<ModelNotice>(&m.payload) {
                    Ok(n) => {
                        if let Err(e) = load_and_swap(&ctx2, &worker2, &n, &stats2).await {
                            tracing::warn!("model {} not swapped in: {e:#}", n.version);
                        }
                    }
                    Err(e) => tracing::warn!("ignoring a malformed model notice: {e}"),
                }
            }
        });
        let counts = Arc::new(PartitionCounts::new(self.cfg.partitions));
        let _ = self.stats.partitions.set(counts.clone());
        let mut feed = ScorerFeed::open(bus, self.cfg.partitions, counts).await?;
        let mut reads = Reads {
            render: self.cfg.render.clone(),
            block_size: crate::model::GptConfig::default().block_size,
            swaps_seen: None,
        };
        let mut scorer = EventScorer::new(
            Renderer::new(&reads.render)?,
            crate::vocab::Vocab::bytes(),
            reads.block_size,
            self.cfg.max_keys,
        );
        let mut cooldown = Cooldown::new(self.cfg.cooldown_ms);
        let mut decider = Decider::new(self.ctx.shared.policy, self.cfg.max_keys);
        let mut tails = LiveTails::default();
        let mut pulses = LastPulses::new(self.cfg.max_keys);
        tokio::pin!(shutdown);
        let mut behind = false;
        loop {
            feed.tend().await;
            let beat = feed.due();
            let first = tokio::select! {
                m = feed.next() => m,
                _ = until(beat) => continue,
                _ = &mut shutdown => break,
            };
            // Waiting for a batch to fill pays only while the scorer is
            // behind (its last batch was full); otherwise it is latency.
            let linger = behind.then_some(self.cfg.max_wait);
            let batch = cut(&mut feed, first, self.cfg.batch, linger).await;
            behind = batch.len() >= self.cfg.batch;
            self.follow_model(&mut scorer, &mut reads).await;
            let judges = Judges {
                tails: &mut tails,
                decider: &mut decider,
                cooldown: &mut cooldown,
                pulses: &mut pulses,
            };
            self.process(&mut scorer, judges, batch).await;
        }
        watcher.abort();
        feed.leave().await;
        Ok(())
    }
}

impl Scorer {
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
        if *info.render == reads.render
            && info.block_size == reads.block_size
            && crate::vocab::Vocab::same(&info.vocab, &scorer.vocab)
        {
            return;
        }
        match Renderer::new(&info.render) {
            Ok(r) => {
                tracing::info!(
                    model = %info.version,
                    block_size = info.block_size,
                    vocab = ?info.vocab,
                    "scoring with the model's render settings, vocabulary and block size"
                );
                *scorer =
                    EventScorer::new(r, info.vocab.clone(), info.block_size, self.cfg.max_keys);
                reads.render = (*info.render).clone();
                reads.block_size = info.block_size;
            }
            Err(e) => tracing::warn!("model {} render settings unusable: {e:#}", info.version),
        }
    }

    /// One batch: the stale shed, the invalid terminated, the rest scored
    /// in one forward pass, their alerts decided, published and settled.
    async fn process(
        &self,
        scorer: &mut EventScorer,
        j: Judges<'_>,
        batch: Vec<jetstream::Message>,
    ) {
        let now = self.ctx.clock.now_ms();
        let batch = self.shed_stale(batch, now).await;
        let valid = self.validate(scorer, batch, now).await;
        if valid.is_empty() {
            return;
        }
        let t = std::time::Instant::now();
        let prepared = || valid.iter().filter_map(|v| v.prepared.as_ref());
        let items = prepared().map(|p| p.item.clone()).collect();
        let keys = prepared().map(|p| p.key.clone()).collect();
        let fresh = prepared().count();
        self.stats
            .collapsed
            .fetch_add((valid.len() - fresh) as u64, Ordering::Relaxed);
        let scored = self.worker.score(keys, items).await;
        // A model of another vocabulary came in between cutting the batch
        // and scoring it: its ids mean other tokens, so the losses are not
        // this event's. Counted as warming, like events before any model;
        // the next batch is cut for the new model.
        let scored =
            scored.filter(|(_, info)| crate::vocab::Vocab::same(&info.vocab, &scorer.vocab));
        let Some((losses, info)) = scored else {
            self.stats
                .warming
                .fetch_add(fresh as u64, Ordering::Relaxed);
            for v in &valid {
                settle(&v.msg, AckKind::Ack).await;
            }
            return;
        };
        let metrics = &self.ctx.metrics;
        if fresh > 0 {
            metrics.scoring_seconds.observe(t.elapsed().as_secs_f64());
            metrics.batch_size.observe(fresh as f64);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.scored.fetch_add(fresh as u64, Ordering::Relaxed);
        // The calibration restarts with each model (its shipped tails).
        j.tails.follow(&info.version, &info.baselines.surprise);
        // The risk applies in full once the model's training covered a day.
        let policy = self
            .ctx
            .shared
            .policy
            .for_model(info.baselines.surprise.seen_ms());
        j.decider.set_policy(policy);
        let previous_epoch = self.epoch.previous(&info.fingerprint);
        // A partitioned event names its telemetry sequence.
        let alert_of = |v: &Valid, s: &Scored| {
            let seq = source_sequence(v.msg.headers.as_ref())
                .or_else(|| v.msg.info().ok().map(|i| i.stream_sequence))
                .unwrap_or(0);
            let a = surprise_alert(&v.ev, s, &self.cfg.diagnoser, Some(&info.version), seq);
            Alert {
                previous_epoch,
                ..a
            }
        };
        let mut losses = losses.iter();
        let alerts: Vec<Option<Alert>> = valid
            .iter()
            .map(|v| {
                let (key, ts) = (&v.ev.key, v.ev.ts);
                let Some(p) = &v.prepared else {
                    // Restated: its alert says what the pulse it repeats said.
                    j.decider.restated(key, ts).filter(|d| d.alert)?;
                    return j.pulses.get(key).map(|s| alert_of(v, s));
                };
                let s = score_against(p, losses.next()?, ts, j.tails);
                observe(metrics, &v.ev, &s);
                if v.ev.kind() != Kind::Pulse {
                    let d = j.decider.decide(key, ts, s.score);
                    return d.alert.then(|| alert_of(v, &s));
                }
                let d = j.decider.decide_pulse(key, ts, s.score);
                let alert = d.alert.then(|| alert_of(v, &s));
                j.pulses.keep(key, ts, s);
                alert
            })
            .collect();
        let fates = self.fates(&valid, &alerts, j.cooldown, now).await;
        let published = self.publish(&valid, &alerts, &fates).await;
        for ((v, fate), published) in valid.iter().zip(fates).zip(&published) {
            settle(&v.msg, settlement(fate, published.as_ref())).await;
        }
    }

    /// The fate of each event: the candidates' mutes looked up together
    /// (one after the other, these round trips were most of a batch's time
    /// under load), then judged.
    async fn fates(
        &self,
        valid: &[Valid],
        alerts: &[Option<Alert>],
        cooldown: &mut Cooldown,
        now: i64,
    ) -> Vec<Fate> {
        let candidates: Vec<&Event> = valid
            .iter()
            .zip(alerts)
            .filter(|(_, a)| a.is_some())
            .map(|(v, _)| &v.ev)
            .collect();
        let muted = join_all(
            candidates
                .iter()
                .map(|ev| mute::is_muted(&self.ctx.bus, &ev.source, now)),
        )
        .await;
        let mut judged = candidates.iter().zip(&muted).map(|(ev, muted)| {
            let fate = judge(muted, cooldown, &ev.source, ev.kind(), ev.ts);
            match (fate, muted) {
                (Fate::Muted, _) => self.stats.muted.fetch_add(1, Ordering::Relaxed),
                (Fate::CooledDown, _) => self.stats.cooled_down.fetch_add(1, Ordering::Relaxed),
                (Fate::Retry, Err(e)) => {
                    tracing::warn!("reading the mute of {}, will retry: {e:#}", ev.source);
                    0
                }
                _ => 0,
            };
            fate
        });
        let fates = alerts
            .iter()
            .map(|a| match a {
                Some(_) => judged.next().unwrap_or(Fate::Retry),
                None => Fate::Quiet,
            })
            .collect();
        fates
    }

    /// Publishes the alerts whose fate is [`Fate::Publish`], together; per
    /// event, how its publish went (None: nothing to publish).
    async fn publish(
        &self,
        valid: &[Valid],
        alerts: &[Option<Alert>],
        fates: &[Fate],
    ) -> Vec<Option<Result<bool>>> {
        let outgoing = alerts
            .iter()
            .zip(fates)
            .map(|(a, f)| a.as_ref().filter(|_| *f == Fate::Publish));
        let published = join_all(outgoing.map(|a| async move {
            match a {
                Some(a) => Some(self.ctx.bus.publish_alert(a).await),
                None => None,
            }
        }))
        .await;
        for (v, r) in valid.iter().zip(&published) {
            match r {
                Some(Ok(true)) => self.stats.alerts.fetch_add(1, Ordering::Relaxed),
                Some(Ok(false)) => self.stats.duplicate_alerts.fetch_add(1, Ordering::Relaxed),
                Some(Err(e)) => {
                    let source = &v.ev.source;
                    tracing::warn!("alert for {source} not published, will retry: {e:#}");
                    0
                }
                None => 0,
            };
        }
        published
    }

    /// Decodes and prepares a batch's events; one that fails validation is
    /// terminated (the harvester dead-letters it; here it is just not
    /// scored), a repeated pulse kept unprepared (decided in its turn,
    /// [`Decider::restated`]).
    async fn validate(
        &self,
        scorer: &mut EventScorer,
        batch: Vec<jetstream::Message>,
        now: i64,
    ) -> Vec<Valid> {
        let root = self.ctx.bus.root();
        let mut valid = Vec::with_capacity(batch.len());
        for msg in batch {
            let subject = Some((root, original_subject(msg.subject.as_str())));
            match Event::decode(&msg.payload, subject, &self.ctx.shared.limits, Some(now)) {
                // A redelivery was read once already: compared with
                // itself, it would repeat its own pulse.
                Ok(ev) if msg.info().is_ok_and(|i| i.delivered > 1) => {
                    let prepared = Some(scorer.prepare_event(&ev));
                    valid.push(Valid { msg, ev, prepared });
                }
                Ok(ev) => {
                    let prepared = scorer.prepare_live(&ev);
                    valid.push(Valid { msg, ev, prepared });
                }
                Err(_) => {
                    self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                    settle(&msg, AckKind::Term).await;
                }
            }
        }
        valid
    }

    /// Records how far behind the scorer is and acknowledges, unscored, the
    /// events older than `max_lag` (see [`ScorerConfig::max_lag`]).
    async fn shed_stale(
        &self,
        batch: Vec<jetstream::Message>,
        now_ms: i64,
    ) -> Vec<jetstream::Message> {
        let now_ns = now_ms as i128 * 1_000_000;
        let lag = |m: &jetstream::Message| {
            m.info()
                .map(|i| ((now_ns - i.published.unix_timestamp_nanos()) as f64 / 1e9).max(0.0))
                .unwrap_or(0.0)
        };
        if let Some(last) = batch.last() {
            self.ctx.metrics.scorer_lag_seconds.set(lag(last));
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
                settle(&m, AckKind::Ack).await;
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

/// An event's loss and score, by kind.
fn observe(metrics: &Metrics, ev: &Event, s: &Scored) {
    let kind = [ev.kind().as_str()];
    metrics
        .event_loss
        .with_label_values(&kind)
        .observe(s.loss as f64);
    metrics
        .event_score
        .with_label_values(&kind)
        .observe(s.score as f64);
}

/// Resolves at `at`; never without one.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
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
    let (median, scale) = s.stat.map_or((0.0, 0.0), |t| (t.median, t.scale));
    Alert {
        id: Alert::id_for_message(STREAM_TELEMETRY, stream_seq),
        ts: ev.ts,
        source: ev.source.clone(),
        key: ev.key.clone(),
        kind: ev.kind(),
        score: s.score,
        loss: s.loss,
        baseline: AlertBaseline {
            median,
            scale,
            of: s.baseline_of,
        },
        rendered: s.rendered.clone(),
        span: s.span.clone(),
        diagnosis: diagnoser.diagnose_event(ev),
        model: model.map(str::to_string),
        reason: AlertReason::Surprise,
        previous_epoch: false,
    }
}

async fn load_and_swap(
    ctx: &Context,
    worker: &ModelWorker,
    n: &ModelNotice,
    stats: &ScorerStats,
) -> Result<()> {
    let bus: &Bus = &ctx.bus;
    if worker.info().await.map(|i| i.version) == Some(n.version.clone()) {
        return Ok(());
    }
    let bytes = model_store::get(bus, &n.object)
        .await?
        .ok_or_else(|| anyhow::anyhow!("model object {} is missing", n.object))?;
    let ck = tokio::task::spawn_blocking(move || Checkpoint::from_bytes(&bytes)).await??;
    let info = worker.swap(ck).await?;
    stats.swaps.fetch_add(1, Ordering::Relaxed);
    ctx.metrics.set_model(&info.version, info.created_at_ms);
    tracing::info!(version = %info.version, "scorer switched model");
    Ok(())
}

/// The scorer's state that turns scores into alerts, carried from batch
/// to batch: the live calibration, the evidence, the cooldown.
struct Judges<'a> {
    tails: &'a mut LiveTails,
    decider: &'a mut Decider,
    cooldown: &'a mut Cooldown,
    pulses: &'a mut LastPulses,
}

/// How the scorer reads events now: the rendering and block size of the
/// model in service, and the swap count it last checked them at.
struct Reads {
    render: RenderConfig,
    block_size: usize,
    swaps_seen: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(k: AckKind) -> bool {
        matches!(k, AckKind::Ack)
    }

    #[test]
    fn a_candidate_is_muted_cooled_down_published_or_retried() {
        let mut c = Cooldown::new(60_000);
        let unknown = Err(anyhow::anyhow!("kv away"));
        assert_eq!(judge(&Ok(true), &mut c, "a", Kind::Log, 0), Fate::Muted);
        assert_eq!(judge(&unknown, &mut c, "a", Kind::Log, 0), Fate::Retry);
        // Neither a muted nor an undecided alert started the cooldown.
        assert_eq!(judge(&Ok(false), &mut c, "a", Kind::Log, 0), Fate::Publish);
        assert_eq!(
            judge(&Ok(false), &mut c, "a", Kind::Log, 1_000),
            Fate::CooledDown
        );
        assert_eq!(
            judge(&Ok(false), &mut c, "a", Kind::Flux, 1_000),
            Fate::Publish
        );
    }

    #[test]
    fn a_message_is_acked_once_its_alert_is_stored() {
        let failed = Err(anyhow::anyhow!("no ack"));
        for fate in [Fate::Quiet, Fate::Muted, Fate::CooledDown] {
            assert!(acked(settlement(fate, None)));
        }
        assert!(acked(settlement(Fate::Publish, Some(&Ok(true)))));
        // Already stored: a redelivery or another replica.
        assert!(acked(settlement(Fate::Publish, Some(&Ok(false)))));
        assert!(!acked(settlement(Fate::Publish, Some(&failed))));
        assert!(!acked(settlement(Fate::Retry, None)));
    }
}
