//! `proprio train`: the growth loop's middle steps on an event file.

use super::{checkpoint, evaluate, train, validate};
use crate::config::Learning;
use crate::curriculum::{Document, Renderer, Sample, Sampler};
use crate::event::read_jsonl;
use crate::freshness::{Gates, HOUR_MS};
use crate::model::checkpoint::Checkpoint;
use crate::model::train::TrainConfig;
use crate::registry::Registry;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Arguments of `proprio train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Event file (JSON lines, the wire contract's file form).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the checkpoint.
    #[arg(long)]
    pub out: PathBuf,
    /// Training steps.
    #[arg(long, default_value_t = 500)]
    pub steps: usize,
    /// Continue from this checkpoint (cold start anyway if its fingerprint or its shape differs from the configured).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// The service registry: axiomatic and topology curricula, and the fingerprint.
    #[arg(long, default_value = "deploy/services.yaml")]
    pub registry: PathBuf,
    /// Documents older than this (before the file's last event) are dropped; 0 keeps all.
    #[arg(long, default_value_t = 24.0)]
    pub ttl_hours: f64,
    /// Decay half-life in hours; 0 weighs every document the same.
    #[arg(long, default_value_t = 12.0)]
    pub half_life_hours: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Threads for libtorch.
    #[arg(long, default_value_t = 2)]
    pub threads: i32,
    /// Share of each key's newest events held out of training for validation.
    /// Keep it 0 when keys are short sessions (a block, a request): the tail
    /// of every session would otherwise never be trained on.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f32,
    /// Context window of a cold-started model, in tokens [default: GptConfig's].
    #[arg(long)]
    pub block_size: Option<usize>,
    /// Windows per training step [default: TrainConfig's, 32].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate [default: TrainConfig's, 0.01].
    #[arg(long)]
    pub lr: Option<f64>,
    /// AdamW weight decay of matrices and embeddings [default: TrainConfig's].
    #[arg(long)]
    pub weight_decay: Option<f64>,
}

impl TrainArgs {
    /// The training these flags ask for, on top of the configuration's
    /// learning settings (the flags win).
    pub fn plan(&self, mut learning: Learning) -> Plan {
        learning.shape.block_size = self.block_size.unwrap_or(learning.shape.block_size);
        learning.batch_size = self.batch_size.unwrap_or(learning.batch_size);
        learning.lr = self.lr.unwrap_or(learning.lr);
        learning.weight_decay = self.weight_decay.unwrap_or(learning.weight_decay);
        Plan {
            steps: self.steps,
            init: self.init.clone(),
            registry: self.registry.clone(),
            ttl_hours: self.ttl_hours,
            half_life_hours: self.half_life_hours,
            seed: self.seed,
            threads: self.threads,
            val_fraction: self.val_fraction,
            learning,
        }
    }
}

/// What one offline training needs, whoever asks for it (`proprio train`,
/// `proprio eval`); the command lines are only two ways to fill it in.
#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: usize,
    /// Continue from this checkpoint (cold start anyway if its fingerprint or shape differs).
    pub init: Option<PathBuf>,
    /// The service registry: axiomatic and topology curricula, and the fingerprint.
    pub registry: PathBuf,
    /// Documents older than this (before the last event) are dropped; 0 keeps all.
    pub ttl_hours: f64,
    /// Decay half-life; 0 weighs every document the same.
    pub half_life_hours: f64,
    pub seed: u64,
    /// Threads for libtorch.
    pub threads: i32,
    /// Share of each key's newest events held out of training for validation.
    pub val_fraction: f32,
    /// Model shape (of a cold start), training settings, rendering and key files.
    pub learning: Learning,
}

impl Plan {
    /// The freshness gates; a zero TTL or half-life turns that gate off.
    fn gates(&self) -> Gates {
        let hours = |h: f64| {
            if h > 0.0 {
                (h * HOUR_MS as f64) as i64
            } else {
                i64::MAX / 4
            }
        };
        Gates {
            ttl_ms: hours(self.ttl_hours),
            half_life_ms: hours(self.half_life_hours),
            ..self.learning.gates(&self.registry)
        }
    }
}

/// Summary of an offline training run (printed as JSON).
#[derive(Debug, serde::Serialize)]
pub struct TrainSummary {
    pub events: usize,
    /// Events the harvester's sampler would have left out of the
    /// curriculum: over their source's per-minute budget, or a pulse
    /// repeating its key's previous one ([`crate::curriculum::Sampler`]).
    pub sampled_out: usize,
    pub collapsed: usize,
    pub kept: usize,
    pub expired: usize,
    pub keys: usize,
    pub cold_start: bool,
    pub steps: usize,
    pub train_loss: f32,
    pub val_loss: f32,
    /// (step, validation loss) every `eval_every` steps: how far from
    /// converged the model is (the engine's target: step 500 within 5 % of
    /// step 2000).
    pub val_curve: Vec<(usize, f32)>,
    pub heldout_loss: f32,
    pub seconds: f64,
    pub fingerprint: String,
    pub version: String,
    /// Tokens of the model's vocabulary: bytes and specials, learned names, merges.
    pub vocab: (usize, usize, usize),
    /// Mean tokens per event by kind, in the model's vocabulary and in bytes
    /// (over at most [`TOKEN_SAMPLE`] documents).
    pub tokens_per_event: std::collections::BTreeMap<String, (f32, f32)>,
}

/// Documents sampled for [`TrainSummary::tokens_per_event`].
const TOKEN_SAMPLE: usize = 20_000;

fn tokens_per_event(
    v: &super::Validated,
    vocab: &crate::vocab::Vocab,
) -> std::collections::BTreeMap<String, (f32, f32)> {
    let docs: Vec<&Document> = v.by_key.iter().flat_map(|(d, _)| d).collect();
    let every = (docs.len() / TOKEN_SAMPLE).max(1);
    let bytes = crate::vocab::Vocab::bytes();
    let mut sums: std::collections::BTreeMap<String, (f64, f64, usize)> = Default::default();
    for d in docs.iter().step_by(every) {
        let Some(kind) = d.kind else { continue };
        let e = sums.entry(kind.as_str().to_string()).or_default();
        e.0 += vocab.encode(&d.text).len() as f64;
        e.1 += bytes.encode(&d.text).len() as f64;
        e.2 += 1;
    }
    sums.into_iter()
        .map(|(k, (a, b, n))| (k, ((a / n as f64) as f32, (b / n as f64) as f32)))
        .collect()
}

/// Trains on events (already read) and returns the checkpoint with a summary.
pub fn train_events(
    events: &[crate::event::Event],
    plan: &Plan,
    progress: bool,
) -> Result<(Checkpoint, TrainSummary)> {
    let threads = plan.threads.max(1) as usize;
    crate::model::set_libtorch_threads(threads);
    let l = &plan.learning;
    let gates = plan.gates();
    let fp = gates.fingerprint()?;
    let renderer = Renderer::new(&l.render)?;
    let now = events.iter().map(|e| e.ts).max().unwrap_or(0);
    // The curriculum the live harvester would have published from these
    // events: every event rendered (the scaler walks them all), then
    // sampled by the harvester's rule.
    let mut scaler = renderer.scaler();
    let mut sampler = Sampler::new(l.sampling);
    let mut docs: Vec<Document> = Vec::with_capacity(events.len());
    let (mut sampled_out, mut collapsed) = (0usize, 0usize);
    for e in events {
        let doc = Document::of_event(&renderer, &mut scaler, e, &fp);
        match sampler.admit(e, &doc.text) {
            Sample::Keep => docs.push(doc),
            Sample::OverBudget => sampled_out += 1,
            Sample::Collapsed => collapsed += 1,
        }
    }
    if plan.registry.exists() {
        let reg = Registry::load(&plan.registry)?;
        docs.extend(Document::of_registry(&renderer, &reg, &fp, now));
    }
    let v = validate(docs, &gates, &fp, now);
    let prev = match &plan.init {
        Some(p) => Some(Checkpoint::load(p)?),
        None => None,
    };
    let cfg = TrainConfig {
        steps: plan.steps,
        seed: plan.seed,
        progress,
        val_fraction: plan.val_fraction,
        batch_size: l.batch_size,
        lr: l.lr,
        weight_decay: l.weight_decay,
        ..TrainConfig::default()
    };
    let t = train(prev, &fp, l.shape, &l.vocab, &v, &cfg)?;
    let native = crate::model::NativeScorer::new(&t.gpt, threads);
    let (baselines, heldout) = evaluate(&native, &t.vocab, &v, 64);
    let (cold, report) = (t.cold, t.report.clone());
    let (names, merges) = t.vocab.learned();
    let vocab = (crate::vocab::FIRST_LEARNED as usize, names, merges);
    let per_kind = tokens_per_event(&v, &t.vocab);
    let ck = checkpoint(t, &fp, baselines, now, &l.render);
    let summary = TrainSummary {
        events: events.len(),
        sampled_out,
        collapsed,
        kept: v.kept,
        expired: v.expired,
        keys: v.by_key.len(),
        cold_start: cold,
        steps: report.steps,
        train_loss: report.train_loss,
        val_loss: report.val_loss.unwrap_or(f32::NAN),
        val_curve: report.val_curve.clone(),
        heldout_loss: heldout,
        seconds: report.seconds,
        fingerprint: fp,
        version: ck.meta.version.clone(),
        vocab,
        tokens_per_event: per_kind,
    };
    Ok((ck, summary))
}

/// `proprio train`: `learning` is the configuration's, under the flags.
pub fn run(args: TrainArgs, learning: Learning) -> Result<()> {
    use std::io::IsTerminal;
    let events = read_jsonl(&args.input)?;
    anyhow::ensure!(
        !events.is_empty(),
        "{} holds no events",
        args.input.display()
    );
    let plan = args.plan(learning);
    let (ck, summary) = train_events(&events, &plan, std::io::stderr().is_terminal())?;
    ck.save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
