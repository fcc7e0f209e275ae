//! `proprio train`: the growth loop's middle steps on an event file.

use super::{checkpoint, evaluate, train, validate};
use crate::curriculum::{Document, Renderer};
use crate::event::read_jsonl;
use crate::freshness::{Gates, HOUR_MS};
use crate::model::checkpoint::Checkpoint;
use crate::model::train::TrainConfig;
use crate::model::GptConfig;
use crate::registry::Registry;
use anyhow::{Context, Result};
use std::path::PathBuf;

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
    /// The configuration's model shape, training settings, rendering and key
    /// files ([model], [trainer], [render], run.key_files); the flags above win.
    #[arg(skip)]
    pub learning: crate::config::Learning,
}

/// Summary of an offline training run (printed as JSON).
#[derive(Debug, serde::Serialize)]
pub struct TrainSummary {
    pub events: usize,
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
}

pub fn gates_for(
    registry: &std::path::Path,
    ttl_hours: f64,
    half_life_hours: f64,
    learning: &crate::config::Learning,
) -> Gates {
    Gates {
        ttl_ms: if ttl_hours > 0.0 {
            (ttl_hours * HOUR_MS as f64) as i64
        } else {
            i64::MAX / 4
        },
        half_life_ms: if half_life_hours > 0.0 {
            (half_life_hours * HOUR_MS as f64) as i64
        } else {
            i64::MAX / 4
        },
        ..learning.gates(registry)
    }
}

/// Trains on events (already read) and returns the checkpoint with a summary.
pub fn train_events(
    events: &[crate::event::Event],
    args: &TrainArgs,
    progress: bool,
) -> Result<(Checkpoint, TrainSummary)> {
    let threads = args.threads.max(1) as usize;
    crate::model::set_libtorch_threads(threads);
    let l = &args.learning;
    let gates = gates_for(&args.registry, args.ttl_hours, args.half_life_hours, l);
    let fp = gates.fingerprint()?;
    let renderer = Renderer::new(&l.render)?;
    let now = events.iter().map(|e| e.ts).max().unwrap_or(0);
    let mut docs: Vec<Document> = events
        .iter()
        .map(|e| Document::of_event(&renderer, e, &fp))
        .collect();
    if args.registry.exists() {
        let reg = Registry::load(&args.registry)?;
        docs.extend(Document::of_registry(&renderer, &reg, &fp, now));
    }
    let v = validate(docs, &gates, &fp, now);
    let prev = match &args.init {
        Some(p) => Some(Checkpoint::load(p)?),
        None => None,
    };
    let cfg = TrainConfig {
        steps: args.steps,
        seed: args.seed,
        progress,
        val_fraction: args.val_fraction,
        batch_size: args.batch_size.unwrap_or(l.batch_size),
        lr: args.lr.unwrap_or(l.lr),
        weight_decay: args.weight_decay.unwrap_or(l.weight_decay),
        ..TrainConfig::default()
    };
    let shape = GptConfig {
        block_size: args.block_size.unwrap_or(l.shape.block_size),
        ..l.shape
    };
    let (gpt, report, cold, step) = train(prev, &fp, shape, &v, &cfg)?;
    let native = crate::model::NativeScorer::new(&gpt, threads);
    let (baselines, heldout) = evaluate(&native, &v, 64);
    let ck = checkpoint(gpt, &fp, step, &report, baselines, now, &l.render);
    let summary = TrainSummary {
        events: events.len(),
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
    };
    Ok((ck, summary))
}

pub fn run(args: TrainArgs) -> Result<()> {
    use std::io::IsTerminal;
    let events = read_jsonl(&args.input)?;
    anyhow::ensure!(
        !events.is_empty(),
        "{} holds no events",
        args.input.display()
    );
    let (ck, summary) = train_events(&events, &args, std::io::stderr().is_terminal())?;
    ck.save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
