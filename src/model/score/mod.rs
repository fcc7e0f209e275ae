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
//! A scorer that sees a stream keeps a [`KvCache`] and calls
//! [`NativeScorer::score_cached`]: each key's keys and values stay cached
//! between its events, so an event whose context is what the key's cache
//! holds computes only its own tokens. Its numbers are those of a full
//! forward over the same context (tests hold them to 1e-4).
//!
//! The parts: `plan` cuts events into windows (both engines), `weights`
//! copies the weights into the kernels' layout, `forward` is the native
//! forward (whole or over cached keys and values), `cache` the per-key
//! keys and values, `elementwise` its LayerNorm, softmax, GELU,
//! cross-entropy and entropy,
//! and `kernels` the SIMD matrix products with every `unsafe` of the model.

mod cache;
mod elementwise;
mod forward;
mod kernels;
mod plan;
mod weights;

pub use cache::{KvCache, KvStats};
pub use kernels::{keep_freed_memory, Simd};

use super::gpt::Gpt;
use super::{EventLoss, GptConfig, ScoreItem};
use cache::Entry;
use plan::{Job, Window};
use std::collections::HashMap;
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

    /// Scores each item as [`NativeScorer::score`] does, `keys[i]` naming
    /// item i's key: an item whose context and event fit the block is
    /// computed over the longest prefix of its context that `cache` holds
    /// for its key, and leaves its context and event cached there for the
    /// key's next event. Items of one key run in order (a key's next event
    /// reuses the one before it); keys are dealt across the threads. Items
    /// that do not fit the block (and any without a key) take the windowed
    /// path of [`NativeScorer::score`], `batch` at a time. A cache last used
    /// with another model starts empty.
    ///
    /// Runs `batch` items at a time, the cache trimmed to its `max_keys`
    /// after each: within a round it holds at most `batch` keys more.
    pub fn score_cached<K: AsRef<str>>(
        &self,
        cache: &mut KvCache,
        keys: &[K],
        items: &[ScoreItem],
        batch: usize,
    ) -> Vec<EventLoss> {
        let batch = batch.max(1);
        let mut out = Vec::with_capacity(items.len());
        for (r, round) in items.chunks(batch).enumerate() {
            let keys = keys.get(r * batch..).unwrap_or_default();
            let keys = &keys[..keys.len().min(round.len())];
            out.extend(self.score_round(cache, keys, round, batch));
        }
        out
    }

    fn score_round<K: AsRef<str>>(
        &self,
        cache: &mut KvCache,
        keys: &[K],
        items: &[ScoreItem],
        batch: usize,
    ) -> Vec<EventLoss> {
        cache.follow(&self.weights);
        let cfg = &self.weights.cfg;
        let mut out = vec![EventLoss::default(); items.len()];
        let (mut plain, mut groups) = (Vec::new(), Vec::<Unit>::new());
        let mut group_of: HashMap<&str, usize> = HashMap::new();
        for (i, it) in items.iter().enumerate() {
            if it.event.len() < 2 {
                continue; // predicts nothing: loss 0, as `score`
            }
            match keys.get(i).map(AsRef::as_ref) {
                Some(k) if it.context.len() + it.event.len() <= cfg.block_size => {
                    let g = *group_of.entry(k).or_insert_with(|| {
                        groups.push(Unit {
                            key: k.to_string(),
                            entry: Entry::default(),
                            items: Vec::new(),
                            work: 0,
                        });
                        groups.len() - 1
                    });
                    groups[g].items.push(i);
                    groups[g].work += it.event.len();
                }
                _ => plain.push(i),
            }
        }
        if !plain.is_empty() {
            let sub: Vec<ScoreItem> = plain.iter().map(|&i| items[i].clone()).collect();
            for (&i, l) in plain.iter().zip(self.score(&sub, batch)) {
                out[i] = l;
            }
        }
        for u in &mut groups {
            u.entry = cache.take(&u.key);
        }
        let (done, scored) = self.run_keys(groups, items);
        let (mut reused, mut computed, mut prefills) = (0, 0, 0);
        for (i, w, h) in scored {
            reused += h as u64;
            computed += (items[i].context.len() + items[i].event.len() - h) as u64;
            prefills += u64::from(h < items[i].context.len());
            out[i] = loss_of(w);
        }
        let events = done.iter().map(|u| u.items.len() as u64).sum();
        cache.count(events, reused, computed, prefills);
        for u in done {
            cache.put(u.key, u.entry);
        }
        cache.end_call();
        out
    }

    /// Each key's items in order on its cache entry, the keys dealt across
    /// the threads by work (longest first, each to the least loaded); the
    /// entries back, with (item, its window, positions reused).
    fn run_keys(
        &self,
        mut units: Vec<Unit>,
        items: &[ScoreItem],
    ) -> (Vec<Unit>, Vec<(usize, Window, usize)>) {
        let (w, simd) = (&*self.weights, self.simd);
        let run = |mut us: Vec<Unit>| {
            let mut res = Vec::new();
            for u in &mut us {
                for &i in &u.items {
                    let (win, h) = step(w, simd, &mut u.entry, &items[i]);
                    res.push((i, win, h));
                }
            }
            (us, res)
        };
        let threads = self.threads.min(units.len());
        if threads <= 1 {
            return run(units);
        }
        units.sort_by_key(|u| std::cmp::Reverse(u.work));
        let mut shares: Vec<(usize, Vec<Unit>)> = (0..threads).map(|_| (0, Vec::new())).collect();
        for u in units {
            let s = shares
                .iter_mut()
                .min_by_key(|s| s.0)
                .expect("at least two threads");
            s.0 += u.work;
            s.1.push(u);
        }
        let mut shares = shares.into_iter().map(|s| s.1);
        let mine = shares.next().unwrap_or_default();
        std::thread::scope(|sc| {
            let handles: Vec<_> = shares.map(|us| sc.spawn(move || run(us))).collect();
            let (mut units, mut res) = run(mine);
            // A panicking worker would be a bug in the kernel; its items are
            // then left without losses and its keys uncached.
            for (u, r) in handles.into_iter().filter_map(|h| h.join().ok()) {
                units.extend(u);
                res.extend(r);
            }
            (units, res)
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

/// One key's share of a [`NativeScorer::score_cached`] call: its cache
/// entry and its items, in order.
struct Unit {
    key: String,
    entry: Entry,
    items: Vec<usize>,
    work: usize,
}

/// One event on its key's cache entry: the entry's longest prefix of the
/// item's context is reused, the rest of the context and the event are
/// computed and left cached. Returns the event's window and the positions
/// reused.
fn step(w: &NativeWeights, simd: Simd, e: &mut Entry, it: &ScoreItem) -> (Window, usize) {
    let pad = plan::pad_id(&w.cfg);
    let seq: Vec<u32> = it
        .context
        .iter()
        .chain(&it.event)
        .map(|&t| {
            if (t as usize) < w.cfg.vocab_size {
                t
            } else {
                pad
            }
        })
        .collect();
    let c = it.context.len();
    let h = e
        .tokens
        .iter()
        .zip(&seq[..c])
        .take_while(|(a, b)| a == b)
        .count();
    let win = forward::forward_cached(w, simd, &seq, h, c, &mut e.kv);
    e.tokens = seq;
    (win, h)
}

fn loss_of(w: Window) -> EventLoss {
    let loss = if w.losses.is_empty() {
        0.0
    } else {
        w.losses.iter().sum::<f32>() / w.losses.len() as f32
    };
    EventLoss {
        loss,
        token_losses: w.losses,
        token_entropies: w.entropies,
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
