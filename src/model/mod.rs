//! The GPT and everything that touches its weights: the network ([`gpt`]),
//! training ([`train`]), per-event scoring ([`score`]) and checkpoints
//! ([`checkpoint`]). Token ids come from [`crate::tokenizer`]; nothing here
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
/// so an alert can show the span that surprised the model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventLoss {
    pub loss: f32,
    /// `token_losses[i]` is the loss of `event[i + 1]`.
    pub token_losses: Vec<f32>,
}

pub mod bench;
pub mod checkpoint;
pub mod gpt;
pub mod score;
pub mod train;

pub use checkpoint::{Checkpoint, CheckpointError, CheckpointMeta};
pub use gpt::Gpt;
pub use score::{score, score_with, surprising_span, Engine, Scorer};
pub use train::{train, TrainConfig, TrainReport};
