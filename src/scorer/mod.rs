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
    pub loss: f32,
    /// Robust z-score of the loss against the baseline.
    pub score: f32,
    pub baseline: Option<Stat>,
    pub baseline_of: BaselineOf,
    pub rendered: String,
    pub span: Span,
}

/// Width, in tokens, of [`span::surprising_span`] as a score statistic
/// (eval's `span` model scores); the span shown with a score is
/// [`span::field_span`].
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
    let (stat, of) = baselines.stat(&p.key, kind);
    let (score, _) = baselines.score(&p.key, kind, loss.loss);
    let (ts, te, span_loss) = span::field_span(&p.tokens, &loss.token_losses, span::SPAN_MAX_CHARS);
    Scored {
        loss: loss.loss,
        score,
        baseline: stat,
        baseline_of: of,
        rendered: p.rendered.clone(),
        span: Span {
            text: tokenizer().decode(&p.tokens[ts..te]),
            start: ts,
            end: te,
            loss: span_loss,
        },
    }
}

/// Evidence over time: per key, the mean of the `k` highest scores (negative
/// ones as 0, missing ones as 0) among the key's events in the `window_ms`
/// ending at the newest. A fault makes a key say several surprising things
/// in a short time; a noisy key's lone surprising event is divided by `k`.
/// Measured with `proprio eval --evidence S:K` (src/eval): on the simulated
/// OS it turns bursts the per-event threshold misses into detections
/// without adding false alerts. Bounded in keys like [`Contexts`].
pub struct Evidence {
    window_ms: i64,
    k: usize,
    max_keys: usize,
    recent: HashMap<String, VecDeque<(i64, f32)>>,
}

impl Evidence {
    pub fn new(window_ms: i64, k: usize, max_keys: usize) -> Evidence {
        Evidence {
            window_ms,
            k: k.max(1),
            max_keys: max_keys.max(1),
            recent: HashMap::new(),
        }
    }

    /// Adds `score` of an event of `key` at `ts_ms`; returns the key's evidence.
    pub fn push(&mut self, key: &str, ts_ms: i64, score: f32) -> f32 {
        if !self.recent.contains_key(key) && self.recent.len() >= self.max_keys {
            // Forget the keys whose newest event is oldest (half of them).
            let mut newest: Vec<i64> = self
                .recent
                .values()
                .filter_map(|q| q.back().map(|e| e.0))
                .collect();
            let mid = newest.len() / 2;
            let cut = *newest.select_nth_unstable(mid).1;
            self.recent
                .retain(|_, q| q.back().is_some_and(|e| e.0 > cut));
        }
        let q = self.recent.entry(key.to_string()).or_default();
        q.push_back((
            ts_ms,
            if score.is_finite() {
                score.max(0.0)
            } else {
                0.0
            },
        ));
        while q.front().is_some_and(|&(t, _)| t <= ts_ms - self.window_ms) {
            q.pop_front();
        }
        let mut top: Vec<f32> = q.iter().map(|&(_, v)| v).collect();
        top.sort_by(|a, b| b.total_cmp(a));
        top.iter().take(self.k).sum::<f32>() / self.k as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_divides_a_lone_spike_and_keeps_a_burst() {
        let mut e = Evidence::new(30_000, 2, 10);
        assert_eq!(e.push("a", 0, 6.0), 3.0);
        // 40 s later the spike has left the window.
        assert_eq!(e.push("a", 40_000, 1.0), 0.5);
        assert_eq!(e.push("a", 41_000, 4.0), 2.5);
        assert_eq!(e.push("a", 42_000, -3.0), 2.5);
        assert_eq!(e.push("b", 42_000, 4.0), 2.0);
    }

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
