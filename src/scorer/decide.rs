//! The alert decision, one implementation for the live scorer and for
//! `proprio eval`'s replay, so eval measures the detector that runs.
//!
//! From an event's calibrated score ([`crate::tail`]: `-log10` of the share
//! of normal events of its kind that surprise the model as much) to an
//! alert: the key's [`Evidence`] over its recent events must reach the
//! level the operator's risk stands for ([`Policy`]), and then the
//! per (source, kind) [`Cooldown`] and the mute have their say.

use crate::event::Kind;
use std::collections::{HashMap, VecDeque};

pub use crate::policy::Policy;

/// One event's decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The event's own calibrated score.
    pub score: f32,
    /// Its key's evidence, this event included.
    pub evidence: f32,
    /// What the policy's level is compared with: the evidence, but at most
    /// `k` times the event's own score, so an unremarkable event of a key
    /// whose other events were surprising does not alert on their account
    /// (the event that makes the evidence cross always carries its share);
    /// plus a slow key's allowance ([`Evidence::push`]).
    pub weight: f32,
    /// The weight reached the policy's level.
    pub alert: bool,
}

/// The decision over a stream of scored events, in event order per key.
pub struct Decider {
    policy: Policy,
    level: f32,
    evidence: Evidence,
}

impl Decider {
    pub fn new(policy: Policy, max_keys: usize) -> Decider {
        Decider {
            level: policy.level(),
            evidence: Evidence::new(policy.evidence_window_ms, policy.evidence_k, max_keys),
            policy,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Another policy's level (a new model's, [`Policy::for_model`]); the
    /// evidence gathered so far stays.
    pub fn set_policy(&mut self, policy: Policy) {
        self.level = policy.level();
        self.policy = policy;
    }

    /// Weighs a pulse of `key`, as [`Decider::decide`]; its score is what
    /// the pulses repeating it restate ([`Decider::restated`]).
    pub fn decide_pulse(&mut self, key: &str, ts: i64, score: f32) -> Decision {
        let d = self.decide(key, ts, score);
        self.evidence.entry(key).line = Some(score);
        d
    }

    /// A pulse of `key` at `ts` repeating its key's last one
    /// ([`crate::curriculum::Repeats`]), left unscored. On a key that speaks
    /// faster than the evidence window it restates that pulse, whose score
    /// it carries into the evidence (Some, the decision); else, or when the
    /// key's last pulse is not known, it is only heard (None).
    ///
    /// Why a fast key's repeat counts: a fault's pulses repeat while the
    /// state lasts (a p50 held at 3 s renders the same words every 30 s),
    /// and heard only, the repeats weighed 0, as the two thirds of normal
    /// pulses that repeat do (measured: the simulated VRAM pressure's
    /// pulses ranked at per-event AUROC 0.790, 1.000 restated). Why a slow
    /// key's does not: each of its samples is a window of its own, so a
    /// restated sample would alert again every window for as long as the
    /// state lasts (the metrics benchmark's false alarms at the live level,
    /// 0.23 -> 0.42 a series a day, docs/EVAL.md).
    pub fn restated(&mut self, key: &str, ts: i64) -> Option<Decision> {
        let window_ms = self.evidence.window_ms;
        let r = self.evidence.entry(key);
        match r.line {
            Some(score) if r.faster_than(window_ms) => Some(self.decide(key, ts, score)),
            _ => {
                r.hear(ts);
                None
            }
        }
    }

    /// Weighs an event of `key` at `ts` whose calibrated score is `score`.
    pub fn decide(&mut self, key: &str, ts: i64, score: f32) -> Decision {
        let (evidence, allowance) = self.evidence.push(key, ts, score);
        let own = if score.is_finite() {
            score.max(0.0)
        } else {
            0.0
        };
        let weight = evidence.min(own * self.evidence.k as f32) + allowance;
        Decision {
            score,
            evidence,
            weight,
            alert: crosses(weight, self.level),
        }
    }
}

/// A value alerts when it reaches the level (at or above).
pub fn crosses<T: PartialOrd>(score: T, threshold: T) -> bool {
    score >= threshold
}

/// Remembers the last alert per (source, kind); bounded.
pub struct Cooldown {
    last: HashMap<(String, Kind), i64>,
    window_ms: i64,
}

impl Cooldown {
    const MAX: usize = 10_000;

    /// At most one alert per (source, kind) per `window_ms` of event time.
    pub fn new(window_ms: i64) -> Cooldown {
        Cooldown {
            last: HashMap::new(),
            window_ms,
        }
    }

    /// True when an alert at `ts` may go out, and then records it.
    pub fn admit(&mut self, source: &str, kind: Kind, ts: i64) -> bool {
        if let Some(&t) = self.last.get(&(source.to_string(), kind)) {
            if ts >= t && ts - t < self.window_ms {
                return false;
            }
        }
        if self.last.len() >= Self::MAX {
            let w = self.window_ms;
            self.last.retain(|_, t| ts - *t < w);
        }
        self.last.insert((source.to_string(), kind), ts);
        true
    }
}

/// Evidence over time: per key, the mean of the `k` highest scores (negative
/// ones as 0) among the key's events in the `window_ms` ending at the
/// newest, a missing one as 0 as far as the key's cadence could have filled
/// it. A fault makes a key say several surprising things in a short time; a
/// chatty key's lone surprising event is divided by `k`. A key that speaks
/// less often than the window (a metric sampled every 5 minutes) cannot say
/// two things in it: its lone event is divided by what its usual interval
/// lets the window hold, at least 1, so its sample counts whole.
///
/// And the risk is per window, not per event, for a key that speaks less
/// often than the window: its event stands for `interval / window` windows
/// (at most [`Evidence::MAX_SLOW`]), and its weight is allowed `log10` of
/// that, so a metric sampled every 5 minutes may alert on a sample 5 times
/// as common as a key deciding once a minute needs, and both spend the same
/// false alerts an hour. Per event, a slow series would alert far less often
/// than the operator's risk says (measured: the metrics benchmark's
/// 5-minute series, docs/EVAL.md).
///
/// Measured with `proprio eval --evidence S:K` (src/eval): on the simulated
/// OS it turns bursts the per-event threshold misses into detections
/// without adding false alerts. Bounded in keys like [`super::Contexts`].
pub struct Evidence {
    window_ms: i64,
    k: usize,
    max_keys: usize,
    recent: HashMap<String, Recent>,
}

/// One key's events in the window (never empty once pushed: the newest is
/// always in it) and its usual interval.
#[derive(Default)]
struct Recent {
    events: VecDeque<(i64, f32)>,
    /// The newest event heard, scored or not (a repeat only heard, [`Decider::restated`]).
    heard: Option<i64>,
    /// Moving mean of `ln` of the gaps between its events, ms: a geometric
    /// mean, so a bursty key's many short gaps are not hidden by its pauses.
    ln_gap: Option<f64>,
    /// The own score of its last scored pulse ([`Decider::restated`]).
    line: Option<f32>,
}

impl Recent {
    /// Weight of a new gap in the moving mean.
    const ALPHA: f64 = 0.1;

    /// The newest event's time.
    fn last(&self) -> Option<i64> {
        self.heard
    }

    /// An event at `ts_ms`: its gap to the previous one heard (at least 1
    /// ms) joins the moving mean; one older than that changes nothing (an
    /// unscored event heard before the scored ones of its batch).
    fn hear(&mut self, ts_ms: i64) {
        match self.heard {
            Some(last) if ts_ms < last => return,
            Some(last) => {
                let gap = (ts_ms - last).max(1) as f64;
                self.ln_gap = Some(match self.ln_gap {
                    Some(m) => m + Self::ALPHA * (gap.ln() - m),
                    None => gap.ln(),
                });
            }
            None => {}
        }
        self.heard = Some(ts_ms);
    }

    /// Adds an event at `ts_ms` with `score`.
    fn push(&mut self, ts_ms: i64, score: f32) {
        self.hear(ts_ms);
        self.events.push_back((ts_ms, score));
    }

    /// Its usual interval is known and shorter than `window_ms`.
    fn faster_than(&self, window_ms: i64) -> bool {
        self.ln_gap.is_some_and(|m| m.exp() < window_ms as f64)
    }

    /// How many events the window can be expected to hold, between 1 and
    /// `k` (`k` while the cadence is unknown).
    fn expected(&self, window_ms: i64, k: usize) -> f32 {
        match self.ln_gap {
            Some(m) => (window_ms as f64 / m.exp()).clamp(1.0, k as f64) as f32,
            None => k as f32,
        }
    }

    /// `log10` of the windows one of its events stands for, between 0 and
    /// `log10(Evidence::MAX_SLOW)` (0 while the cadence is unknown).
    fn allowance(&self, window_ms: i64) -> f32 {
        self.ln_gap.map_or(0.0, |m| {
            (m.exp() / window_ms as f64)
                .clamp(1.0, Evidence::MAX_SLOW)
                .log10() as f32
        })
    }
}

impl Evidence {
    /// The most windows one event may stand for: a key heard from once an
    /// hour is held to a tenth of its events' rarity, not a sixtieth, so a
    /// rare key's interval, estimated from few gaps, cannot make its events
    /// common enough to alert on.
    pub const MAX_SLOW: f64 = 10.0;

    pub fn new(window_ms: i64, k: usize, max_keys: usize) -> Evidence {
        Evidence {
            window_ms,
            k: k.max(1),
            max_keys: max_keys.max(1),
            recent: HashMap::new(),
        }
    }

    /// An event of `key` at `ts_ms` left unscored (a pulse repeating its
    /// key's last one, [`crate::curriculum::Repeats`]): it counts for the
    /// key's cadence, which is how often the key speaks, not how often it
    /// says something new.
    pub fn hear(&mut self, key: &str, ts_ms: i64) {
        self.entry(key).hear(ts_ms);
    }

    fn entry(&mut self, key: &str) -> &mut Recent {
        if !self.recent.contains_key(key) && self.recent.len() >= self.max_keys {
            // Forget the keys whose newest event is oldest (half of them).
            super::keep_newer_half(&mut self.recent, |r| r.last());
        }
        self.recent.entry(key.to_string()).or_default()
    }

    /// Adds `score` of an event of `key` at `ts_ms`; returns the key's
    /// evidence and its slow-key allowance (see the type's doc).
    pub fn push(&mut self, key: &str, ts_ms: i64, score: f32) -> (f32, f32) {
        let (window_ms, k) = (self.window_ms, self.k);
        let r = self.entry(key);
        r.push(
            ts_ms,
            if score.is_finite() {
                score.max(0.0)
            } else {
                0.0
            },
        );
        let q = &mut r.events;
        while q.front().is_some_and(|&(t, _)| t <= ts_ms - window_ms) {
            q.pop_front();
        }
        let mut top: Vec<f32> = q.iter().map(|&(_, v)| v).collect();
        top.sort_by(|a, b| b.total_cmp(a));
        let held = top.len().min(k) as f32;
        let expected = r.expected(window_ms, k);
        (
            top.iter().take(k).sum::<f32>() / held.max(expected),
            r.allowance(window_ms),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_divides_a_lone_spike_and_keeps_a_burst() {
        let mut e = Evidence::new(30_000, 2, 10);
        assert_eq!(e.push("a", 0, 6.0).0, 3.0);
        // 40 s later the spike has left the window, and the key's one gap
        // says it speaks less often than the window: its event counts whole.
        assert_eq!(e.push("a", 40_000, 1.0).0, 1.0);
        assert_eq!(e.push("a", 41_000, 4.0).0, 2.5);
        assert_eq!(e.push("a", 42_000, -3.0).0, 2.5);
        assert_eq!(e.push("b", 42_000, 4.0).0, 2.0);
    }

    #[test]
    fn a_key_too_slow_to_fill_the_window_is_not_divided_for_it() {
        let mut e = Evidence::new(60_000, 2, 10);
        // A metric sampled every 5 minutes, then a spike: counted whole.
        for i in 0..10 {
            e.push("slow", i * 300_000, 0.5);
        }
        assert_eq!(e.push("slow", 10 * 300_000, 6.0).0, 6.0);
        // Every 10 s: the lone spike is halved, a burst is not.
        for i in 0..30 {
            e.push("chatty", i * 10_000, 0.5);
        }
        assert_eq!(e.push("chatty", 300_000, 6.0).0, 3.25);
        assert_eq!(e.push("chatty", 310_000, 6.0).0, 6.0);
        // Every 40 s: its previous event is in the window, the mean of two.
        for i in 0..30 {
            e.push("mid", i * 40_000, 0.0);
        }
        assert_eq!(e.push("mid", 1_200_000, 6.0).0, 3.0);
        // Unknown cadence (a first event): divided by k, as before.
        assert_eq!(e.push("new", 0, 6.0).0, 3.0);
    }

    #[test]
    fn a_slow_key_is_allowed_the_windows_its_event_stands_for() {
        let mut e = Evidence::new(60_000, 2, 10);
        let every = |e: &mut Evidence, key: &str, gap: i64| {
            (0..20).map(|i| e.push(key, i * gap, 1.0).1).last().unwrap()
        };
        // Every 5 minutes: 5 windows, log10 5.
        assert!((every(&mut e, "5m", 300_000) - 5f32.log10()).abs() < 1e-4);
        // Once a minute or faster: none.
        assert!(every(&mut e, "1m", 60_000) < 1e-6);
        assert!(every(&mut e, "10s", 10_000) < 1e-6);
        // Once an hour: at most a decade.
        assert!((every(&mut e, "1h", 3_600_000) - 1.0).abs() < 1e-4);
        // A first event: none.
        assert_eq!(e.push("new", 0, 6.0).1, 0.0);
        // Through the decision: a 5-minute series alerts at 4 - 0.7 = 3.3,
        // a 10 s one needs 4 (and company).
        let mut d = Decider::new(Policy::default(), 100);
        for i in 0..20 {
            assert!(!d.decide("5m", i * 300_000, 0.5).alert);
            d.decide("10s", i * 10_000, 0.5);
        }
        let x = d.decide("5m", 20 * 300_000, 3.4);
        assert!(
            x.alert && (x.weight - 3.4 - 5f32.log10()).abs() < 1e-4,
            "{x:?}"
        );
        assert!(!d.decide("10s", 200_000, 3.9).alert);
        // A key heard every 10 s but scored every 5 minutes (its repeated
        // pulses unscored) is a 10 s key: no allowance, its lone spike halved.
        let mut d = Decider::new(Policy::default(), 100);
        for i in 0..600 {
            if i % 30 == 0 {
                d.decide("k", i * 10_000, 0.5);
            } else {
                // Not a pulse it restates: only heard.
                assert!(d.restated("k", i * 10_000).is_none());
            }
        }
        let x = d.decide("k", 6_000_000, 6.0);
        assert!(!x.alert && x.weight == 3.0, "{x:?}");
    }

    #[test]
    fn a_lone_spike_waits_for_company_unless_it_is_extreme() {
        let p = Policy {
            risk: 1e-5,
            evidence_window_ms: 60_000,
            evidence_k: 2,
        };
        let mut d = Decider::new(p, 100);
        // One event at 6 (1 in a million) is evidence 3: no alert.
        assert!(!d.decide("a", 0, 6.0).alert);
        // A second one within the minute makes a burst.
        let x = d.decide("a", 10_000, 5.0);
        assert_eq!(x.evidence, 5.5);
        assert!(x.alert);
        // Another key is on its own; 10+ alone is enough.
        assert!(!d.decide("b", 10_000, 9.0).alert);
        assert!(d.decide("c", 10_000, 10.0).alert);
        assert!((Policy::default().level() - 4.0).abs() < 1e-3);
        // An ordinary event right after a surprising one does not ride on
        // it: the key's evidence is high, the event's share is not.
        let x = d.decide("c", 11_000, 0.1);
        assert_eq!(x.evidence, 5.05);
        assert!((x.weight - 0.2).abs() < 1e-6 && !x.alert);
        // A surprising one of its own does.
        assert!(d.decide("c", 12_000, 3.0).alert);
    }

    #[test]
    fn a_fast_keys_repeated_pulse_carries_its_score_and_a_slow_keys_is_heard() {
        let mut d = Decider::new(Policy::default(), 100);
        // Every 10 s: a surprising pulse, then its repeats, restated.
        for i in 0..20 {
            d.decide_pulse("fast", i * 10_000, 0.5);
        }
        let first = d.decide_pulse("fast", 200_000, 5.0);
        assert!(!first.alert, "{first:?}");
        let again = d.restated("fast", 210_000).expect("restated");
        assert_eq!(again.score, 5.0);
        assert!(again.alert, "{again:?}");
        // A log line of the key is not what a pulse repeats.
        d.decide("fast", 215_000, 0.1);
        assert_eq!(d.restated("fast", 220_000).map(|x| x.score), Some(5.0));
        // Every 5 minutes: each sample is its own window; a repeat is heard.
        for i in 0..20 {
            d.decide_pulse("slow", i * 300_000, 0.5);
        }
        d.decide_pulse("slow", 6_000_000, 5.0);
        assert!(d.restated("slow", 6_300_000).is_none());
        // A key whose pulse was never scored: heard.
        assert!(d.restated("new", 0).is_none());
    }

    #[test]
    fn at_the_threshold_alerts() {
        assert!(crosses(3.0, 3.0));
        assert!(!crosses(2.99, 3.0));
    }

    #[test]
    fn cooldown_is_per_source_and_kind_in_event_time() {
        let mut c = Cooldown::new(60_000);
        assert!(c.admit("a", Kind::Log, 0));
        assert!(!c.admit("a", Kind::Log, 59_999));
        assert!(c.admit("b", Kind::Log, 1));
        assert!(c.admit("a", Kind::Log, 60_000));
    }
}
