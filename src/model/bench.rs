//! `proprio bench`: the engine's speed on this machine, measured the way
//! scripts/bench_ref.py measures the identical model in PyTorch eager, so
//! scripts/bench.sh can put the two side by side. Scoring: events of
//! `--event-tokens` random tokens without context, `--events` of them per
//! measurement, at each batch size; training: `--train-steps` steps of
//! 32 x 128 windows. Each figure is the median of `--runs` runs after one
//! warm-up.

use super::score::{self, NativeScorer, Simd};
use super::train::{train, TrainConfig};
use super::{Gpt, GptConfig, ScoreItem, Stream};
use anyhow::{bail, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Instant;

/// The two forwards measured: the native one (what a scorer runs) and
/// libtorch's, for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Native,
    Libtorch,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Repetitions of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Threads for libtorch and the native scorer (the reference uses the same).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Batch sizes to score at.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256")]
    pub batches: Vec<usize>,
    /// Tokens per scored event.
    #[arg(long, default_value_t = 64)]
    pub event_tokens: usize,
    /// Events scored per measurement.
    #[arg(long, default_value_t = 4096)]
    pub events: usize,
    /// Training steps per measurement (0 skips training).
    #[arg(long, default_value_t = 500)]
    pub train_steps: usize,
    /// Also score with the libtorch engine, for comparison.
    #[arg(long)]
    pub libtorch: bool,
    /// Print one JSON object (for scripts/bench.sh) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScoreFigures {
    pub engine: String,
    pub batch: usize,
    pub events_per_s: f64,
    /// Median and 99th percentile time of one call, microseconds.
    pub p50_us: f64,
    pub p99_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub implementation: String,
    /// The instruction set the native scorer ran on.
    pub simd: String,
    pub threads: usize,
    pub vocab_size: usize,
    pub event_tokens: usize,
    pub params: usize,
    pub score: Vec<ScoreFigures>,
    /// Seconds per training step at 32 x block_size, and for all of them.
    pub train_step_s: Option<f64>,
    pub train_total_s: Option<f64>,
    pub train_steps: usize,
    /// Resident and peak memory after native scoring (what a scorer needs), MB.
    pub score_rss_mb: f64,
    pub score_hwm_mb: f64,
    /// The same after training.
    pub rss_mb: f64,
    pub hwm_mb: f64,
}

/// The engine's figures: what `proprio bench` prints first (the decision
/// stage's figures follow).
pub fn report(args: &BenchArgs) -> Result<BenchReport> {
    if args.runs == 0 || args.event_tokens < 2 || args.events == 0 || args.batches.contains(&0) {
        bail!("runs, events and batches must be positive and event_tokens at least 2");
    }
    super::set_libtorch_threads(args.threads);
    score::keep_freed_memory();
    run(args)
}

fn run(args: &BenchArgs) -> Result<BenchReport> {
    let cfg = GptConfig::default();
    let gpt = Gpt::new(cfg, 1337)?;
    let mut rng = SmallRng::seed_from_u64(7);
    let items: Vec<ScoreItem> = (0..args.events)
        .map(|_| ScoreItem {
            context: Vec::new(),
            event: (0..args.event_tokens)
                .map(|_| rng.gen_range(0..cfg.vocab_size as u32))
                .collect(),
        })
        .collect();
    // The native engine first, and memory read right after it: that is what
    // a scorer process holds. The libtorch engine (optional) comes after.
    let native = NativeScorer::new(&gpt, args.threads);
    let mut engines = vec![Engine::Native];
    if args.libtorch {
        engines.push(Engine::Libtorch);
    }
    let mut figures = Vec::new();
    let (mut score_rss_mb, mut score_hwm_mb) = (f64::NAN, f64::NAN);
    for &engine in &engines {
        for &b in &args.batches {
            let measure = || {
                let mut calls = Vec::with_capacity(args.events / b + 1);
                let t0 = Instant::now();
                for chunk in items.chunks(b) {
                    let t = Instant::now();
                    std::hint::black_box(match engine {
                        Engine::Native => native.score(chunk, b),
                        Engine::Libtorch => score::score_libtorch(&gpt, chunk, b),
                    });
                    calls.push(t.elapsed().as_secs_f64());
                }
                (args.events as f64 / t0.elapsed().as_secs_f64(), calls)
            };
            measure(); // warm-up: buffers grown, pages touched
            let mut runs: Vec<(f64, Vec<f64>)> = (0..args.runs).map(|_| measure()).collect();
            runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (eps, mut calls) = runs.swap_remove(runs.len() / 2);
            calls.sort_by(f64::total_cmp);
            let pct = |q: f64| calls[((calls.len() - 1) as f64 * q).round() as usize] * 1e6;
            figures.push(ScoreFigures {
                engine: format!("{engine:?}").to_lowercase(),
                batch: b,
                events_per_s: eps,
                p50_us: pct(0.5),
                p99_us: pct(0.99),
            });
        }
        if engine == Engine::Native {
            (score_rss_mb, score_hwm_mb) = memory_mb();
        }
    }

    let (mut train_step_s, mut train_total_s) = (None, None);
    if args.train_steps > 0 {
        // One long stream of random tokens with an event every 64 tokens:
        // every window is a full block_size + 1.
        let n = 200_000;
        let stream = Stream {
            tokens: (0..n)
                .map(|_| rng.gen_range(0..cfg.vocab_size as u32))
                .collect(),
            starts: (0..n - cfg.block_size - 1)
                .step_by(64)
                .map(|o| (o, 1.0))
                .collect(),
        };
        let tcfg = TrainConfig {
            steps: args.train_steps,
            batch_size: 32,
            lr: 1e-3,
            val_fraction: 0.0,
            eval_every: 0,
            progress: false,
            ..TrainConfig::default()
        };
        let once = || -> Result<f64> {
            let mut g = Gpt::new(cfg, 1)?;
            Ok(train(&mut g, std::slice::from_ref(&stream), &tcfg)?.seconds)
        };
        let mut warm = TrainConfig {
            steps: 20,
            ..tcfg.clone()
        };
        warm.steps = warm.steps.min(args.train_steps);
        train(&mut Gpt::new(cfg, 1)?, std::slice::from_ref(&stream), &warm)?;
        let mut t: Vec<f64> = (0..args.runs).map(|_| once()).collect::<Result<_>>()?;
        t.sort_by(f64::total_cmp);
        let total = t[t.len() / 2];
        train_total_s = Some(total);
        train_step_s = Some(total / args.train_steps as f64);
    }
    let (rss_mb, hwm_mb) = memory_mb();
    Ok(BenchReport {
        implementation: format!("proprio {}", env!("CARGO_PKG_VERSION")),
        simd: format!("{:?}", Simd::detect()).to_lowercase(),
        threads: args.threads,
        vocab_size: cfg.vocab_size,
        event_tokens: args.event_tokens,
        params: gpt.num_params(),
        score: figures,
        train_step_s,
        train_total_s,
        train_steps: args.train_steps,
        score_rss_mb,
        score_hwm_mb,
        rss_mb,
        hwm_mb,
    })
}

/// VmRSS and VmHWM of this process from /proc/self/status, MB (NaN elsewhere).
pub fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn print_table(r: &BenchReport) {
    println!(
        "proprio bench: d{} model, {} params, vocab {}, {}-token events, {} threads, native scorer on {}, median of runs",
        GptConfig::default().n_embd,
        r.params,
        r.vocab_size,
        r.event_tokens,
        r.threads,
        r.simd
    );
    println!(
        "{:<10} {:>6} {:>12} {:>10} {:>10}",
        "engine", "batch", "events/s", "p50 us", "p99 us"
    );
    for f in &r.score {
        println!(
            "{:<10} {:>6} {:>12.0} {:>10.1} {:>10.1}",
            f.engine, f.batch, f.events_per_s, f.p50_us, f.p99_us
        );
    }
    if let (Some(step), Some(total)) = (r.train_step_s, r.train_total_s) {
        println!(
            "training: {:.1} ms/step at 32x128, {} steps in {:.2} s",
            step * 1e3,
            r.train_steps,
            total
        );
    }
    println!(
        "memory: after scoring RSS {:.0} MB (peak {:.0} MB); after training RSS {:.0} MB (peak {:.0} MB)",
        r.score_rss_mb, r.score_hwm_mb, r.rss_mb, r.hwm_mb
    );
}
