//! The growth loop: GATHER → VALIDATE → TRAIN → EVALUATE → PUBLISH (GATHER
//! reads what the harvester role wrote; it is logged as step `harvest`).
//!
//! The steps that do not touch the bus live here, so the offline commands
//! (`proprio train`, `proprio eval`) and the bus trainer run the same code;
//! [`cycle`] adds GATHER and PUBLISH on NATS.

pub mod cycle;
mod digest;
pub mod epoch;
pub mod offline;

use crate::baseline::{Baselines, Surprise};
use crate::curriculum::Document;
use crate::freshness::{Gates, Verdict};
use crate::model::checkpoint::Checkpoint;
use crate::model::gpt::Gpt;
use crate::model::train::{TrainConfig, TrainReport};
use crate::model::{GptConfig, NativeScorer, Stream};
use crate::scorer::EventScorer;
use crate::vocab::learn::{learn, VocabConfig};
use crate::vocab::Vocab;
use std::collections::HashMap;
use std::sync::Arc;

/// Share of each key's most recent documents held out for validation and
/// baselines. Floored here and rounded by training's split (its
/// `val_fraction`, the same share), so every document EVALUATE scores, and
/// fits the shipped surprise tails on, is one no training window starts at.
pub const HOLD_OUT: f64 = 0.1;
/// Most held-out documents scored for baselines, so EVALUATE stays seconds.
pub const MAX_BASELINE_DOCS: usize = 20_000;

/// What VALIDATE leaves to train on.
#[derive(Debug, Default)]
pub struct Validated {
    /// Per key, documents in time order, and where its held-out tail starts.
    pub by_key: Vec<(Vec<Document>, usize)>,
    /// Per key, each document's decay weight.
    pub weights: Vec<Vec<f32>>,
    pub kept: usize,
    pub expired: usize,
    pub old_epoch: usize,
}

/// VALIDATE: the fingerprint epoch, TTL and decay gates, then per-key streams.
pub fn validate(docs: Vec<Document>, gates: &Gates, current_fp: &str, now_ms: i64) -> Validated {
    let mut v = Validated::default();
    let mut keyed: HashMap<String, Vec<(Document, f32)>> = HashMap::new();
    for d in docs {
        match gates.admit(&d.fingerprint, current_fp, d.ts, now_ms) {
            Verdict::Keep(w) => {
                v.kept += 1;
                keyed.entry(d.key.clone()).or_default().push((d, w));
            }
            Verdict::Expired => v.expired += 1,
            Verdict::OldEpoch => v.old_epoch += 1,
        }
    }
    let mut keys: Vec<String> = keyed.keys().cloned().collect();
    keys.sort();
    for k in keys {
        let mut docs = keyed.remove(&k).unwrap_or_default();
        docs.sort_by_key(|(d, _)| d.ts);
        let n = docs.len();
        let held = ((n as f64) * HOLD_OUT).floor() as usize;
        v.weights.push(docs.iter().map(|(_, w)| *w).collect());
        v.by_key
            .push((docs.into_iter().map(|(d, _)| d).collect(), n - held));
    }
    v
}

impl Validated {
    /// One token stream per key in `vocab`, events in time order, weighted by decay.
    pub fn streams(&self, vocab: &Vocab) -> Vec<Stream> {
        self.by_key
            .iter()
            .zip(&self.weights)
            .map(|((docs, _), ws)| {
                let mut s = Stream::default();
                for (d, w) in docs.iter().zip(ws) {
                    s.starts.push((s.tokens.len(), *w));
                    s.tokens.extend(vocab.encode(&d.text));
                }
                s
            })
            .collect()
    }

    /// Every document's text, for learning a vocabulary.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.by_key
            .iter()
            .flat_map(|(docs, _)| docs.iter().map(|d| d.text.as_str()))
    }
}

/// What TRAIN made.
pub struct Trained {
    pub gpt: Gpt,
    pub vocab: Arc<Vocab>,
    pub report: TrainReport,
    pub cold: bool,
    /// Steps taken in total, over all incremental runs.
    pub step: u64,
}

/// The cold-start decision, one for the bus trainer and `proprio train`:
/// no previous model, one trained under another fingerprint, or one of
/// another shape or vocabulary setting than configured (a model from before
/// learned vocabularies, too) starts from scratch.
pub fn cold_start(
    prev: Option<&Checkpoint>,
    current_fp: &str,
    shape: &GptConfig,
    vocab: &VocabConfig,
) -> bool {
    match prev {
        Some(c) => {
            // The vocabulary's size is the checkpoint's own.
            let shape = GptConfig {
                vocab_size: c.gpt.config().vocab_size,
                ..*shape
            };
            crate::freshness::must_cold_start(Some(&c.meta.fingerprint), current_fp)
                || *c.gpt.config() != shape
                || c.meta.vocab.config() != *vocab
        }
        None => true,
    }
}

/// TRAIN: incremental from `prev` (with its vocabulary) when it was
/// trained under `current_fp` and has the configured shape, otherwise a
/// cold start, which first learns a vocabulary from the documents.
pub fn train(
    prev: Option<Checkpoint>,
    current_fp: &str,
    config: GptConfig,
    vocab_cfg: &VocabConfig,
    v: &Validated,
    cfg: &TrainConfig,
) -> anyhow::Result<Trained> {
    anyhow::ensure!(
        v.kept > 0,
        "nothing to train on: every document was filtered out by the freshness gates"
    );
    let (mut gpt, vocab, cold, step0) = match prev {
        Some(c) if !cold_start(Some(&c), current_fp, &config, vocab_cfg) => {
            let step = c.meta.step;
            (c.gpt, c.meta.vocab, false, step)
        }
        _ => {
            let vocab = Arc::new(learn(v.texts(), vocab_cfg)?);
            let shape = GptConfig {
                vocab_size: vocab.len(),
                ..config
            };
            (Gpt::new(shape, cfg.seed)?, vocab, true, 0)
        }
    };
    let report = crate::model::train::train(&mut gpt, &v.streams(&vocab), cfg)?;
    let step = step0 + report.steps as u64;
    Ok(Trained {
        gpt,
        vocab,
        report,
        cold,
        step,
    })
}

/// EVALUATE: scores each key's held-out documents in context and fits the
/// baselines a loss is scored against, and the surprise tails that
/// calibrate the alert decision (shipped in the checkpoint, so every scorer
/// decides against the same calibration). Returns them with the held-out mean loss.
pub fn evaluate(
    native: &NativeScorer,
    vocab: &Arc<Vocab>,
    v: &Validated,
    batch: usize,
) -> (Baselines, f32) {
    let cap_per_key = (MAX_BASELINE_DOCS / v.by_key.len().max(1)).max(20);
    let mut scorer = EventScorer::new(
        crate::curriculum::Renderer::default(),
        vocab.clone(),
        native.config().block_size,
        v.by_key.len() + 1,
    );
    let mut prepared = Vec::new();
    for (docs, held_from) in &v.by_key {
        let first_scored = (*held_from).max(docs.len().saturating_sub(cap_per_key));
        for (i, d) in docs.iter().enumerate() {
            let p = scorer.prepare_text(&d.key, &d.source, d.kind, d.text.clone());
            if i >= first_scored && d.kind.is_some() {
                prepared.push(p);
            }
        }
    }
    let items: Vec<_> = prepared.iter().map(|p| p.item.clone()).collect();
    let losses = native.score(&items, batch);
    let mean = if losses.is_empty() {
        f32::NAN
    } else {
        losses.iter().map(|l| l.loss).sum::<f32>() / losses.len() as f32
    };
    let mut b = Baselines::fit(prepared.iter().zip(&losses).map(|(p, l)| {
        (
            p.key.as_str(),
            p.kind.expect("only event documents are scored"),
            l.loss,
        )
    }));
    let obs: Vec<_> = prepared
        .iter()
        .zip(&losses)
        .map(|(p, l)| {
            (
                p.kind.expect("only event documents are scored"),
                crate::rarity::template_key(&p.rendered, &p.source),
                p.source.as_str(),
                crate::scorer::surprisal(&p.tokens, l),
            )
        })
        .collect();
    b.surprise = Surprise::fit_with_templates(&obs);
    // Every event document, trained on or held out: the count is no
    // claim of the model's ([`crate::signature`]).
    b.surprise.signatures = crate::signature::Signatures::fit(
        v.by_key
            .iter()
            .flat_map(|(docs, _)| docs.iter())
            .filter(|d| d.kind.is_some())
            .map(|d| (d.source.as_str(), d.text.as_str())),
    );
    b.surprise.seen = seen(v);
    (b, mean)
}

/// The first and last event time among the validated documents (the
/// registry's are not telemetry).
pub fn seen(v: &Validated) -> Option<(i64, i64)> {
    let ts = v
        .by_key
        .iter()
        .flat_map(|(docs, _)| docs.iter())
        .filter(|d| d.kind.is_some())
        .map(|d| d.ts);
    ts.fold(None, |acc, t| Surprise::widen(acc, t, t))
}

/// Packs a trained model and its evaluation into a checkpoint.
pub fn checkpoint(
    t: Trained,
    fingerprint: &str,
    baselines: Baselines,
    now_ms: i64,
    render: &crate::curriculum::RenderConfig,
) -> Checkpoint {
    let report = &t.report;
    let mut ck = Checkpoint::new(t.gpt, fingerprint);
    ck.meta.render = render.clone();
    ck.meta.vocab = t.vocab;
    ck.meta.step = t.step;
    ck.meta.train_loss = report.train_loss;
    ck.meta.val_loss = report.val_loss.unwrap_or(f32::NAN);
    ck.meta.baselines = baselines;
    ck.meta.created_at_ms = now_ms;
    ck
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curriculum::{Curriculum, Document};
    use crate::freshness::Gates;

    /// EVALUATE fits the shipped tails on held-out events: none of the
    /// documents it scores starts a training window, for any key size.
    #[test]
    fn evaluate_scores_only_events_no_training_window_starts_at() {
        let doc = |key: &str, i: usize| Document {
            ts: 1_000 + i as i64,
            key: key.into(),
            source: key.into(),
            kind: Some(crate::event::Kind::Log),
            curriculum: Curriculum::Temporal,
            text: format!("<|BOE|><|LOG|><|SVC|>{key}<|MSG|>line {i}<|EOE|>"),
            fingerprint: "fp".into(),
        };
        let docs: Vec<Document> = (1..=40)
            .flat_map(|n| (0..n).map(move |i| doc(&format!("k{n}"), i)))
            .collect();
        let gates = Gates {
            ttl_ms: 3_600_000,
            half_life_ms: 3_600_000,
            key_files: vec![],
            settings: String::new(),
        };
        let v = validate(docs, &gates, "fp", 10_000);
        let val = TrainConfig::default().val_fraction;
        let streams = v.streams(&Vocab::bytes());
        let trained = crate::model::train::training_windows(&streams, 256, val);
        for (s, (docs, held_from)) in v.by_key.iter().enumerate() {
            let starts = &streams[s].starts;
            assert_eq!(starts.len(), docs.len());
            for (o, _) in &starts[*held_from..] {
                assert!(
                    !trained.iter().any(|&(ts, to, _)| ts == s && to == *o),
                    "key {} ({} docs): held-out document at {o} is trained on",
                    docs[0].key,
                    docs.len()
                );
            }
        }
    }
}
