//! Per-event scoring: the loss of each event's own tokens, given the events
//! before it, and the entropy of the model's prediction of each.
//!
//! Two engines compute the same numbers. [`NativeScorer`] (what every caller
//! uses) is a hand-written forward over a copy of the weights: at this
//! model's size (d 32, 2 layers) a libtorch call is mostly per-op dispatch,
//! and a batched call moves padding and full-vocabulary logits it does not
//! need (here, one 64-token event: about 340 us through libtorch, 80 us
//! native, one thread). The native forward runs each event through
//! register-tiled SIMD kernels, computes the last block and the head only at
//! the positions that predict the event's own tokens, never pads, and splits
//! a batch across threads by events rather than inside each op.
//! [`score_libtorch`] is the tch forward ([`Gpt::forward_hidden`] +
//! [`Gpt::head`]) and the reference the native one is tested against
//! (within 1e-4 per token).
//!
//! The parts: `plan` cuts events into windows (both engines), `weights`
//! copies the weights into the kernels' layout, `forward` is the native
//! forward, `elementwise` its LayerNorm, softmax, GELU, cross-entropy and
//! entropy,
//! and `kernels` the SIMD matrix products with every `unsafe` of the model.

mod elementwise;
mod forward;
mod kernels;
mod plan;
mod weights;

pub use kernels::{keep_freed_memory, Simd};

use super::gpt::Gpt;
use super::{EventLoss, GptConfig, ScoreItem};
use plan::{Job, Window};
use std::sync::{Arc, OnceLock};
use tch::{Kind, Tensor};
use weights::NativeWeights;

/// Scores each item: the mean cross-entropy of `event[1..]`, each token
/// conditioned on the context and the event's earlier tokens, and the
/// entropy of each of those predictions, with the native forward, a batch
/// split across `threads`. Items are processed `batch` at a time, longest
/// first. Empty and one-token events get loss 0 and no token losses or
/// entropies; token ids outside the vocabulary are read as PAD (the tokenizer
/// never makes them). Copies the weights: a caller scoring more than once
/// with the same model keeps a [`NativeScorer`] instead.
pub fn score(gpt: &Gpt, items: &[ScoreItem], batch: usize, threads: usize) -> Vec<EventLoss> {
    NativeScorer::new(gpt, threads).score(items, batch)
}

/// [`score`] through libtorch, on its intra-op pool
/// ([`crate::model::set_libtorch_threads`]): the reference.
pub fn score_libtorch(gpt: &Gpt, items: &[ScoreItem], batch: usize) -> Vec<EventLoss> {
    plan::run(items, batch, gpt.config(), |jobs, chunk, losses| {
        tch::no_grad(|| run_libtorch(gpt, jobs, chunk, losses))
    })
}

/// Every core this process may use: the native scorer's thread count where
/// nothing narrower is configured (libtorch's pool does the same).
pub fn all_cores() -> usize {
    // Asking the OS reads cgroup files: once is enough.
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The native scorer: a copy of the weights in the kernels' layout, the
/// instruction set it runs on and the threads a batch is split across.
/// Cheap to clone and shareable across threads (a [`Gpt`] is neither), so a
/// scoring service can hold one per model and swap it.
#[derive(Clone)]
pub struct NativeScorer {
    weights: Arc<NativeWeights>,
    simd: Simd,
    threads: usize,
}

impl NativeScorer {
    /// Copies `gpt`'s weights out; runs on the best instruction set the CPU
    /// has and splits a batch across `threads` (at least one).
    pub fn new(gpt: &Gpt, threads: usize) -> NativeScorer {
        NativeScorer {
            weights: Arc::new(NativeWeights::from_gpt(gpt)),
            simd: Simd::detect(),
            threads: threads.max(1),
        }
    }

    /// The same scorer on instruction set `simd`, or on the best the CPU has
    /// if that is lower (tests compare every level with libtorch).
    pub fn on(self, simd: Simd) -> NativeScorer {
        NativeScorer {
            simd: simd.usable(),
            ..self
        }
    }

    pub fn config(&self) -> &GptConfig {
        &self.weights.cfg
    }

    /// As [`score`].
    pub fn score(&self, items: &[ScoreItem], batch: usize) -> Vec<EventLoss> {
        plan::run(items, batch, &self.weights.cfg, |jobs, chunk, losses| {
            self.run(jobs, chunk, losses)
        })
    }

    /// One batch's forwards, dealt across the threads.
    fn run(&self, jobs: &[Job], chunk: &[usize], out: &mut [Window]) {
        let threads = self.threads.min(chunk.len());
        let (w, simd) = (&*self.weights, self.simd);
        let one = |j: usize| forward::forward(w, simd, &jobs[j]);
        if threads <= 1 {
            for &j in chunk {
                out[j] = one(j);
            }
            return;
        }
        // Deal the (length-sorted) jobs round-robin so each thread gets a
        // similar mix of long and short ones.
        let results: Vec<Vec<(usize, Window)>> = std::thread::scope(|sc| {
            let handles: Vec<_> = (1..threads)
                .map(|t| {
                    sc.spawn(move || {
                        chunk
                            .iter()
                            .skip(t)
                            .step_by(threads)
                            .map(|&j| (j, one(j)))
                            .collect()
                    })
                })
                .collect();
            let mut all = vec![chunk
                .iter()
                .step_by(threads)
                .map(|&j| (j, one(j)))
                .collect()];
            // A panicking worker would be a bug in the kernel; its jobs are then
            // left without losses rather than taking the caller down.
            all.extend(handles.into_iter().filter_map(|h| h.join().ok()));
            all
        });
        for (j, l) in results.into_iter().flatten() {
            out[j] = l;
        }
    }
}

// ---------------------------------------------------------------- libtorch

fn run_libtorch(gpt: &Gpt, jobs: &[Job], chunk: &[usize], out: &mut [Window]) {
    let pad = plan::pad_id(gpt.config()) as i64;
    let t = chunk
        .iter()
        .map(|&j| jobs[j].seq.len() - 1)
        .max()
        .unwrap_or(0);
    let b = chunk.len();
    let mut idx = vec![pad; b * t];
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for (r, &j) in chunk.iter().enumerate() {
        let s = &jobs[j].seq;
        let n = s.len() - 1;
        for p in 0..n {
            idx[r * t + p] = s[p] as i64;
        }
        for p in jobs[j].first..n {
            rows.push((r * t + p) as i64);
            targets.push(s[p + 1] as i64);
        }
    }
    let idx = Tensor::from_slice(&idx).view([b as i64, t as i64]); // (B, T)
    let h = gpt.forward_hidden(&idx).view([(b * t) as i64, -1]); // (B*T, C)
    let h = h.index_select(0, &Tensor::from_slice(&rows)); // (N, C)
    let logp = gpt.head(&h).log_softmax(-1, Kind::Float); // (N, V)
    let ce = -logp
        .gather(-1, &Tensor::from_slice(&targets).unsqueeze(-1), false)
        .squeeze_dim(-1); // (N)
    let ent = -(logp.exp() * &logp).sum_dim_intlist(-1, false, Kind::Float); // (N)
    let ce = Vec::<f32>::try_from(ce).unwrap_or_default();
    let ent = Vec::<f32>::try_from(ent).unwrap_or_default();
    let part = |v: &[f32], at: usize, k: usize| v.get(at..at + k).map(<[f32]>::to_vec);
    let mut at = 0;
    for &j in chunk {
        let k = jobs[j].seq.len() - 1 - jobs[j].first;
        out[j] = Window {
            losses: part(&ce, at, k).unwrap_or_default(),
            entropies: part(&ent, at, k).unwrap_or_default(),
        };
        at += k;
    }
}
