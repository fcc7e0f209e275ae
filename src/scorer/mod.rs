//! Scoring: an event's loss, conditioned on the previous events of its key,
//! becomes a robust z-score against its key's baseline.
//!
//! [`Contexts`] remembers, per key, the token ids of the last events (as
//! many as fit the model's block), bounded in keys with least-recently-used
//! eviction. [`EventScorer`] turns events or documents into [`ScoreItem`]s and
//! losses into [`Scored`] results; the forward pass itself runs wherever the
//! model lives (the [`worker`] thread on the bus, inline offline).

pub mod decide;
pub mod offline;
pub mod role;
pub mod span;
pub mod worker;

use crate::baseline::{Baselines, Stat};
use crate::contract::alert::{BaselineOf, Span};
use crate::curriculum::Renderer;
use crate::event::{Event, Kind};
use crate::model::{EventLoss, ScoreItem};
use crate::tokenizer::tokenizer;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Per-key memory of the last events' tokens.
pub struct Contexts {
    block_size: usize,
    max_keys: usize,
    map: HashMap<String, Ctx>,
    clock: u64,
}

struct Ctx {
    events: VecDeque<Vec<u32>>,
    tokens: usize,
    used: u64,
}

impl Contexts {
    pub const DEFAULT_MAX_KEYS: usize = 100_000;

    pub fn new(block_size: usize, max_keys: usize) -> Contexts {
        Contexts {
            block_size,
            max_keys: max_keys.max(1),
            map: HashMap::new(),
            clock: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The previous whole events of `key` that fit before an event of
    /// `event_len` tokens (the model sees at most `block_size` inputs), then
    /// remembers this event for the next one.
    pub fn next(&mut self, key: &str, event: &[u32]) -> Vec<u32> {
        self.clock += 1;
        let room = (self.block_size + 1).saturating_sub(event.len());
        let now = self.clock;
        let ctx = match self.map.get_mut(key) {
            Some(c) => c,
            None => {
                if self.map.len() >= self.max_keys {
                    self.evict();
                }
                self.map.entry(key.to_string()).or_insert(Ctx {
                    events: VecDeque::new(),
                    tokens: 0,
                    used: now,
                })
            }
        };
        ctx.used = now;
        let mut take = 0;
        let mut len = 0;
        for e in ctx.events.iter().rev() {
            if len + e.len() > room {
                break;
            }
            len += e.len();
            take += 1;
        }
        let mut out = Vec::with_capacity(len);
        for e in ctx.events.iter().skip(ctx.events.len() - take) {
            out.extend_from_slice(e);
        }
        ctx.events.push_back(event.to_vec());
        ctx.tokens += event.len();
        while ctx.tokens > self.block_size && ctx.events.len() > 1 {
            let old = ctx.events.pop_front().expect("len > 1");
            ctx.tokens -= old.len();
        }
        out
    }

    /// Drops the least recently used half, so eviction is amortised O(1).
    fn evict(&mut self) {
        let mut used: Vec<u64> = self.map.values().map(|c| c.used).collect();
        let mid = used.len() / 2;
        let (_, cut, _) = used.select_nth_unstable(mid);
        let cut = *cut;
        self.map.retain(|_, c| c.used > cut);
    }
}

/// One event ready for the forward pass.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub key: String,
    pub source: String,
    pub kind: Option<Kind>,
    pub rendered: String,
    pub tokens: Vec<u32>,
    pub item: ScoreItem,
}

/// What the scorer says about one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// Mean loss per token, in nats.
    pub loss: f32,
    /// Excess surprise ([`excess_surprise`]), in nats: the statistic.
    pub excess: f32,
    /// Calibrated: `-log10` of the share of normal events of its kind that
    /// are as surprising ([`crate::baseline::Surprise::calibrate`]).
    pub score: f32,
    /// The key's (or kind's) median and scale `excess` was standardised with.
    pub stat: Option<Stat>,
    pub baseline_of: BaselineOf,
    pub rendered: String,
    pub span: Span,
}

/// Width, in tokens, of the surprising span shown with a score.
pub const SPAN_WIDTH: usize = 8;

/// Renders, tokenizes and contextualises events; turns losses into scores.
pub struct EventScorer {
    pub renderer: Renderer,
    pub contexts: Contexts,
}

impl EventScorer {
    pub fn new(renderer: Renderer, block_size: usize, max_keys: usize) -> EventScorer {
        EventScorer {
            renderer,
            contexts: Contexts::new(block_size, max_keys),
        }
    }

    pub fn prepare_event(&mut self, ev: &Event) -> Prepared {
        let rendered = self.renderer.render(ev);
        self.prepare_text(&ev.key, &ev.source, Some(ev.kind()), rendered)
    }

    /// For text already rendered (curriculum documents).
    pub fn prepare_text(
        &mut self,
        key: &str,
        source: &str,
        kind: Option<Kind>,
        rendered: String,
    ) -> Prepared {
        let tokens = tokenizer().encode(&rendered);
        let context = self.contexts.next(key, &tokens);
        Prepared {
            key: key.to_string(),
            source: source.to_string(),
            kind,
            item: ScoreItem {
                context,
                event: tokens.clone(),
            },
            tokens,
            rendered,
        }
    }
}

/// Turns one event's loss into a score against `baselines`.
pub fn score_against(p: &Prepared, loss: &EventLoss, baselines: &Baselines) -> Scored {
    let kind = p.kind.unwrap_or(Kind::Graph);
    let excess = excess_surprise(&p.tokens, loss);
    let c = baselines.surprise.calibrate(&p.key, kind, excess);
    let (start, end, span_loss) = span::surprising_span(&loss.token_losses, SPAN_WIDTH);
    // token_losses[i] is the loss of event token i + 1.
    let (ts, te) = (
        (start + 1).min(p.tokens.len()),
        (end + 1).min(p.tokens.len()),
    );
    Scored {
        loss: loss.loss,
        excess,
        score: c.score,
        stat: c.stat,
        baseline_of: c.of,
        rendered: p.rendered.clone(),
        span: Span {
            text: tokenizer().decode(&p.tokens[ts..te]),
            start: ts,
            end: te,
            loss: span_loss,
        },
    }
}

/// TEMPORARY until the native entropies land: the sum of token losses.
pub fn excess_surprise(_tokens: &[u32], loss: &EventLoss) -> f32 {
    loss.token_losses.iter().filter(|v| v.is_finite()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_holds_whole_previous_events_that_fit() {
        let mut c = Contexts::new(10, 10);
        assert!(c.next("a", &[1, 2, 3]).is_empty());
        assert_eq!(c.next("a", &[4, 5, 6]), vec![1, 2, 3]);
        assert_eq!(c.next("b", &[9]), Vec::<u32>::new());
        // room = 11 - 5 = 6: the last two events fit.
        assert_eq!(c.next("a", &[7, 8, 9, 10, 11]), vec![1, 2, 3, 4, 5, 6]);
        // room = 11 - 8 = 3: only whole events, so none of the 5-token one.
        assert_eq!(c.next("a", &[0; 8]), Vec::<u32>::new());
    }

    #[test]
    fn keys_are_bounded() {
        let mut c = Contexts::new(10, 100);
        for i in 0..1000 {
            c.next(&format!("k{i}"), &[1]);
        }
        assert!(c.len() <= 100);
        // The most recent key survived eviction.
        assert_eq!(c.next("k999", &[2]), vec![1]);
    }
}
