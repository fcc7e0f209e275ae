//! Robust baselines: a loss becomes an anomaly score as a z-score against the
//! median and MAD of recent losses of the same key, so a noisy service does not
//! drown a quiet one. While a key has too few losses, its kind's baseline
//! stands in. Baselines are frozen per model (the trainer's EVALUATE step
//! computes them) so an ongoing fault cannot teach itself into "normal".

use crate::contract::alert::BaselineOf;
use crate::event::Kind;
pub use crate::median::{median, Real};
use crate::tail::Tail;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Median and scaled MAD of a set of losses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub median: f32,
    /// 1.4826 x MAD: a standard deviation for normal data, robust to outliers.
    pub scale: f32,
    pub n: u32,
}

impl Stat {
    /// None for an empty set.
    pub fn of(losses: &[f32]) -> Option<Stat> {
        if losses.is_empty() {
            return None;
        }
        let mid = median(&mut losses.to_vec());
        let mut dev: Vec<f32> = losses.iter().map(|l| (l - mid).abs()).collect();
        let mad = median(&mut dev);
        Some(Stat {
            median: mid,
            scale: 1.4826 * mad,
            n: losses.len() as u32,
        })
    }
}

/// The baselines a model scores against.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baselines {
    pub keys: HashMap<String, Stat>,
    pub kinds: HashMap<Kind, Stat>,
    pub global: Option<Stat>,
    /// A key needs at least this many losses to stand on its own baseline.
    pub min_count: u32,
    /// Floor on the scale, in nats, so near-constant keys do not turn noise into alarms.
    pub min_scale: f32,
    /// Per kind, the TAIL_QUANTILE of held-out normal losses above their own
    /// key's median. Losses are heavy-tailed (free text, rare but normal
    /// events), so a MAD alone puts a fifth of normal events past z = 3; with
    /// the scale floored at tail / 3, a score of 3 means "as far above its
    /// key's median as only 1 in TAIL_QUANTILE normal events of its kind".
    #[serde(default)]
    pub tails: HashMap<Kind, f32>,
    /// How rare each key's surprisal is: what turns an event's
    /// statistic into the calibrated score the alert decision reads.
    #[serde(default)]
    pub surprise: Surprise,
}

impl Baselines {
    pub const DEFAULT_MIN_COUNT: u32 = 20;
    pub const DEFAULT_MIN_SCALE: f32 = 0.05;
    /// Most keys kept; past it the keys with fewest losses are dropped (they fall back to kind).
    pub const MAX_KEYS: usize = 50_000;
    pub const TAIL_QUANTILE: f64 = 0.999;

    /// Builds baselines from (key, kind, loss) observations.
    pub fn fit<'a>(obs: impl IntoIterator<Item = (&'a str, Kind, f32)>) -> Baselines {
        let mut by_key: HashMap<&str, Vec<f32>> = HashMap::new();
        let mut by_kind: HashMap<Kind, Vec<f32>> = HashMap::new();
        let mut all = Vec::new();
        let mut kept = Vec::new();
        for (k, kind, l) in obs {
            if !l.is_finite() {
                continue;
            }
            kept.push((k, kind, l));
            by_key.entry(k).or_default().push(l);
            by_kind.entry(kind).or_default().push(l);
            all.push(l);
        }
        let mut keys: Vec<(String, Stat)> = by_key
            .into_iter()
            .filter(|(_, v)| v.len() as u32 >= Self::DEFAULT_MIN_COUNT)
            .filter_map(|(k, v)| Stat::of(&v).map(|s| (k.to_string(), s)))
            .collect();
        if keys.len() > Self::MAX_KEYS {
            keys.sort_by(|a, b| b.1.n.cmp(&a.1.n));
            keys.truncate(Self::MAX_KEYS);
        }
        let keys: HashMap<String, Stat> = keys.into_iter().collect();
        let kind_stats: HashMap<Kind, Stat> = by_kind
            .iter()
            .filter_map(|(k, v)| Stat::of(v).map(|s| (*k, s)))
            .collect();
        let mut residuals: HashMap<Kind, Vec<f32>> = HashMap::new();
        for (key, kind, l) in &kept {
            let m = keys
                .get(*key)
                .or_else(|| kind_stats.get(kind))
                .map_or(0.0, |s| s.median);
            residuals.entry(*kind).or_default().push(l - m);
        }
        let tails = residuals
            .into_iter()
            .map(|(k, mut r)| {
                r.sort_by(|a, b| a.total_cmp(b));
                let i = ((r.len() as f64 - 1.0) * Self::TAIL_QUANTILE).round() as usize;
                (k, r[i.min(r.len() - 1)].max(0.0))
            })
            .collect();
        Baselines {
            keys,
            tails,
            kinds: kind_stats,
            global: Stat::of(&all),
            min_count: Self::DEFAULT_MIN_COUNT,
            min_scale: Self::DEFAULT_MIN_SCALE,
            surprise: Surprise::default(),
        }
    }

    /// The baseline an event of `key` and `kind` is scored against.
    pub fn stat(&self, key: &str, kind: Kind) -> (Option<Stat>, BaselineOf) {
        if let Some(s) = self.keys.get(key).filter(|s| s.n >= self.min_count) {
            return (Some(*s), BaselineOf::Key);
        }
        if let Some(s) = self.kinds.get(&kind) {
            return (Some(*s), BaselineOf::Kind);
        }
        match self.global {
            Some(s) => (Some(s), BaselineOf::Global),
            None => (None, BaselineOf::None),
        }
    }

    /// The robust z-score of `loss`; 0 when there is no baseline at all.
    pub fn score(&self, key: &str, kind: Kind, loss: f32) -> (f32, Option<Stat>) {
        let tail = self.tails.get(&kind).copied().unwrap_or(0.0) / 3.0;
        match self.stat(key, kind).0 {
            Some(s) => (
                (loss - s.median) / s.scale.max(tail).max(self.min_scale),
                Some(s),
            ),
            None => (0.0, None),
        }
    }
}

/// The calibration of the surprisal (the scorer's `surprisal`),
/// fitted at EVALUATE on held-out events and shipped with the model: per
/// kind, the tail of its values ([`Tail`]), from which an event's rarity is
/// read.
///
/// Per kind, not per key: EVALUATE holds out a few dozen events per key,
/// too few for a key's own tail, and standardising each key by its median
/// and MAD first (as the loss baselines do) made it worse: on a simulated
/// fault-free 3 h (203 services), 250 false alerts an hour against 100 for
/// the kind's tail alone, since a key's MAD from 30 events is often far
/// too small and its few large values become extreme.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Surprise {
    /// Per kind, median and scaled MAD of its values (what an alert reports).
    pub kinds: HashMap<Kind, Stat>,
    /// Per kind, the tail of its values.
    pub tails: HashMap<Kind, Tail>,
    /// The same over every kind, for a kind with too few held-out events.
    pub all: Option<Tail>,
    /// Per template, its most surprising held-out values: a cap on the
    /// tails' score ([`crate::rarity`]).
    pub templates: crate::rarity::Templates,
    /// Per known failure signature, how often the curriculum's event
    /// documents carried it: a floor under the score ([`crate::signature`]).
    pub signatures: crate::signature::Signatures,
    /// The telemetry the model's training has covered: its first and last
    /// event's time, unix ms, over its cold start and every incremental
    /// cycle since; None when unknown. Sets how far the configured risk
    /// applies ([`crate::policy::Policy::for_model`]).
    pub seen: Option<(i64, i64)>,
    /// The statistic the tails and caps were fitted on
    /// ([`Surprise::STATISTIC`]); empty in checkpoints from before it was
    /// named, whose values were the excess surprise.
    pub statistic: String,
}

/// One event's calibrated surprise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibrated {
    /// `-log10` of the share of normal events of its kind as surprising.
    pub score: f32,
    pub of: BaselineOf,
    /// Its kind's median and scale.
    pub stat: Option<Stat>,
    pub tail: Option<Tail>,
}

impl Surprise {
    /// Floor of a tail's scale, in nats: beyond the tail's start, each nat
    /// of surprisal makes an event at most e times rarer, so a sample
    /// whose top is flat (thousands of identical HDFS blocks) does not turn
    /// a fraction of a nat into an alarm.
    pub const MIN_SCALE: f32 = 1.0;

    /// The statistic this build scores with (the scorer's `surprisal`).
    /// Tails fitted on another one say nothing about its values: the scorer
    /// drops them ([`Surprise::for_this_build`]).
    pub const STATISTIC: &'static str = "surprisal";

    /// Fits from (kind, surprisal) of held-out events.
    pub fn fit(obs: impl IntoIterator<Item = (Kind, f32)>) -> Surprise {
        let mut by_kind: HashMap<Kind, Vec<f32>> = HashMap::new();
        let mut all = Vec::new();
        for (kind, x) in obs {
            if x.is_finite() {
                by_kind.entry(kind).or_default().push(x);
                all.push(x);
            }
        }
        Surprise {
            kinds: by_kind
                .iter()
                .filter_map(|(k, v)| Stat::of(v).map(|s| (*k, s)))
                .collect(),
            tails: by_kind
                .iter()
                .filter_map(|(k, v)| Tail::fit(v, Self::MIN_SCALE).map(|t| (*k, t)))
                .collect(),
            all: Tail::fit(&all, Self::MIN_SCALE),
            templates: Default::default(),
            signatures: Default::default(),
            seen: None,
            statistic: Self::STATISTIC.into(),
        }
    }

    /// These tails if they were fitted on this build's statistic; else
    /// none (the scorer then fits its own on the events it scores, and
    /// scores 0 until it has: a checkpoint from an older build neither
    /// floods nor silences by calibrating the wrong values), keeping what
    /// is no statistic's (the signatures, the model's age).
    pub fn for_this_build(self) -> Surprise {
        if self.statistic == Self::STATISTIC {
            return self;
        }
        if !self.tails.is_empty() || self.all.is_some() {
            tracing::warn!(
                fitted_on = %self.statistic,
                scores = Self::STATISTIC,
                "the model's shipped tails were fitted on another statistic: calibrating online"
            );
        }
        Surprise {
            signatures: self.signatures,
            seen: self.seen,
            statistic: Self::STATISTIC.into(),
            ..Surprise::default()
        }
    }

    /// How much telemetry time the model's training has covered.
    pub fn seen_ms(&self) -> Option<i64> {
        self.seen.map(|(a, b)| b.saturating_sub(a).max(0))
    }

    /// `seen` widened by the events from `first` to `last`.
    pub fn widen(seen: Option<(i64, i64)>, first: i64, last: i64) -> Option<(i64, i64)> {
        Some(match seen {
            Some((a, b)) => (a.min(first), b.max(last)),
            None => (first, last),
        })
    }

    /// Fits from (kind, template key, source, surprisal) of held-out
    /// events: the tails and the templates' caps.
    pub fn fit_with_templates(obs: &[(Kind, u64, &str, f32)]) -> Surprise {
        Surprise {
            templates: crate::rarity::Templates::fit(obs.iter().copied()),
            ..Surprise::fit(obs.iter().map(|&(k, _, _, x)| (k, x)))
        }
    }

    /// The tail an event of `kind` is calibrated against: its kind's, or
    /// the one over every kind.
    pub fn tail(&self, kind: Kind) -> Option<Tail> {
        self.tails.get(&kind).copied().or(self.all)
    }

    /// How rare `x` is for an event of `kind`. Score 0 without a fitted
    /// tail (too few held-out events): no alert without calibration.
    pub fn calibrate(&self, kind: Kind, x: f32) -> Calibrated {
        let (tail, of) = match self.tails.get(&kind) {
            Some(t) => (Some(*t), BaselineOf::Kind),
            None => (self.all, BaselineOf::Global),
        };
        Calibrated {
            score: tail.map_or(0.0, |t| t.score(x)),
            of: if tail.is_some() { of } else { BaselineOf::None },
            stat: self.kinds.get(&kind).copied(),
            tail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heavy_tail_widens_the_scale() {
        // 990 near-identical losses and 10 rare-but-normal large ones.
        let mut obs: Vec<f32> = (0..990).map(|i| 1.0 + (i % 2) as f32 * 0.01).collect();
        obs.extend([5.0; 10]);
        let b = Baselines::fit(obs.iter().map(|l| ("k", Kind::Log, *l)));
        // MAD alone would make a 5.0 loss a z of hundreds; the tail makes it ~3.
        let (z, _) = b.score("k", Kind::Log, 5.0);
        assert!((2.5..=3.5).contains(&z), "{z}");
        assert!(b.score("k", Kind::Log, 20.0).0 > 10.0);
    }

    #[test]
    fn tails_fitted_on_another_statistic_are_dropped_the_rest_kept() {
        let obs: Vec<(Kind, f32)> = (0..2000).map(|i| (Kind::Log, (i % 97) as f32)).collect();
        let fitted = Surprise::fit(obs.iter().copied());
        assert_eq!(fitted.statistic, Surprise::STATISTIC);
        assert!(fitted.calibrate(Kind::Log, 500.0).score > 3.0);
        assert_eq!(fitted.clone().for_this_build(), fitted);
        // A checkpoint from before the statistic was named: its values were
        // the excess surprise.
        let old = Surprise {
            statistic: String::new(),
            seen: Some((0, 1)),
            ..fitted
        };
        let now = old.for_this_build();
        assert!(now.tails.is_empty() && now.all.is_none() && now.kinds.is_empty());
        assert_eq!(now.calibrate(Kind::Log, 500.0).score, 0.0);
        assert_eq!(now.seen, Some((0, 1)));
        assert_eq!(now.statistic, Surprise::STATISTIC);
    }

    #[test]
    fn median_and_mad() {
        let s = Stat::of(&[1.0, 2.0, 3.0, 4.0, 100.0]).unwrap();
        assert_eq!(s.median, 3.0);
        assert!((s.scale - 1.4826).abs() < 1e-5);
    }

    #[test]
    fn key_falls_back_to_kind() {
        let mut obs: Vec<(String, Kind, f32)> = (0..30)
            .map(|i| ("a".to_string(), Kind::Log, 1.0 + (i % 3) as f32))
            .collect();
        obs.push(("b".into(), Kind::Log, 9.0));
        let b = Baselines::fit(obs.iter().map(|(k, kind, l)| (k.as_str(), *kind, *l)));
        assert_eq!(b.stat("a", Kind::Log).1, BaselineOf::Key);
        assert_eq!(b.stat("b", Kind::Log).1, BaselineOf::Kind);
        assert_eq!(b.stat("c", Kind::Pulse).1, BaselineOf::Global);
        let s = b.keys["a"];
        let scale = s.scale.max(b.tails[&Kind::Log] / 3.0).max(b.min_scale);
        let (z, _) = b.score("a", Kind::Log, s.median + 3.0 * scale);
        assert!((z - 3.0).abs() < 1e-3, "{z}");
    }
}
