//! Scoring: an event's loss, conditioned on the previous events of its key,
//! becomes a robust z-score against its key's baseline.
//!
//! [`Contexts`] remembers, per key, the token ids of its context: whole
//! previous events, grown by appending and restarted from half the block
//! when full, so the model thread's per-key cache of keys and values holds
//! it ([`crate::model::score::KvCache`]); bounded in keys with
//! least-recently-used eviction. [`EventScorer`] turns events or documents into [`ScoreItem`]s and
//! losses into [`Scored`] results; the forward pass itself runs wherever the
//! model lives (the [`worker`] thread on the bus, inline offline).

pub mod calibrate;
mod content;
pub mod decide;
pub mod epoch;
pub mod feed;
pub mod offline;
mod restate;
pub mod role;
pub mod span;
mod stats;
pub mod worker;

use crate::baseline::Stat;
use crate::contract::alert::{BaselineOf, Span};
use crate::curriculum::{Renderer, Repeats, Scaler};
use crate::event::{Event, Kind};
use crate::model::{EventLoss, ScoreItem};
use crate::vocab::Vocab;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

pub use calibrate::LiveTails;
pub use content::{content_losses, content_positions};

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

    /// The context `key`'s next event, `event`, is scored with, then
    /// remembers the event for the next one. The context is whole previous
    /// events of the key from position 0, as training windows start, and it
    /// grows by appending, so a per-key cache of keys and values
    /// ([`crate::model::score::KvCache`]) holds it and the event costs only
    /// its own tokens. The model's positions are absolute, so the context
    /// cannot slide: when it and the event would pass `block_size` tokens it
    /// restarts from its most recent whole events that fit in half the block
    /// (and leave the event room), which are computed again once. An event
    /// longer than the block is scored alone and not remembered.
    pub fn next(&mut self, key: &str, event: &[u32]) -> Vec<u32> {
        self.clock += 1;
        let now = self.clock;
        let block = self.block_size;
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
        let n = event.len();
        if ctx.tokens + n > block {
            let keep = (block / 2).min(block.saturating_sub(n));
            while ctx.tokens > keep {
                let old = ctx.events.pop_front().expect("tokens > 0");
                ctx.tokens -= old.len();
            }
        }
        let out = ctx.events.iter().flatten().copied().collect();
        if n > 0 && n <= block {
            ctx.events.push_back(event.to_vec());
            ctx.tokens += n;
        }
        out
    }

    /// Drops the least recently used half.
    fn evict(&mut self) {
        keep_newer_half(&mut self.map, |c| c.used);
    }
}

/// Keeps the newer half of `map` by `age` (larger is newer): the scorer's
/// state per key (contexts, evidence, tail windows) is bounded by dropping
/// the older half when full, so eviction is amortised O(1).
pub(crate) fn keep_newer_half<K, V, A>(map: &mut HashMap<K, V>, age: impl Fn(&V) -> A)
where
    K: Eq + std::hash::Hash,
    A: Ord + Copy,
{
    let mut ages: Vec<A> = map.values().map(&age).collect();
    if ages.is_empty() {
        return;
    }
    let mid = ages.len() / 2;
    let cut = *ages.select_nth_unstable(mid).1;
    map.retain(|_, v| age(v) > cut);
}

/// One event ready for the forward pass.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The vocabulary `tokens` are in (the model's).
    pub vocab: Arc<Vocab>,
    pub key: String,
    pub source: String,
    pub kind: Option<Kind>,
    pub rendered: String,
    pub tokens: Vec<u32>,
    pub item: ScoreItem,
    /// A scaled pulse's values, each with its series' usual range when it
    /// was read: what an explanation names instead of the value word
    /// ([`span::explain_reading`]). Empty otherwise.
    pub readings: Vec<crate::curriculum::Reading>,
}

/// What the scorer says about one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// Mean loss per token, in nats.
    pub loss: f32,
    /// Surprisal of its content tokens ([`surprisal`]), in nats: the
    /// statistic the score calibrates.
    pub surprise: f32,
    /// Calibrated: `-log10` of the share of normal events of its kind that
    /// are as surprising ([`LiveTails::calibrate`]).
    pub score: f32,
    /// The median and scale of its kind's surprisal.
    pub stat: Option<Stat>,
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
    /// Per series, the level a pulse's values are read against: the
    /// scorer's own walk over the stream ([`crate::curriculum::Scaler`]),
    /// kept across models that render alike (a new `EventScorer` only
    /// comes with new render settings, vocabulary or block size).
    pub scaler: Scaler,
    /// The model's vocabulary: contexts hold its ids, so a new one comes
    /// with a new scorer.
    pub vocab: Arc<Vocab>,
    pub contexts: Contexts,
    repeats: Repeats,
}

impl EventScorer {
    pub fn new(
        renderer: Renderer,
        vocab: Arc<Vocab>,
        block_size: usize,
        max_keys: usize,
    ) -> EventScorer {
        EventScorer {
            // Readings are kept for explanations (only a scaled pulse has any).
            scaler: renderer.scaler().recording(),
            renderer,
            vocab,
            contexts: Contexts::new(block_size, max_keys),
            repeats: Repeats::new(max_keys),
        }
    }

    /// Every event, the way a model trained on every event (`proprio
    /// train`, `proprio eval`) reads them.
    pub fn prepare_event(&mut self, ev: &Event) -> Prepared {
        let rendered = self.renderer.render(ev, &mut self.scaler);
        let readings = self.scaler.take_readings();
        let mut p = self.prepare_text(&ev.key, &ev.source, Some(ev.kind()), rendered);
        p.readings = readings;
        p
    }

    /// An event from the bus, the way the growth loop's models read the
    /// stream: None for a pulse repeating its key's last one, which the
    /// harvester left out of their curriculum ([`Repeats`]), so it is
    /// neither scored nor put in the key's context.
    pub fn prepare_live(&mut self, ev: &Event) -> Option<Prepared> {
        let rendered = self.renderer.render(ev, &mut self.scaler);
        let readings = self.scaler.take_readings();
        if self.repeats.repeats(ev, &rendered) {
            return None;
        }
        let mut p = self.prepare_text(&ev.key, &ev.source, Some(ev.kind()), rendered);
        p.readings = readings;
        Some(p)
    }

    /// For text already rendered (curriculum documents).
    pub fn prepare_text(
        &mut self,
        key: &str,
        source: &str,
        kind: Option<Kind>,
        rendered: String,
    ) -> Prepared {
        let tokens = self.vocab.encode(&rendered);
        let context = self.contexts.next(key, &tokens);
        Prepared {
            vocab: self.vocab.clone(),
            key: key.to_string(),
            source: source.to_string(),
            kind,
            item: ScoreItem {
                context,
                event: tokens.clone(),
            },
            tokens,
            rendered,
            readings: Vec::new(),
        }
    }
}

/// Turns the loss of one event at `ts` into its calibrated score against
/// `tails` (which learn its surprisal, [`LiveTails::calibrate`]).
pub fn score_against(p: &Prepared, loss: &EventLoss, ts: i64, tails: &mut LiveTails) -> Scored {
    let kind = p.kind.unwrap_or(Kind::Graph);
    // What the event says: the surprisal's terms, and the span's evidence
    // (the source's name and a pulse's carried event are never either).
    let said = content_losses(&p.tokens, &loss.token_losses);
    let surprise = said.iter().filter(|x| x.is_finite()).sum();
    let c = tails.calibrate_line(&p.source, kind, &p.rendered, ts, surprise);
    let (ts, te, span_loss) = span::field_span(&p.vocab, &p.tokens, &said, span::SPAN_MAX_CHARS);
    Scored {
        loss: loss.loss,
        surprise,
        score: c.score,
        stat: c.stat,
        baseline_of: c.of,
        rendered: p.rendered.clone(),
        span: Span {
            text: span::explain_reading(
                p.vocab.decode(&p.tokens[ts..te]).trim_start(),
                &p.readings,
            ),
            start: ts,
            end: te,
            loss: span_loss,
        },
    }
}

/// The live statistic: the event's surprisal, the sum of its content
/// tokens' losses ([`content_positions`]; positions whose loss is missing
/// or not finite skipped), in nats: how unlikely the model found what the
/// event says, its source's name left out. The tails calibrate it per kind
/// and per source ([`LiveTails`]), so what a source's events always cost
/// (ids, durations, long templates) is the baseline it is judged against.
///
/// Why the surprisal and not [`excess_surprise`] (loss minus the model's
/// entropy), the statistic before: the excess discounts every token where
/// the model was unsure, and as training deepens the model is unsure where
/// a fault shows. On HDFS (`proprio eval --group-by key --session-end`),
/// the early end of a failed block comes where the model expects more
/// lines; 1.7 nats a token, the entropy there 2.9: an excess of -1.25. At
/// 1,500 training steps (the product's model after five incremental
/// cycles), per-block F1 over training seeds 1-5 was 0.79/0/0.79/0.31/0.79
/// with the excess and 0.79/0.79/0.86/0.79/0.80 with the surprisal (at 500
/// steps 0.91-0.94 either way). On the simulated OS (models of seeds 1-3,
/// 500 steps) the surprisal cut the fault-free day's false incidents
/// and kept every fault caught (docs/EVAL.md, "The live statistic").
pub fn surprisal(tokens: &[u32], loss: &EventLoss) -> f32 {
    content_positions(tokens)
        .into_iter()
        .filter_map(|j| loss.token_losses.get(j).copied())
        .filter(|x| x.is_finite())
        .sum()
}

/// Excess surprise: the sum, over the event's content tokens
/// ([`content_positions`]), of each token's loss minus the entropy the model
/// expected at that position.
///
/// A token's loss mixes two things: how unpredictable that part of the
/// event is by nature (a pid, a duration, a request id: the model knows it
/// cannot guess them, its distribution is flat) and how wrong the model was
/// where it was sure (`killed` where it expected `heartbeat`). Normal events
/// are full of the first kind, so their mean loss drowns the second. The
/// excess `loss - H`, with H the entropy of the model's predictive
/// distribution at that position, is near 0 on average for what the model
/// describes well, whatever its entropy, and large only where the model was
/// confident and wrong. Offline (`proprio eval --model-score xsum`,
/// docs/EVAL.md) it separates faults from normal events better than the
/// mean loss; it was the live statistic until the model's own uncertainty
/// was found to hide faults as training deepens ([`surprisal`]).
///
/// `tokens` are the event's own tokens (what `loss` scored); positions
/// whose loss or entropy is missing or not finite are skipped.
pub fn excess_surprise(tokens: &[u32], loss: &EventLoss) -> f32 {
    excess_tokens(tokens, loss).iter().sum()
}

/// The terms of [`excess_surprise`], in token order: loss - entropy at each
/// content position where both are finite (what eval's `xspan` and `xmax`
/// read).
pub fn excess_tokens(tokens: &[u32], loss: &EventLoss) -> Vec<f32> {
    content_positions(tokens)
        .into_iter()
        .filter_map(|j| Some(loss.token_losses.get(j)? - loss.token_entropies.get(j)?))
        .filter(|x| x.is_finite())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excess_surprise_sums_content_tokens_loss_over_entropy() {
        // Tokens: BOE LOG SVC a MSG h i EOE; position j predicts token j + 1,
        // so position 2 (predicting "a", the source name) is not content.
        let t = Vocab::bytes().encode("<|BOE|><|LOG|><|SVC|>a<|MSG|>hi<|EOE|>");
        assert_eq!(t.len(), 8);
        let l = EventLoss {
            loss: 0.0,
            token_losses: vec![1.0, 2.0, 50.0, 0.5, 4.0, f32::NAN, 3.0],
            token_entropies: vec![0.5, 2.5, 0.0, 0.5, 1.0, 1.0, f32::INFINITY],
        };
        // 0.5 - 0.5 + 0 + 3; the name's 50, the NaN and the inf left out.
        assert_eq!(excess_tokens(&t, &l), vec![0.5, -0.5, 0.0, 3.0]);
        assert_eq!(excess_surprise(&t, &l), 3.0);
        // Entropies missing (shorter than the losses): those positions skipped.
        let short = EventLoss {
            token_entropies: vec![0.5, 2.5],
            ..l.clone()
        };
        assert_eq!(excess_surprise(&t, &short), 0.0);
        assert_eq!(excess_tokens(&t, &short), vec![0.5, -0.5]);
        // A one-token event predicts nothing.
        assert_eq!(excess_surprise(&t[..1], &EventLoss::default()), 0.0);
    }

    #[test]
    fn context_grows_then_restarts_from_half_the_block() {
        let none = Vec::<u32>::new();
        let mut c = Contexts::new(10, 10);
        assert!(c.next("a", &[1, 2, 3]).is_empty());
        assert_eq!(c.next("a", &[4, 5, 6]), vec![1, 2, 3]);
        assert_eq!(c.next("b", &[9]), none);
        // 6 + 5 > 10: restart from the newest whole events within 5 tokens.
        assert_eq!(c.next("a", &[7, 8, 9, 10, 11]), vec![4, 5, 6]);
        // 8 + 8 > 10: within min(5, 10 - 8) = 2 tokens, no whole event.
        assert_eq!(c.next("a", &[0; 8]), none);
        // 8 + 2 = 10 fits the block: appended, no restart.
        assert_eq!(c.next("a", &[1, 2]), vec![0; 8]);
        // Longer than the block: scored alone, not remembered.
        assert_eq!(c.next("a", &[3; 11]), none);
        assert_eq!(c.next("a", &[4]), none);
        assert_eq!(c.next("a", &[5]), vec![4]);
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

    #[test]
    fn a_scaled_pulse_carries_its_values_and_usual_ranges_and_its_span_names_them() {
        use crate::curriculum::{MetricFormat, RenderConfig};
        let renderer = Renderer::new(&RenderConfig {
            metric_format: MetricFormat::Scaled,
            ..RenderConfig::default()
        })
        .unwrap();
        let mut sc = EventScorer::new(renderer, Vocab::bytes(), 128, 10);
        let pulse = |i: i64, p50: f64| Event {
            ts: i * 15_000,
            source: "api".into(),
            key: "api".into(),
            body: crate::event::Body::Pulse {
                metrics: [("latency_p50_ms".to_string(), p50)].into(),
            },
            label: None,
        };
        for i in 0..10 {
            sc.prepare_event(&pulse(i, 100.0 + (i % 3) as f64));
        }
        let p = sc.prepare_event(&pulse(10, 3_012.0));
        assert!(p.rendered.contains("latency_p50_ms=+7"), "{}", p.rendered);
        let r = &p.readings[0];
        assert_eq!((r.metric.as_str(), r.value), ("latency_p50_ms", 3_012.0));
        let (lo, hi) = r.usual.unwrap();
        assert!(lo > 90.0 && hi < 110.0, "{lo}-{hi}");
        assert_eq!(
            span::explain_reading("<|METRIC|>latency_p50_ms=+7", &p.readings),
            "latency_p50_ms=3,012 (usual 97-105)"
        );
        // The buckets rendering carries none.
        let buckets = Renderer::new(&RenderConfig {
            metric_format: MetricFormat::Buckets,
            ..RenderConfig::default()
        })
        .unwrap();
        let mut b = EventScorer::new(buckets, Vocab::bytes(), 128, 10);
        assert!(b.prepare_event(&pulse(0, 1.0)).readings.is_empty());
    }
}
