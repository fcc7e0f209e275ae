//! The GPT and everything that touches its weights: the network ([`gpt`]),
//! training ([`train`]), per-event scoring ([`score`]), checkpoints
//! ([`checkpoint`]) and the engine's benchmark ([`bench`]). Token ids come from [`crate::tokenizer`]; nothing here
//! knows about events or text.

use serde::{Deserialize, Serialize};

/// Shape of the network. Defaults are the article's: tiny enough for a CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GptConfig {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub block_size: usize,
}

impl Default for GptConfig {
    fn default() -> Self {
        GptConfig {
            vocab_size: crate::tokenizer::VOCAB_SIZE,
            n_embd: 32,
            n_layer: 2,
            n_head: 4,
            block_size: 128,
        }
    }
}

/// A key's events in time order, as one token stream, for training.
/// `starts` holds each event's offset in `tokens` and its training weight
/// (the freshness decay), so windows start on event boundaries, the way a
/// scored event sees its context.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stream {
    pub tokens: Vec<u32>,
    pub starts: Vec<(usize, f32)>,
}

/// One event to score: its own tokens, after the tokens of the previous
/// events of its key (already cut to whole events by the caller).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreItem {
    pub context: Vec<u32>,
    pub event: Vec<u32>,
}

/// An event's loss: the mean cross-entropy over its own predicted tokens
/// (every token after the first), and each of those tokens' loss, in order,
/// so an alert can show the span that surprised the model; with the entropy
/// the model expected at each, so surprise can be measured against it
/// (eval's `xsum` readings, the scorer's `excess_surprise`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventLoss {
    pub loss: f32,
    /// `token_losses[i]` is the loss of `event[i + 1]`.
    pub token_losses: Vec<f32>,
    /// `token_entropies[i]` is the entropy, in nats, of the model's predictive
    /// distribution at the position that predicts `event[i + 1]` (its
    /// expected loss there); as long as `token_losses`.
    pub token_entropies: Vec<f32>,
}

pub mod bench;
pub mod checkpoint;
pub mod gpt;
pub mod score;
pub mod train;

pub use checkpoint::{Checkpoint, CheckpointError, CheckpointMeta};
pub use gpt::Gpt;
pub use score::{score, score_libtorch, NativeScorer};
pub use train::{train, TrainConfig, TrainReport};

/// Threads of libtorch's intra-op pool, which training and the libtorch
/// forward run on. The pool is libtorch's own and process-wide, so the
/// binary sets it once at start-up (the native scorer's threads are a
/// setting of each [`NativeScorer`]); until then libtorch uses every core.
///
/// libtorch's pool (libgomp) spins while it waits: when other processes
/// keep the cores busy, a training step measured here went from 61 ms to
/// 930 ms. Starting the process with `OMP_WAIT_POLICY=PASSIVE` avoids that
/// (libgomp reads it when it loads, so it cannot be set from here).
pub fn set_libtorch_threads(n: usize) {
    // libtorch takes each thread's count from the process-wide value at the
    // thread's first op, which would read over this one if it came later.
    let _ = tch::get_num_threads();
    tch::set_num_threads(n.max(1) as i32);
}
