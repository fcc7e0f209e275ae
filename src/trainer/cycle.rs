//! The trainer role: one growth-loop cycle per `proprio.tick.train` message,
//! one function per step, with only one trainer running a cycle at a time
//! (a lease in KV). A failed cycle publishes nothing, so the previous model
//! stays in service.
//!
//! Its first step, GATHER, reads the curriculum the harvester role wrote; in
//! logs and on the `step` metric label it keeps its old name, `harvest`.

use super::digest::build_digest;
use super::epoch::{EpochWait, Recheck};
use super::{checkpoint, evaluate, train, validate, Validated};
use crate::baseline::Surprise;
use crate::context::{Context, Role};
use crate::contract::digest::Digest;
use crate::contract::{
    ModelNotice, KEY_DIGEST, KEY_DIGEST_JSON, KEY_MODEL, KEY_TRAINER_LOCK, STREAM_CURRICULUM,
    SUBJECT_CURRICULUM_ALL, SUBJECT_DIGEST, SUBJECT_INCIDENTS_ALL, SUBJECT_MODEL_PUBLISHED,
    SUBJECT_TICK_TRAIN,
};
use crate::curriculum::{Document, Renderer};
use crate::metrics::{Family, Metrics, ReadAtScrape, Report};
use crate::model::checkpoint::Checkpoint;
use crate::model::train::TrainConfig;
use crate::model::{GptConfig, NativeScorer};
use crate::model_store;
use crate::registry::Registry;
use crate::scorer::decide::crosses;
use crate::scorer::{score_against, LiveTails};
use anyhow::{Context as _, Result};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TrainerConfig {
    pub registry: PathBuf,
    /// Steps for a cold start and for an incremental cycle.
    pub cold_steps: usize,
    pub incremental_steps: usize,
    pub batch: usize,
    /// Threads the native scorer splits EVALUATE's batches across (training
    /// runs on libtorch's process-wide pool).
    pub threads: usize,
    /// Peak learning rate and AdamW weight decay (TrainConfig's by default).
    pub lr: f64,
    pub weight_decay: f64,
    /// Shape of a cold-started model; a model in service of another shape
    /// is not continued.
    pub shape: GptConfig,
    /// The vocabulary a cold start learns.
    pub vocab: crate::vocab::learn::VocabConfig,
    /// How long the lock outlives its holder's last renewal. It is renewed
    /// every third of this while a cycle runs, so it can be short: a trainer
    /// killed mid-cycle wedges training for at most this long.
    pub lease_ms: i64,
    /// Least time between two digests published because alerts arrived.
    pub digest_debounce: Duration,
    /// After a fingerprint change, how much new-epoch telemetry the cold
    /// start waits for, and how often that is checked (between ticks).
    pub epoch_wait: EpochWait,
    pub epoch_check: Duration,
    pub seed: u64,
    /// A name for this trainer in the lock.
    pub id: String,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            registry: PathBuf::from("deploy/services.yaml"),
            cold_steps: 500,
            incremental_steps: 200,
            batch: TrainConfig::default().batch_size,
            threads: crate::model::score::all_cores(),
            lr: TrainConfig::default().lr,
            weight_decay: TrainConfig::default().weight_decay,
            shape: GptConfig::default(),
            vocab: Default::default(),
            // Was 30 min with no renewal: a killed trainer blocked every
            // tick for half an hour, and a cycle longer than that could be
            // taken over while still running.
            lease_ms: 30 * 1000,
            digest_debounce: Duration::from_secs(10),
            epoch_wait: EpochWait::default(),
            epoch_check: Duration::from_secs(60),
            seed: 1337,
            id: format!("{}-{}", hostname(), std::process::id()),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "proprio".into())
}

/// Counters a test can read.
#[derive(Debug, Default)]
pub struct TrainerStats {
    pub cycles: AtomicU64,
    pub failed: AtomicU64,
    /// Ticks skipped because another trainer held the lock.
    pub skipped: AtomicU64,
    pub digests: AtomicU64,
}

static CYCLES: Family = Family::counter(
    "proprio_growth_cycles_total",
    "Growth-loop cycles, by outcome (ok, failed, skipped: another trainer held the lock)",
    &["outcome"],
);
static DIGESTS: Family =
    Family::counter("proprio_digests_published_total", "Digests published", &[]);

impl ReadAtScrape for TrainerStats {
    fn report(&self, out: &mut Report) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.add(&CYCLES, &["ok"], g(&self.cycles));
        out.add(&CYCLES, &["failed"], g(&self.failed));
        out.add(&CYCLES, &["skipped"], g(&self.skipped));
        out.add(&DIGESTS, &[], g(&self.digests));
    }
}

/// What a cycle did.
#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    pub version: String,
    pub documents: usize,
    pub kept: usize,
    pub expired: usize,
    pub old_epoch: usize,
    pub cold_start: bool,
    pub steps: usize,
    pub val_loss: f32,
    pub heldout_loss: f32,
    pub flux_scored: usize,
    pub flux_anomalies: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lease {
    holder: String,
    until_ms: i64,
}

pub struct Trainer {
    ctx: Context,
    cfg: TrainerConfig,
    stats: Arc<TrainerStats>,
}

/// GATHER's result: what the cycle learns from.
struct Gathered {
    docs: Vec<Document>,
    fingerprint: String,
    now_ms: i64,
}

impl Trainer {
    pub fn new(ctx: &Context, cfg: TrainerConfig) -> Trainer {
        Trainer {
            ctx: ctx.clone(),
            cfg,
            stats: ctx.metrics.counters(),
        }
    }

    pub fn stats(&self) -> Arc<TrainerStats> {
        self.stats.clone()
    }
}

impl Role for Trainer {
    /// Runs a cycle per tick, and republishes the digest (debounced) when an
    /// incident opens, grows or resolves.
    async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let client = self.ctx.bus.client().clone();
        // A queue group: with several trainers, each tick reaches one of them
        // (the lease covers ticks that still overlap).
        let mut ticks = client
            .queue_subscribe(SUBJECT_TICK_TRAIN, "proprio-trainer".into())
            .await?;
        let mut incidents = client.subscribe(SUBJECT_INCIDENTS_ALL).await?;
        if self.ctx.bus.get(KEY_DIGEST).await?.is_none() {
            self.publish_digest(None).await?;
        }
        let mut last_digest = Instant::now() - self.cfg.digest_debounce;
        let mut digest_due: Option<tokio::time::Instant> = None;
        let mut epoch_check = tokio::time::interval(self.cfg.epoch_check);
        epoch_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recheck = Recheck::default();
        tokio::pin!(shutdown);
        loop {
            let due = digest_due;
            tokio::select! {
                _ = &mut shutdown => break,
                t = ticks.next() => {
                    if t.is_none() { break; }
                    match self.cycle().await {
                        Ok(Some(r)) => tracing::info!(report = ?r, "growth cycle done"),
                        Ok(None) => {}
                        Err(e) => {
                            self.stats.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::error!("growth cycle failed, previous model stays in service: {e:#}");
                        }
                    }
                    last_digest = Instant::now();
                }
                a = incidents.next() => {
                    if a.is_none() { break; }
                    if digest_due.is_none() {
                        let at = last_digest + self.cfg.digest_debounce;
                        digest_due = Some(tokio::time::Instant::from_std(at.max(Instant::now())));
                    }
                }
                _ = epoch_check.tick() => self.check_epoch(&mut recheck).await,
                _ = async { tokio::time::sleep_until(due.unwrap()).await }, if due.is_some() => {
                    digest_due = None;
                    last_digest = Instant::now();
                    let model = model_store::current(&self.ctx.bus).await.ok().flatten();
                    if let Err(e) = self.publish_digest(model.as_ref()).await {
                        tracing::warn!("digest not published: {e:#}");
                    }
                }
            }
        }
        Ok(())
    }
}

impl Trainer {
    /// One growth cycle under the lock; `None` when another trainer holds it.
    pub async fn cycle(&self) -> Result<Option<CycleReport>> {
        let Some(rev) = self.lock().await? else {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            tracing::info!("another trainer holds the lock; tick skipped");
            return Ok(None);
        };
        let rev = AtomicU64::new(rev);
        let out = tokio::select! {
            out = self.cycle_locked() => out,
            never = self.keep_lease(&rev) => match never {},
        };
        self.unlock(rev.load(Ordering::Relaxed)).await;
        if out.is_ok() {
            self.stats.cycles.fetch_add(1, Ordering::Relaxed);
        }
        out.map(Some)
    }

    async fn cycle_locked(&self) -> Result<CycleReport> {
        let metrics = &self.ctx.metrics;
        let h = step(metrics, "harvest", self.gather()).await?;
        let prev = step(metrics, "load previous", self.previous()).await;
        let (v, prev) = {
            let t = Instant::now();
            let _span = tracing::info_span!("growth_step", step = "validate").entered();
            let gates = &self.ctx.shared.gates;
            let v = validate(h.docs.clone(), gates, &h.fingerprint, h.now_ms);
            metrics.growth_step("validate", t.elapsed(), true);
            tracing::info!(
                step = "validate",
                kept = v.kept,
                expired = v.expired,
                old_epoch = v.old_epoch,
                ms = t.elapsed().as_millis() as u64,
                "ok"
            );
            (v, prev.unwrap_or(None))
        };
        let prev_fp = prev.as_ref().map(|p| p.meta.fingerprint.as_str());
        let wait = &self.cfg.epoch_wait;
        super::epoch::gate(
            &self.ctx.bus,
            wait,
            prev_fp,
            &h.docs,
            &h.fingerprint,
            h.now_ms,
        )
        .await?;
        let trained = self.train_and_evaluate(v, prev, &h);
        let (ck, report) = step(metrics, "train+evaluate", trained).await?;
        // A model evaluated on nothing has no calibration and no measured
        // loss: publishing it would replace a working model with a blind one
        // (after a fingerprint change, one trained on registry documents
        // alone). The model in service stays; the next tick tries again.
        anyhow::ensure!(
            report.heldout_loss.is_finite(),
            "EVALUATE scored no telemetry event ({} documents kept, {} of an older epoch dropped): \
             the model is not published and the one in service stays until telemetry of this \
             epoch is harvested",
            report.kept,
            report.old_epoch
        );
        step(metrics, "publish", self.publish(ck, report)).await
    }

    /// Between ticks: the digest follows the baseline's state, and after a
    /// fingerprint change the new epoch's cold start runs once enough of
    /// its telemetry is harvested ([`super::epoch`]).
    async fn check_epoch(&self, r: &mut Recheck) {
        let c = match r.check(&self.ctx, &self.cfg.epoch_wait).await {
            Ok(c) => c,
            Err(e) => return tracing::warn!("fingerprint epoch not checked: {e:#}"),
        };
        if c.digest {
            if let Err(e) = self.publish_digest(c.model.as_ref()).await {
                tracing::warn!("digest not published: {e:#}");
            }
        }
        if !c.cold_start {
            return;
        }
        tracing::info!("enough telemetry of the new epoch: cold start");
        match self.cycle().await {
            Ok(Some(report)) => {
                tracing::info!(report = ?report, "new epoch's model published");
                r.ran(&c, true, &self.cfg.epoch_wait);
            }
            Ok(None) => {}
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                r.ran(&c, false, &self.cfg.epoch_wait);
                tracing::error!("new epoch's cold start failed, the model in service stays: {e:#}");
            }
        }
    }

    /// GATHER: the curriculum window (TTL) from the stream, and the registry.
    async fn gather(&self) -> Result<Gathered> {
        let now = self.ctx.clock.now_ms();
        let gates = &self.ctx.shared.gates;
        let fingerprint = gates.fingerprint()?;
        let since = now - gates.ttl_ms;
        let raw = self
            .ctx
            .bus
            .read_since(STREAM_CURRICULUM, SUBJECT_CURRICULUM_ALL, since)
            .await?;
        let mut docs = Vec::with_capacity(raw.len() + 1024);
        let mut bad = 0usize;
        for (payload, _) in raw {
            match Document::from_msgpack(&payload) {
                Ok(d) => docs.push(d),
                Err(_) => bad += 1,
            }
        }
        if bad > 0 {
            tracing::warn!(bad, "undecodable curriculum documents skipped");
        }
        if self.cfg.registry.exists() {
            let reg = Registry::load(&self.cfg.registry)?;
            docs.extend(Document::of_registry(
                &Renderer::new(&self.ctx.shared.render)?,
                &reg,
                &fingerprint,
                now,
            ));
        }
        Ok(Gathered {
            docs,
            fingerprint,
            now_ms: now,
        })
    }

    /// The model in service, if it can be read; a corrupt one is refused by
    /// its hash and the cycle cold-starts.
    async fn previous(&self) -> Result<Option<Checkpoint>> {
        let Some(n) = model_store::current(&self.ctx.bus).await? else {
            return Ok(None);
        };
        let Some(bytes) = model_store::get(&self.ctx.bus, &n.object).await? else {
            tracing::warn!(object = %n.object, "previous model missing; cold start");
            return Ok(None);
        };
        match tokio::task::spawn_blocking(move || Checkpoint::from_bytes(&bytes)).await? {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                tracing::warn!("previous model refused ({e:#}); cold start");
                Ok(None)
            }
        }
    }

    /// VALIDATE ran already; TRAIN then EVALUATE, on a blocking thread.
    async fn train_and_evaluate(
        &self,
        v: Validated,
        prev: Option<Checkpoint>,
        h: &Gathered,
    ) -> Result<(Checkpoint, CycleReport)> {
        let cfg = self.cfg.clone();
        let shared = self.ctx.shared.clone();
        let metrics = self.ctx.metrics.clone();
        let fp = h.fingerprint.clone();
        let now = h.now_ms;
        let docs = h.docs.len();
        tokio::task::spawn_blocking(move || -> Result<(Checkpoint, CycleReport)> {
            let cold = super::cold_start(prev.as_ref(), &fp, &cfg.shape, &cfg.vocab);
            let tc = TrainConfig {
                steps: if cold {
                    cfg.cold_steps
                } else {
                    cfg.incremental_steps
                },
                batch_size: cfg.batch,
                lr: cfg.lr,
                weight_decay: cfg.weight_decay,
                seed: cfg.seed,
                progress: false,
                ..TrainConfig::default()
            };
            // What the model in service had covered, carried on by an
            // incremental cycle.
            let prev_seen = prev.as_ref().and_then(|p| p.meta.baselines.surprise.seen);
            let t = Instant::now();
            let span = tracing::info_span!("growth_step", step = "train").entered();
            let trained = train(prev, &fp, cfg.shape, &cfg.vocab, &v, &tc);
            metrics.growth_step("train", t.elapsed(), trained.is_ok());
            let trained = trained?;
            let (report, cold) = (trained.report.clone(), trained.cold);
            tracing::info!(
                step = "train",
                cold,
                steps = report.steps,
                loss = report.train_loss,
                ms = t.elapsed().as_millis() as u64,
                "ok"
            );
            drop(span);
            let t = Instant::now();
            let _span = tracing::info_span!("growth_step", step = "evaluate").entered();
            let native = NativeScorer::new(&trained.gpt, cfg.threads);
            let (mut baselines, heldout) = evaluate(&native, &trained.vocab, &v, 64);
            if !cold {
                if let (Some((a, b)), Some(now)) = (prev_seen, baselines.surprise.seen) {
                    baselines.surprise.seen = Surprise::widen(Some(now), a, b);
                }
            }
            let policy = shared.policy.for_model(baselines.surprise.seen_ms());
            let (flux_scored, flux_anomalies) =
                last_flux(&native, &trained.vocab, &v, &baselines, policy.level());
            metrics.growth_step("evaluate", t.elapsed(), true);
            tracing::info!(
                step = "evaluate",
                heldout_loss = heldout,
                signature_events = baselines.surprise.signatures.n,
                flux_scored,
                flux_anomalies,
                ms = t.elapsed().as_millis() as u64,
                "ok"
            );
            let ck = checkpoint(trained, &fp, baselines, now, &shared.render);
            let r = CycleReport {
                version: String::new(),
                documents: docs,
                kept: v.kept,
                expired: v.expired,
                old_epoch: v.old_epoch,
                cold_start: cold,
                steps: report.steps,
                val_loss: report.val_loss.unwrap_or(f32::NAN),
                heldout_loss: heldout,
                flux_scored,
                flux_anomalies,
            };
            Ok((ck, r))
        })
        .await?
    }

    /// PUBLISH: checkpoint to the object store, metadata to KV, the notice
    /// scorers act on, and the digest.
    async fn publish(&self, ck: Checkpoint, mut r: CycleReport) -> Result<CycleReport> {
        let (bytes, ck) =
            tokio::task::spawn_blocking(move || ck.to_bytes().map(|b| (b, ck))).await??;
        let meta = Checkpoint::read_meta(&bytes)?;
        let object = format!("model-{}", meta.version);
        model_store::put(&self.ctx.bus, &object, &bytes).await?;
        let notice = ModelNotice {
            version: meta.version.clone(),
            object,
            sha256: hex::encode(Sha256::digest(&bytes)),
            fingerprint: meta.fingerprint.clone(),
            step: meta.step,
            train_loss: meta.train_loss,
            val_loss: ck.meta.val_loss,
            created_at_ms: self.ctx.clock.now_ms(),
            cold_start: r.cold_start,
        };
        let json = serde_json::to_vec(&notice)?;
        self.ctx.bus.put(KEY_MODEL, json.clone()).await?;
        let m = &self.ctx.metrics;
        m.set_model(&notice.version, notice.created_at_ms);
        m.training_loss
            .with_label_values(&["train"])
            .set(notice.train_loss as f64);
        m.training_loss
            .with_label_values(&["validation"])
            .set(notice.val_loss as f64);
        m.training_loss
            .with_label_values(&["heldout"])
            .set(r.heldout_loss as f64);
        self.announce(SUBJECT_MODEL_PUBLISHED, json).await?;
        self.publish_digest(Some(&notice)).await?;
        r.version = notice.version;
        Ok(r)
    }

    /// Publishes on core NATS and flushes, so the message is out before the
    /// cycle goes on.
    async fn announce(&self, subject: &'static str, payload: impl Into<Bytes>) -> Result<()> {
        let client = self.ctx.bus.client();
        client.publish(subject, payload.into()).await?;
        client.flush().await?;
        Ok(())
    }

    /// Builds the digest from the incidents of the last 24 h and publishes it on
    /// `proprio.digest` and in KV.
    async fn publish_digest(&self, model: Option<&ModelNotice>) -> Result<Digest> {
        let fp = self.ctx.shared.gates.fingerprint().ok();
        let state = super::epoch::state(model, fp.as_deref());
        let model = model.map(|m| (m.version.as_str(), m.val_loss));
        let d = build_digest(&self.ctx.bus, state, model, self.ctx.clock.now_ms()).await?;
        let text = d.text();
        self.ctx.bus.put(KEY_DIGEST, text.clone()).await?;
        self.ctx.bus.put(KEY_DIGEST_JSON, d.to_json()).await?;
        self.announce(SUBJECT_DIGEST, text).await?;
        self.stats.digests.fetch_add(1, Ordering::Relaxed);
        Ok(d)
    }

    /// Takes the lease: created if absent, taken over only when expired.
    async fn lock(&self) -> Result<Option<u64>> {
        let kv = self.ctx.bus.kv().await?;
        let now = self.ctx.clock.now_ms();
        let lease = serde_json::to_vec(&Lease {
            holder: self.cfg.id.clone(),
            until_ms: now + self.cfg.lease_ms,
        })?;
        if let Ok(rev) = kv.create(KEY_TRAINER_LOCK, lease.clone().into()).await {
            return Ok(Some(rev));
        }
        let Some(entry) = kv.entry(KEY_TRAINER_LOCK).await? else {
            return Ok(None);
        };
        let held: Option<Lease> = serde_json::from_slice(&entry.value).ok();
        let expired = match held {
            Some(l) => l.until_ms < now,
            // A deleted (tombstoned) or unreadable lock is free.
            None => true,
        };
        if !expired {
            return Ok(None);
        }
        match kv
            .update(KEY_TRAINER_LOCK, lease.into(), entry.revision)
            .await
        {
            Ok(rev) => Ok(Some(rev)),
            Err(_) => Ok(None),
        }
    }

    /// Renews the lease held at `rev` while the cycle runs; never returns.
    /// A failed renewal (NATS away, or the lease lost to another trainer) is
    /// logged and retried: the cycle itself is not interrupted, since the
    /// worst a second trainer can do is publish a model too.
    async fn keep_lease(&self, rev: &AtomicU64) -> std::convert::Infallible {
        let every = Duration::from_millis((self.cfg.lease_ms / 3).max(50) as u64);
        loop {
            tokio::time::sleep(every).await;
            let lease = serde_json::to_vec(&Lease {
                holder: self.cfg.id.clone(),
                until_ms: self.ctx.clock.now_ms() + self.cfg.lease_ms,
            })
            .unwrap_or_default();
            let renewed = match self.ctx.bus.kv().await {
                Ok(kv) => kv
                    .update(KEY_TRAINER_LOCK, lease.into(), rev.load(Ordering::Relaxed))
                    .await
                    .map_err(anyhow::Error::new),
                Err(e) => Err(e),
            };
            match renewed {
                Ok(r) => rev.store(r, Ordering::Relaxed),
                Err(e) => tracing::warn!("trainer lease not renewed: {e:#}"),
            }
        }
    }

    async fn unlock(&self, rev: u64) {
        let Ok(kv) = self.ctx.bus.kv().await else {
            return;
        };
        // Released by writing an expired lease at our revision: if another
        // trainer took over meanwhile, its lease is left alone.
        let free = serde_json::to_vec(&Lease {
            holder: String::new(),
            until_ms: 0,
        })
        .unwrap_or_default();
        let _ = kv.update(KEY_TRAINER_LOCK, free.into(), rev).await;
    }
}

/// Runs one step, logging its duration and outcome.
async fn step<T>(metrics: &Metrics, name: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
    let t = Instant::now();
    let span = tracing::info_span!("growth_step", step = name);
    let out = tracing::Instrument::instrument(f, span.clone()).await;
    let ms = t.elapsed().as_millis() as u64;
    // "train+evaluate" is recorded as its two parts.
    if !name.contains('+') {
        metrics.growth_step(&name.replace(' ', "_"), t.elapsed(), out.is_ok());
    }
    span.in_scope(|| match &out {
        Ok(_) => tracing::info!(step = name, ms, "ok"),
        Err(e) => tracing::error!(step = name, ms, "failed: {e:#}"),
    });
    out.with_context(|| format!("growth loop step {name}"))
}

/// EVALUATE's last part: the last 50 flux events, scored in context against
/// the new baselines; how many reach the alert level on their own.
fn last_flux(
    native: &NativeScorer,
    vocab: &std::sync::Arc<crate::vocab::Vocab>,
    v: &Validated,
    b: &crate::baseline::Baselines,
    threshold: f32,
) -> (usize, usize) {
    let mut flux: Vec<&Document> = v
        .by_key
        .iter()
        .flat_map(|(docs, _)| docs.iter())
        .filter(|d| d.kind == Some(crate::event::Kind::Flux))
        .collect();
    flux.sort_by_key(|d| d.ts);
    let last: Vec<&Document> = flux.iter().rev().take(50).rev().copied().collect();
    if last.is_empty() {
        return (0, 0);
    }
    // Context: the documents of the same key before each one.
    let mut scorer = crate::scorer::EventScorer::new(
        Renderer::default(),
        vocab.clone(),
        native.config().block_size,
        1 << 16,
    );
    let keys: std::collections::HashSet<&str> = last.iter().map(|d| d.key.as_str()).collect();
    let cutoff = last.first().map(|d| d.ts).unwrap_or(0);
    let mut prepared = Vec::new();
    for (docs, _) in &v.by_key {
        for d in docs.iter().filter(|d| keys.contains(d.key.as_str())) {
            let p = scorer.prepare_text(&d.key, &d.source, d.kind, d.text.clone());
            if d.kind == Some(crate::event::Kind::Flux) && d.ts >= cutoff {
                prepared.push((p, d.ts));
            }
        }
    }
    let items: Vec<_> = prepared.iter().map(|(p, _)| p.item.clone()).collect();
    let losses = native.score(&items, 64);
    // As a scorer that just took the model would score them.
    let mut tails = LiveTails::new(b.surprise.clone());
    let anomalies = prepared
        .iter()
        .zip(&losses)
        .filter(|((p, ts), l)| crosses(score_against(p, l, *ts, &mut tails).score, threshold))
        .count();
    (prepared.len(), anomalies)
}
