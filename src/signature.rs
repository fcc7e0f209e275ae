//! How rare a known failure signature is among normal events: a floor
//! under the model's score.
//!
//! The diagnoser ([`crate::alert::Diagnoser`]) names known failures (`OOM
//! killed`, `port conflict`, `localhost trap`, `dependency unreachable`,
//! ...) from an event's text. Alone it is no detector: a signature can be
//! routine somewhere (a fleet whose clients retry through `connection
//! refused` all day). Counted over the curriculum's events, it is a second,
//! model-free estimate of rarity: a label that matched `hits` of `n` normal
//! events makes an event carrying it about `(hits + 1) / (n + 1)` rare, and
//! its score is at least `-log10` of that. A signature the fleet's normal
//! never shows scores `log10(n + 1)`: the floor claims no more rarity than
//! the sample can show.
//!
//! Every event document the model was trained and evaluated on counts, not
//! only the held-out ones the tails are fitted on: the count asks nothing of
//! the model, so the documents it trained on are as good a sample of normal,
//! and ten times as many. The 30 minutes `make demo` trains on held out
//! 1,734 events (a floor of 3.2) of 18,861 (4.3).
//!
//! The floor is judged at the configured risk, whatever the model's age. A
//! young model is held to a share of the risk
//! ([`crate::policy::Policy::for_model`]) because its calibration has not
//! met the day's normal novelty; the count is no claim of the model's, so
//! it is lifted by that margin ([`crate::policy::Policy::age_margin`]).
//! Without the lift a young model could never alert on a signature: its
//! few thousand held-out events floor at 3.6, under its level of 5. On the
//! simulated OS (`make demo`, a model trained on 30 minutes), the port
//! conflict, the crash loop, the localhost trap and the startup order were
//! missed for that reason alone.
//!
//! Why: the 32-dim model ranks some failures' text as ordinary (a
//! `connection refused` to 127.0.0.1 scored below normal deploy restarts on
//! the simulated day, its excess surprise in the top 3 % of normal log
//! lines only), while none of the fleet's normal events carries it.
//!
//! Matched on the rendered line with its special tokens taken out, in the
//! trainer (held-out documents are rendered text) and the scorer alike, so
//! a pattern reading raw numbers (`latency_p99_ms=2950`) that the rendering
//! buckets matches neither, and counts agree with what is scored.

use crate::alert::Diagnoser;
use crate::contract::alert::strip_specials;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Per diagnosis label, how many held-out events carried it, of how many.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Signatures {
    /// Held-out events read.
    pub n: u64,
    /// Every label the diagnoser knows, with its hits (0 included: a label
    /// absent here gets no floor).
    pub hits: BTreeMap<String, u64>,
}

/// The built-in diagnoser, built once (the scorer's and the trainer's).
pub fn diagnoser() -> &'static Diagnoser {
    static D: OnceLock<Diagnoser> = OnceLock::new();
    D.get_or_init(Diagnoser::default)
}

/// The label of a rendered line, as the floor reads it.
pub fn label_of(rendered: &str) -> Option<String> {
    diagnoser().diagnose(&strip_specials(rendered))
}

impl Signatures {
    /// Fewest held-out events before any floor applies.
    pub const MIN_N: u64 = 1_000;
    /// The highest score a floor gives (the tails' own ceiling).
    pub const MAX_FLOOR: f32 = 20.0;

    /// Counts the labels of normal events' rendered lines.
    pub fn fit<'a>(rendered: impl IntoIterator<Item = &'a str>) -> Signatures {
        let mut s = Signatures::empty();
        for r in rendered {
            s.count(r);
        }
        s
    }

    /// No event counted yet, every label known.
    pub fn empty() -> Signatures {
        Signatures {
            n: 0,
            hits: diagnoser()
                .patterns()
                .map(|p| (p.label.clone(), 0))
                .collect(),
        }
    }

    /// Counts one normal event's rendered line.
    pub fn count(&mut self, rendered: &str) {
        self.n += 1;
        if let Some(l) = label_of(rendered) {
            *self.hits.entry(l).or_insert(0) += 1;
        }
    }

    /// The least score an event with diagnosis `label` has.
    pub fn floor(&self, label: &str) -> Option<f32> {
        if self.n < Self::MIN_N {
            return None;
        }
        let h = *self.hits.get(label)?;
        let f = ((self.n + 1) as f64 / (h + 1) as f64).log10() as f32;
        Some(f.min(Self::MAX_FLOOR))
    }

    /// `score` raised to the floor of `rendered`'s signature, if any, lifted
    /// by the model's age `margin` ([`crate::policy::Policy::age_margin`]);
    /// the label is looked for only when a floor could raise the score.
    pub fn apply(&self, score: f32, rendered: &str, margin: f32) -> f32 {
        if self.n < Self::MIN_N || score >= self.highest() + margin {
            return score;
        }
        match label_of(rendered).and_then(|l| self.floor(&l)) {
            Some(f) if f + margin > score || score.is_nan() => f + margin,
            _ => score,
        }
    }

    /// The highest floor any label gives: the least-seen label's.
    fn highest(&self) -> f32 {
        self.hits
            .keys()
            .min_by_key(|l| self.hits[*l])
            .and_then(|l| self.floor(l))
            .unwrap_or(f32::NEG_INFINITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORT: &str = "<|BOE|><|LOG|><|SVC|>a<|LEVEL|>ERROR<|MSG|>listen tcp 0.0.0.0:80: bind: address already in use<|EOE|>";
    const REFUSED: &str = "<|BOE|><|LOG|><|SVC|>a<|LEVEL|>WARN<|MSG|>dial tcp b:80: connect: connection refused<|EOE|>";
    const OK: &str = "<|BOE|><|LOG|><|SVC|>a<|LEVEL|>INFO<|MSG|>GET /health 200<|EOE|>";

    #[test]
    fn a_signature_normal_never_shows_is_as_rare_as_the_sample_can_say() {
        let mut held = vec![OK; 9_989];
        held.extend([REFUSED; 10]);
        let s = Signatures::fit(held.iter().copied());
        assert_eq!(s.n, 9_999);
        assert_eq!(s.hits["dependency unreachable"], 10);
        // Never seen: log10(10 000) = 4.
        assert!((s.floor("port conflict").unwrap() - 4.0).abs() < 1e-4);
        assert!((s.apply(1.0, PORT, 0.0) - 4.0).abs() < 1e-4);
        // Seen 10 times: 10 000 / 11.
        assert!((s.apply(1.0, REFUSED, 0.0) - 2.9586).abs() < 1e-3);
        // Only ever raises; no signature, no floor; an unknown label none.
        assert_eq!(s.apply(7.0, PORT, 0.0), 7.0);
        assert_eq!(s.apply(1.0, OK, 0.0), 1.0);
        assert_eq!(s.floor("made up"), None);
        // A young model's margin lifts the floor, not a score above it, and
        // gives nothing to a line without a signature.
        assert!((s.apply(1.0, PORT, 1.5) - 5.5).abs() < 1e-4);
        assert!((s.apply(4.8, REFUSED, 1.5) - 4.8).abs() < 1e-4);
        assert!((s.apply(1.0, REFUSED, 1.5) - 4.4586).abs() < 1e-3);
        assert_eq!(s.apply(9.0, PORT, 1.5), 9.0);
        assert_eq!(s.apply(1.0, OK, 1.5), 1.0);
    }

    #[test]
    fn too_few_held_out_events_give_no_floor_and_old_checkpoints_none() {
        let s = Signatures::fit([OK; 999].iter().copied());
        assert_eq!(s.floor("port conflict"), None);
        assert_eq!(s.apply(0.5, PORT, 1.5), 0.5);
        let old: Signatures = serde_json::from_str("{}").unwrap();
        assert_eq!(old.apply(0.5, PORT, 1.5), 0.5);
    }
}
