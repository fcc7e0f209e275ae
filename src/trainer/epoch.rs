//! After a fingerprint change. The model in service was trained on an
//! architecture that no longer exists, but it is all there is: it keeps
//! scoring, marked as from the previous epoch (its alerts, the digest), while
//! the new epoch's telemetry is harvested. Its cold start then runs as soon
//! as there is enough of that telemetry to train on and evaluate against
//! ([`EpochWait`]), re-checked every `trainer.epoch_check` instead of at
//! the next training tick (hours away). Until then no cycle publishes: a
//! model trained on the registry's documents and a handful of events would
//! replace a working model with a blind one.
//!
//! The trainer announces the fingerprint it reads in KV `epoch`
//! ([`EpochNotice`]); scorers compare their model's with it.

use crate::bus::Bus;
use crate::context::Context;
use crate::contract::digest::DigestState;
use crate::contract::{
    EpochNotice, ModelNotice, KEY_EPOCH, STREAM_CURRICULUM, SUBJECT_CURRICULUM_ALL,
};
use crate::curriculum::Document;
use crate::model_store;
use crate::units::format_duration_human;
use anyhow::Result;
use std::time::Duration;

/// How much new-epoch telemetry a cold start after a fingerprint change
/// waits for: both at least this many documents (so EVALUATE has held-out
/// events to score) and this long since the change (so they cover more than
/// one burst of each source).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochWait {
    pub min_docs: usize,
    pub min_age: Duration,
}

impl Default for EpochWait {
    fn default() -> Self {
        EpochWait {
            min_docs: 1000,
            min_age: Duration::from_secs(600),
        }
    }
}

impl EpochWait {
    /// Why the cold start must still wait, or None when it may run. At
    /// least one document always: a model is never evaluated on nothing.
    pub fn pending(&self, docs: usize, since_ms: i64, now_ms: i64) -> Option<String> {
        let age = Duration::from_millis((now_ms - since_ms).max(0) as u64);
        let min_docs = self.min_docs.max(1);
        if docs >= min_docs && age >= self.min_age {
            return None;
        }
        Some(format!(
            "{docs} of {min_docs} telemetry documents of the new epoch, {} of {} since it began",
            format_duration_human(age.as_millis() as i64),
            format_duration_human(self.min_age.as_millis() as i64)
        ))
    }
}

/// Which state the baseline is in: no model, a model of the current epoch,
/// or one of a previous epoch. An unreadable current fingerprint is not taken
/// for a change.
pub fn state(model: Option<&ModelNotice>, current_fp: Option<&str>) -> DigestState {
    match (model, current_fp) {
        (None, _) => DigestState::Warming,
        (Some(m), Some(fp)) if m.fingerprint != fp => DigestState::PreviousEpoch,
        (Some(_), _) => DigestState::Trained,
    }
}

/// Harvested telemetry of epoch `fp` (the registry's documents are the
/// trainer's own, made at each cycle: they do not count).
pub fn is_telemetry_of(d: &Document, fp: &str) -> bool {
    d.kind.is_some() && d.fingerprint == fp
}

/// The epoch in KV `epoch`, `fp` written there first when it is not it yet
/// (then since `now_ms`).
pub async fn announce(bus: &Bus, fp: &str, now_ms: i64) -> Result<EpochNotice> {
    if let Some(b) = bus.get(KEY_EPOCH).await? {
        match serde_json::from_slice::<EpochNotice>(&b) {
            Ok(n) if n.fingerprint == fp => return Ok(n),
            Ok(n) => tracing::info!(from = %n.fingerprint, to = %fp, "fingerprint epoch changed"),
            Err(e) => tracing::warn!("replacing a malformed epoch notice: {e}"),
        }
    }
    let n = EpochNotice {
        fingerprint: fp.to_string(),
        since_ms: now_ms,
    };
    bus.put(KEY_EPOCH, serde_json::to_vec(&n)?).await?;
    Ok(n)
}

/// How many telemetry documents of epoch `fp`, stamped `since_ms` or later,
/// the curriculum holds: counted as they stream by, none kept.
pub async fn harvested(bus: &Bus, fp: &str, since_ms: i64) -> Result<usize> {
    let mut n = 0;
    bus.scan_since(
        STREAM_CURRICULUM,
        SUBJECT_CURRICULUM_ALL,
        since_ms,
        |m, _| {
            if let Ok(d) = Document::from_msgpack(&m.payload) {
                if d.ts >= since_ms && is_telemetry_of(&d, fp) {
                    n += 1;
                }
            }
        },
    )
    .await?;
    Ok(n)
}

/// What the trainer remembers from one epoch check to the next.
#[derive(Debug, Default)]
pub(super) struct Recheck {
    /// The baseline state the digest was last published in by a check.
    published: Option<DigestState>,
    /// After an early cold start failed, it is tried again only once this
    /// many new-epoch documents are harvested, not at every check.
    retry_at: usize,
}

/// What an epoch check asks the trainer to do.
#[derive(Debug, Default)]
pub(super) struct Check {
    /// Republish the digest: the baseline's state changed.
    pub digest: bool,
    /// The model in service, for that digest.
    pub model: Option<ModelNotice>,
    /// Run the new epoch's cold start now (not at the next tick).
    pub cold_start: bool,
    docs: usize,
}

impl Recheck {
    /// Announces the epoch and says whether the digest is due and the new
    /// epoch's cold start can run.
    pub(super) async fn check(&mut self, ctx: &Context, wait: &EpochWait) -> Result<Check> {
        let bus = &ctx.bus;
        let fp = ctx.shared.gates.fingerprint()?;
        let now = ctx.clock.now_ms();
        let epoch = announce(bus, &fp, now).await?;
        let model = model_store::current(bus).await?;
        let s = state(model.as_ref(), Some(&fp));
        // At start-up, only a previous epoch is news.
        let digest = self
            .published
            .map_or(s == DigestState::PreviousEpoch, |p| p != s);
        self.published = Some(s);
        let mut c = Check {
            digest,
            model,
            ..Check::default()
        };
        if s != DigestState::PreviousEpoch {
            self.retry_at = 0;
            return Ok(c);
        }
        c.docs = harvested(bus, &fp, now - ctx.shared.gates.ttl_ms).await?;
        match wait.pending(c.docs, epoch.since_ms, now) {
            Some(why) => {
                tracing::info!("previous epoch's model in service; cold start waits: {why}")
            }
            None => c.cold_start = c.docs >= self.retry_at,
        }
        Ok(c)
    }

    /// The early cold start `c` asked for ran: published, or failed (then
    /// the next try waits for as many more documents again).
    pub(super) fn ran(&mut self, c: &Check, published: bool, wait: &EpochWait) {
        if published {
            self.published = Some(DigestState::Trained);
        } else {
            self.retry_at = c.docs + wait.min_docs.max(1);
        }
    }
}

/// Why a cycle whose model in service (`prev_fp`) is of a previous epoch
/// may not go on yet: too little telemetry of the current one in `docs`.
pub(super) async fn gate(
    bus: &Bus,
    wait: &EpochWait,
    prev_fp: Option<&str>,
    docs: &[Document],
    fp: &str,
    now_ms: i64,
) -> Result<()> {
    if prev_fp.is_none_or(|p| p == fp) {
        return Ok(());
    }
    let epoch = announce(bus, fp, now_ms).await?;
    let n = docs.iter().filter(|d| is_telemetry_of(d, fp)).count();
    match wait.pending(n, epoch.since_ms, now_ms) {
        None => Ok(()),
        Some(why) => anyhow::bail!(
            "the fingerprint changed and the new epoch's cold start waits for its telemetry \
             ({why}): nothing is published, the model in service stays (marked as from the \
             previous epoch)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(fp: &str) -> ModelNotice {
        ModelNotice {
            version: "v".into(),
            object: "model-v".into(),
            sha256: String::new(),
            fingerprint: fp.into(),
            step: 1,
            train_loss: 1.0,
            val_loss: 1.0,
            created_at_ms: 0,
            cold_start: true,
        }
    }

    #[test]
    fn the_baseline_state_follows_the_models_epoch() {
        assert_eq!(state(None, Some("a")), DigestState::Warming);
        assert_eq!(state(Some(&notice("a")), Some("a")), DigestState::Trained);
        assert_eq!(
            state(Some(&notice("a")), Some("b")),
            DigestState::PreviousEpoch
        );
        assert_eq!(state(Some(&notice("a")), None), DigestState::Trained);
    }

    #[test]
    fn the_cold_start_waits_for_documents_and_age() {
        let w = EpochWait {
            min_docs: 100,
            min_age: Duration::from_secs(600),
        };
        let since = 1_000_000;
        let later = since + 600_000;
        assert!(w.pending(99, since, later).is_some());
        assert!(w.pending(100, since, later - 1).is_some());
        assert_eq!(w.pending(100, since, later), None);
        let why = w.pending(5, since, since + 61_000).unwrap();
        assert!(
            why.contains("5 of 100") && why.contains("1m1s of 10m"),
            "{why}"
        );
        // Nothing to evaluate on is never enough, whatever the settings.
        let none = EpochWait {
            min_docs: 0,
            min_age: Duration::ZERO,
        };
        assert!(none.pending(0, since, later).is_some());
        assert_eq!(none.pending(1, since, since), None);
    }
}
