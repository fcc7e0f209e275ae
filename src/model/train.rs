//! Training: AdamW on windows of `block_size + 1` tokens that start where an
//! event starts, the way a scored event sees its context. Windows are drawn
//! in proportion to their first event's freshness weight, so stale telemetry
//! fades out of the model instead of being cut off; a weight of 0 is never
//! drawn. The last `val_fraction` of each stream's events (the newest) is
//! held out and evaluated on a fixed set of windows, so validation losses
//! from different steps are comparable.

use super::gpt::{Gpt, Net, NO_DECAY_GROUP};
use super::Stream;
use anyhow::{anyhow, bail, Context, Result};
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::io::{IsTerminal, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};
use tch::nn::OptimizerConfig;
use tch::{nn, Kind, Reduction, Tensor};

/// Targets with this value are padding and carry no loss.
const IGNORE: i64 = -100;

#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    /// Peak learning rate, reached after the warm-up.
    pub lr: f64,
    pub weight_decay: f64,
    /// Share of each stream's events, the newest, held out for validation.
    pub val_fraction: f32,
    pub seed: u64,
    /// Steps between validation evaluations (0: only at the start and end).
    pub eval_every: usize,
    /// Size of the fixed validation set, in batches of `batch_size` windows.
    pub eval_batches: usize,
    /// A progress bar on stderr, drawn only when stderr is a terminal.
    pub progress: bool,
}

impl Default for TrainConfig {
    /// A tiny model tolerates a high learning rate; with a short warm-up and
    /// a cosine decay to a tenth of it, validation loss flattens within a
    /// few hundred steps (tests/it/model.rs checks the 500-vs-2000 criterion on
    /// synthetic telemetry).
    fn default() -> Self {
        TrainConfig {
            steps: 500,
            batch_size: 32,
            lr: 1e-2,
            weight_decay: 0.1,
            val_fraction: 0.1,
            seed: 1337,
            eval_every: 100,
            eval_batches: 4,
            progress: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    pub steps: usize,
    /// Mean training loss over the last steps (up to 50), a smoothed final value.
    pub train_loss: f32,
    /// Final validation loss; None when no event could be held out.
    pub val_loss: Option<f32>,
    /// Training loss of every step, in order.
    pub losses: Vec<f32>,
    /// (steps taken, validation loss), from step 0 (before any update).
    pub val_curve: Vec<(usize, f32)>,
    pub train_windows: usize,
    pub val_windows: usize,
    pub seconds: f64,
}

/// A window: `tokens[start..end]` of one stream, at most block_size + 1 long.
#[derive(Debug, Clone, Copy)]
struct Window {
    stream: usize,
    start: usize,
    end: usize,
}

/// Candidate training windows with their weights, and the validation windows.
struct Split {
    train: Vec<Window>,
    weights: Vec<f32>,
    val: Vec<Window>,
}

/// Splits each stream's events into training (older) and validation (the
/// newest `val_fraction`), one window per usable event. An event is usable
/// when its weight is positive and finite and its window has a target; a
/// training window stops where the stream's validation part begins.
fn split(streams: &[Stream], block_size: usize, val_fraction: f32) -> Split {
    let mut s = Split {
        train: Vec::new(),
        weights: Vec::new(),
        val: Vec::new(),
    };
    let frac = if val_fraction.is_finite() {
        val_fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    for (si, st) in streams.iter().enumerate() {
        let len = st.tokens.len();
        let mut starts: Vec<(usize, f32)> = st
            .starts
            .iter()
            .copied()
            .filter(|&(o, _)| o < len)
            .collect();
        starts.sort_by_key(|&(o, _)| o);
        starts.dedup_by_key(|&mut (o, _)| o);
        let n_val = ((starts.len() as f64) * frac as f64).round() as usize;
        let first_val = starts.len() - n_val.min(starts.len());
        let boundary = starts.get(first_val).map_or(len, |&(o, _)| o);
        for (i, &(o, w)) in starts.iter().enumerate() {
            if !(w.is_finite() && w > 0.0) {
                continue;
            }
            let limit = if i < first_val { boundary } else { len };
            let event_end = starts.get(i + 1).map_or(len, |&(n, _)| n).min(limit);
            // An event weighs the same however many windows it has.
            let share = w / event_windows(o, event_end, block_size).count() as f32;
            for start in event_windows(o, event_end, block_size) {
                let end = limit.min(start + block_size + 1);
                if end < start + 2 {
                    continue;
                }
                let win = Window {
                    stream: si,
                    start,
                    end,
                };
                if i < first_val {
                    s.train.push(win);
                    s.weights.push(share);
                } else {
                    s.val.push(win);
                }
            }
        }
    }
    s
}

/// Where the windows of the event at `start..end` begin: at its start, and,
/// for an event longer than the block, every half block after it, because
/// that is where the scorer's windows over its later tokens begin
/// (`model::score::plan`: each scores the next `block_size / 2` positions
/// with the `block_size` tokens that end there). Trained only from its
/// start, a wide metric row's tokens past the block were scored by inputs
/// the model never saw: loss 1.42 where validation said 0.064.
fn event_windows(start: usize, end: usize, block_size: usize) -> impl Iterator<Item = usize> {
    let stride = (block_size / 2).max(1);
    let long = end > start + block_size + 1;
    std::iter::once(start).chain(
        (1..)
            .map(move |k| start + k * stride)
            .take_while(move |&o| long && o + block_size < end + stride),
    )
}

/// The windows used for training: every candidate with its weight, for tests
/// and diagnostics. `(stream, start offset, weight)`.
pub fn training_windows(
    streams: &[Stream],
    block_size: usize,
    val_fraction: f32,
) -> Vec<(usize, usize, f32)> {
    let s = split(streams, block_size, val_fraction);
    s.train
        .iter()
        .zip(&s.weights)
        .map(|(w, &p)| (w.stream, w.start, p))
        .collect()
}

/// Draws `steps * batch_size` window starts exactly as [`train`] does with
/// this config, for tests of the sampling: `(stream, start offset)`.
pub fn sample_windows(
    streams: &[Stream],
    block_size: usize,
    cfg: &TrainConfig,
) -> Result<Vec<(usize, usize)>> {
    let s = split(streams, block_size, cfg.val_fraction);
    let mut sampler = Sampler::new(&s, cfg.seed)?;
    Ok((0..cfg.steps * cfg.batch_size)
        .map(|_| sampler.draw(&s))
        .map(|w| (w.stream, w.start))
        .collect())
}

struct Sampler {
    rng: SmallRng,
    dist: WeightedIndex<f32>,
}

impl Sampler {
    fn new(s: &Split, seed: u64) -> Result<Sampler> {
        if s.train.is_empty() {
            bail!("nothing to train on: no event has a positive weight and at least two tokens before the validation slice");
        }
        let dist = WeightedIndex::new(&s.weights).context("sampling weights")?;
        Ok(Sampler {
            rng: SmallRng::seed_from_u64(seed),
            dist,
        })
    }

    fn draw(&mut self, s: &Split) -> Window {
        s.train[self.dist.sample(&mut self.rng)]
    }
}

/// Inputs (B, T) and targets (B, T) for some windows, T the longest window
/// less one; short windows are padded with PAD inputs and ignored targets.
fn batch(streams: &[Stream], wins: &[Window], pad: i64) -> (Tensor, Tensor) {
    let t = wins.iter().map(|w| w.end - w.start - 1).max().unwrap_or(1);
    let b = wins.len();
    let mut x = vec![pad; b * t];
    let mut y = vec![IGNORE; b * t];
    for (r, w) in wins.iter().enumerate() {
        let toks = &streams[w.stream].tokens[w.start..w.end];
        for (p, pair) in toks.windows(2).enumerate() {
            x[r * t + p] = pair[0] as i64;
            y[r * t + p] = pair[1] as i64;
        }
    }
    let shape = [b as i64, t as i64];
    (
        Tensor::from_slice(&x).view(shape),
        Tensor::from_slice(&y).view(shape),
    )
}

/// One shard of a step's batch: its loss summed and divided by the whole
/// batch's target count, so the shards' losses and gradients add up to the
/// batch mean's, and the gradient of each variable (in the store's order).
struct ShardOut {
    loss: f64,
    grads: Vec<Tensor>,
}

fn shard_step(
    net: &Net,
    vars: &[Tensor],
    streams: &[Stream],
    wins: &[Window],
    pad: i64,
    targets: f64,
) -> Result<ShardOut> {
    let (x, y) = batch(streams, wins, pad);
    let l = loss(&net.forward(&x), &y, Reduction::Sum) / targets;
    let grads = Tensor::f_run_backward(&[&l], vars, false, false)?;
    Ok(ShardOut {
        loss: f64::try_from(&l)?,
        grads,
    })
}

/// A step's batch split over threads, each running its shard's forward and
/// backward with libtorch's intra-op threads at 1. At this model's size an
/// op is a few microseconds to a millisecond, and libtorch's pool pays a
/// wake-up and a barrier for every one of them (several hundred a step);
/// whole shards on their own threads keep both cores busy without either.
/// With one thread the shard runs here, on the caller's thread.
struct Shards<'scope, 'env> {
    workers: Vec<Worker<'scope>>,
    local: Option<Net>,
    vars: &'env [Tensor],
    streams: &'env [Stream],
    pad: i64,
}

struct Worker<'scope> {
    jobs: mpsc::Sender<(Vec<Window>, f64)>,
    done: mpsc::Receiver<Result<ShardOut>>,
    handle: ScopedJoinHandle<'scope, ()>,
}

impl<'scope, 'env> Shards<'scope, 'env> {
    fn start(
        scope: &'scope Scope<'scope, 'env>,
        net: &Net,
        vars: &'env [Tensor],
        streams: &'env [Stream],
        pad: i64,
        n: usize,
    ) -> Shards<'scope, 'env> {
        if n <= 1 {
            return Shards {
                workers: Vec::new(),
                local: Some(net.shallow_clone()),
                vars,
                streams,
                pad,
            };
        }
        let restore = tch::get_num_threads();
        let (ready_tx, ready_rx) = mpsc::channel();
        let workers: Vec<Worker<'scope>> = (0..n)
            .map(|_| {
                let (jobs, job_rx) = mpsc::channel::<(Vec<Window>, f64)>();
                let (done_tx, done) = mpsc::channel();
                let net = net.shallow_clone();
                let my_vars: Vec<Tensor> = vars.iter().map(Tensor::shallow_clone).collect();
                let ready = ready_tx.clone();
                let handle = scope.spawn(move || {
                    // libtorch takes a thread's count from the process-wide
                    // setting at the thread's first op: take it now, so the
                    // 1 set next is not read over later.
                    let _ = tch::get_num_threads();
                    tch::set_num_threads(1);
                    let _ = ready.send(());
                    while let Ok((wins, targets)) = job_rx.recv() {
                        let out = catch_unwind(AssertUnwindSafe(|| {
                            shard_step(&net, &my_vars, streams, &wins, pad, targets)
                        }))
                        .unwrap_or_else(|_| Err(anyhow!("a training shard panicked in libtorch")));
                        if done_tx.send(out).is_err() {
                            break;
                        }
                    }
                });
                Worker { jobs, done, handle }
            })
            .collect();
        drop(ready_tx);
        for _ in 0..n {
            let _ = ready_rx.recv();
        }
        // Setting 1 above also set the process-wide value; threads started
        // later (and this one) keep the configured count.
        tch::set_num_threads(restore);
        Shards {
            workers,
            local: None,
            vars,
            streams,
            pad,
        }
    }

    /// Runs one step's windows, split in order into at most one shard per
    /// thread; the results come back in the same order.
    fn run(&mut self, wins: &[Window]) -> Result<Vec<ShardOut>> {
        let targets = wins
            .iter()
            .map(|w| (w.end - w.start - 1) as f64)
            .sum::<f64>();
        if let Some(net) = &self.local {
            return Ok(vec![shard_step(
                net,
                self.vars,
                self.streams,
                wins,
                self.pad,
                targets,
            )?]);
        }
        let per = wins.len().div_ceil(self.workers.len()).max(1);
        let mut sent = 0;
        for (w, chunk) in self.workers.iter().zip(wins.chunks(per)) {
            w.jobs
                .send((chunk.to_vec(), targets))
                .map_err(|_| anyhow!("a training thread stopped"))?;
            sent += 1;
        }
        self.workers[..sent]
            .iter()
            .map(|w| {
                w.done
                    .recv()
                    .map_err(|_| anyhow!("a training thread stopped"))?
            })
            .collect()
    }
}

impl Drop for Shards<'_, '_> {
    /// Ends the threads (their job queues close) and waits for them.
    fn drop(&mut self) {
        for w in self.workers.drain(..) {
            drop(w.jobs);
            let _ = w.handle.join();
        }
    }
}

/// Gives every variable a gradient tensor, so [`set_grads`] can write each
/// step's into it in place (where the optimizer and clipping read it).
fn define_grads(vars: &[Tensor]) {
    if let Some(total) = vars.iter().map(|v| v.sum(Kind::Float)).reduce(|a, b| a + b) {
        (total * 0.0).backward();
    }
}

/// Each variable's gradient: the shards' gradients added in shard order, so
/// a step is deterministic for a thread count.
fn set_grads(vars: &[Tensor], outs: &[ShardOut]) {
    tch::no_grad(|| {
        for (i, v) in vars.iter().enumerate() {
            let mut g = v.grad();
            let mut first = true;
            for o in outs {
                let s = &o.grads[i];
                if !s.defined() {
                    continue;
                }
                if first {
                    g.copy_(s);
                    first = false;
                } else {
                    let _ = g.g_add_(s);
                }
            }
            if first {
                let _ = g.zero_();
            }
        }
    })
}

/// Mean cross-entropy over the non-padding targets: logits (B, T, V), targets (B, T).
fn loss(logits: &Tensor, targets: &Tensor, reduction: Reduction) -> Tensor {
    let v = logits.size().last().copied().unwrap_or(1);
    logits.view([-1, v]).cross_entropy_loss::<Tensor>(
        &targets.view([-1]),
        None,
        reduction,
        IGNORE,
        0.0,
    )
}

/// Learning rate at `step`: linear warm-up over the first 5 % of the run (at
/// most 100 steps), then a cosine decay to a tenth of the peak at the end.
fn lr_at(step: usize, steps: usize, peak: f64) -> f64 {
    let warmup = (steps / 20).clamp(1, 100);
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (steps - warmup).max(1) as f64;
    let min = peak / 10.0;
    min + (peak - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

/// Trains `gpt` in place for `cfg.steps` steps, continuing from its current
/// weights (a loaded checkpoint trains incrementally; the optimizer's moments
/// start afresh, which the warm-up absorbs). Deterministic for a seed and a
/// thread count.
pub fn train(gpt: &mut Gpt, streams: &[Stream], cfg: &TrainConfig) -> Result<TrainReport> {
    let mcfg = *gpt.config();
    if cfg.batch_size == 0 {
        bail!("batch_size must be positive");
    }
    for (i, st) in streams.iter().enumerate() {
        if let Some(&t) = st.tokens.iter().find(|&&t| t as usize >= mcfg.vocab_size) {
            bail!(
                "stream {i}: token id {t} is outside the model's vocabulary of {}",
                mcfg.vocab_size
            );
        }
    }
    let s = split(streams, mcfg.block_size, cfg.val_fraction);
    let mut sampler = Sampler::new(&s, cfg.seed)?;
    let pad = {
        let p = crate::tokenizer::tokenizer().special("<|PAD|>") as usize;
        if p < mcfg.vocab_size {
            p as i64
        } else {
            0
        }
    };
    // The fixed validation set: evenly spaced over the held-out windows.
    let n_val = s.val.len().min(cfg.eval_batches * cfg.batch_size);
    let val_wins: Vec<Window> = (0..n_val).map(|i| s.val[i * s.val.len() / n_val]).collect();
    let val_batches: Vec<(Tensor, Tensor)> = val_wins
        .chunks(cfg.batch_size)
        .map(|c| batch(streams, c, pad))
        .collect();

    let opt_cfg = nn::AdamW {
        beta1: 0.9,
        beta2: 0.95,
        wd: cfg.weight_decay,
        eps: 1e-8,
        amsgrad: false,
    };
    let mut opt = opt_cfg.build(gpt.var_store(), cfg.lr)?;
    opt.set_weight_decay_group(NO_DECAY_GROUP, 0.0);

    let started = Instant::now();
    let mut bar = Progress::new(cfg.progress, cfg.steps);
    let mut report = TrainReport {
        steps: cfg.steps,
        train_loss: f32::NAN,
        val_loss: None,
        losses: Vec::with_capacity(cfg.steps),
        val_curve: Vec::new(),
        train_windows: s.train.len(),
        val_windows: s.val.len(),
        seconds: 0.0,
    };
    let evaluate = |gpt: &Gpt| -> Option<f32> {
        if val_batches.is_empty() {
            return None;
        }
        tch::no_grad(|| {
            let (mut sum, mut count) = (0.0f64, 0i64);
            for (x, y) in &val_batches {
                sum += f64::try_from(loss(&gpt.forward(x), y, Reduction::Sum)).unwrap_or(f64::NAN);
                count += i64::try_from(y.ne(IGNORE).sum(tch::Kind::Int64)).unwrap_or(0);
            }
            Some((sum / count.max(1) as f64) as f32)
        })
    };
    if cfg.eval_every > 0 {
        if let Some(v) = evaluate(gpt) {
            report.val_curve.push((0, v));
        }
    }
    let vars = gpt.var_store().trainable_variables();
    define_grads(&vars);
    let threads = tch::get_num_threads().max(1) as usize;
    let run = std::thread::scope(|scope| -> Result<()> {
        let n = threads.min(cfg.batch_size);
        let mut shards = Shards::start(scope, gpt.net(), &vars, streams, pad, n);
        let mut wins = Vec::with_capacity(cfg.batch_size);
        for step in 0..cfg.steps {
            opt.set_lr(lr_at(step, cfg.steps, cfg.lr));
            wins.clear();
            wins.extend((0..cfg.batch_size).map(|_| sampler.draw(&s)));
            let outs = shards.run(&wins)?;
            set_grads(&vars, &outs);
            opt.clip_grad_norm(1.0);
            opt.step();
            let lv = outs.iter().map(|o| o.loss).sum::<f64>() as f32;
            if !lv.is_finite() {
                bar.end_line();
                bail!("training diverged at step {step}: loss {lv} (lower the learning rate)");
            }
            report.losses.push(lv);
            let done = step + 1;
            if (cfg.eval_every > 0 && done % cfg.eval_every == 0) || done == cfg.steps {
                if let Some(v) = evaluate(gpt) {
                    if report.val_curve.last().map(|&(s, _)| s) != Some(done) {
                        report.val_curve.push((done, v));
                    }
                    tracing::debug!(step = done, train_loss = lv, val_loss = v, "validation");
                }
            }
            bar.tick(done, lv);
        }
        Ok(())
    });
    run?;
    bar.end_line();
    let tail = &report.losses[report.losses.len().saturating_sub(50)..];
    if !tail.is_empty() {
        report.train_loss = tail.iter().sum::<f32>() / tail.len() as f32;
    }
    report.val_loss = match report.val_curve.last() {
        Some(&(_, v)) => Some(v),
        None => evaluate(gpt),
    };
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A one-line progress bar on stderr, redrawn at most ten times a second,
/// and only when stderr is a terminal (logs and pipes stay clean).
struct Progress {
    on: bool,
    total: usize,
    started: Instant,
    drawn: Option<Instant>,
}

impl Progress {
    fn new(wanted: bool, total: usize) -> Progress {
        Progress {
            on: wanted && std::io::stderr().is_terminal(),
            total,
            started: Instant::now(),
            drawn: None,
        }
    }

    fn tick(&mut self, step: usize, loss: f32) {
        if !self.on
            || (step < self.total
                && self
                    .drawn
                    .is_some_and(|d| d.elapsed() < Duration::from_millis(100)))
        {
            return;
        }
        self.drawn = Some(Instant::now());
        const WIDTH: usize = 30;
        let filled = WIDTH * step / self.total.max(1);
        let rate = step as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] step {step}/{} loss {loss:.4} {rate:.1} steps/s ",
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            self.total
        );
        let _ = err.flush();
    }

    /// Ends the bar's line, so what is printed next starts on its own.
    fn end_line(&mut self) {
        if self.on && self.drawn.is_some() {
            eprintln!();
            self.drawn = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GptConfig;

    fn losses(threads: i32, streams: &[Stream]) -> Vec<f32> {
        let _ = tch::get_num_threads();
        tch::set_num_threads(threads);
        let cfg = GptConfig {
            block_size: 32,
            ..GptConfig::default()
        };
        let mut gpt = Gpt::new(cfg, 5).unwrap();
        let tc = TrainConfig {
            steps: 6,
            batch_size: 7,
            eval_every: 0,
            progress: false,
            ..TrainConfig::default()
        };
        train(&mut gpt, streams, &tc).unwrap().losses
    }

    /// The batch split over threads is the same step: its losses follow the
    /// one-thread run's (to float rounding, the sum's order differs) and are
    /// reproducible for a thread count.
    #[test]
    fn sharded_steps_match_one_thread() {
        let mut rng = SmallRng::seed_from_u64(9);
        let streams: Vec<Stream> = (0..2)
            .map(|_| {
                let tokens: Vec<u32> = (0..3000)
                    .map(|_| rand::Rng::gen_range(&mut rng, 0..40))
                    .collect();
                // Uneven events, so shards get windows of different lengths.
                let starts = (0..2950).step_by(23).map(|o| (o, 1.0)).collect();
                Stream { tokens, starts }
            })
            .collect();
        let one = losses(1, &streams);
        let two = losses(2, &streams);
        let three = losses(3, &streams);
        tch::set_num_threads(1);
        assert_eq!(one.len(), 6);
        for (a, b) in one.iter().zip(&two).chain(one.iter().zip(&three)) {
            assert!(
                (a - b).abs() < 1e-4 * a.abs().max(1.0),
                "{one:?} vs {two:?} vs {three:?}"
            );
        }
        assert_eq!(two, losses(2, &streams));
        tch::set_num_threads(1);
    }
}
