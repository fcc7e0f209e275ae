//! The live calibration of the surprisal: the tails the model shipped
//! with (fitted at EVALUATE, [`Surprise`]), and per kind a tail refitted on
//! the scorer's own recent values once it has [`Tail::MIN_N`] of them; an
//! event's score is the lower of the two. One type for the live scorer,
//! `proprio score` and `proprio eval`'s replay, so eval measures the
//! calibration that runs.
//!
//! Why the lower: the scorer's own tail is there to say "normal is wider
//! than the model was told", never to make the detector more eager than
//! its evaluated calibration. Replacing the shipped tail instead, on the
//! simulated mixed day (`proprio eval` from the score cache, docs/EVAL.md)
//! 777 false alerts against 8: a 4 096-value window estimates the tail's
//! shape with an error of about 0.2 (the shipped fit read 16 788 values),
//! and one service's normal 30-nat pulses, 4.0 under the shipped tail,
//! crossed 5 whenever the window's shape came out light.
//!
//! Why online: EVALUATE fits on a few held-out curriculum documents per key
//! (tens, for a young system), scored in the curriculum's context. The
//! scorer sees the whole stream: events the harvester's budget left out of
//! the curriculum, contexts it built since its own start, and whatever
//! changed since the model was trained. A tail that is even a few nats too
//! low turns every normal event of its kind into an alert; the scorer's own
//! recent values say what normal is for the events it scores.
//!
//! Why it stays robust: an event is scored before its value is learnt, and
//! a value its kind's own tail finds rarer than one normal event in 1 000
//! ([`LiveTails::UNLEARNT`]) is not learnt at all (SPOT's rule, Siffer et
//! al. 2017, with a lower cut than the alarm: leaving out the top 1e-3 of
//! normal values moves the quantiles the fit reads by a 1 000th of their
//! ranks, while a fault's values above it, which would shift them, stay
//! out; against the scorer's own tail only, so a shipped tail that is too
//! low cannot lock the flood in); the fit reads quantiles up to the top 5 %
//! of the window only ([`Tail::fit`]), so the rest of a fault moves the
//! tail only through the ranks it shifts; each kind admits at most
//! [`LiveTails::PER_MINUTE`] values a minute of event time, spread over the
//! minute by a stride from the previous minute's rate, so a burst is at
//! most 1/128 of a full window ([`LiveTails::WINDOW`] values, two hours or
//! more); and the evidence rule ([`super::decide::Evidence`]) still wants
//! two surprising events. The window restarts with each model
//! ([`LiveTails::follow`]): the surprisal is the model's, and so are
//! its values.
//!
//! Two guards keep a window from calling a failure normal. A source's
//! window, until it has a tail of its own, is guarded by its kind's
//! (without it, a source's first 20 values were learnt whatever they
//! were). And a kind's window has a tail no heavier-shaped than the
//! shipped one when that fit read at least as many values: the shape rests
//! on three quantiles, and a window's is noise that a heavy estimate
//! carries across a hundred scale units. On HDFS (`proprio eval --train
//! hdfs.jsonl --split 0.6 --group-by key --session-end`) the kind's window
//! of log lines, clustered in identical lines, read the heaviest shape (0.5,
//! the shipped 0.15), under which an `Unexpected error trying to delete
//! block` line 118 nats over its prediction scored 4.3, alone below the
//! evidence rule's two-event mean: per-block F1 over training seeds 1-5 went
//! from 0.78/0.94/0.94/0.91/0.93 to 0.91/0.97/0.94/0.91/0.93. A source's
//! window keeps its own shape: bounding it too cost the simulated
//! fault-free day 34 false incidents against 28 (a busy source's heavy
//! shape is how it widens its own normal); the kind's alone, none.
//!
//! Each scorer replica learns from the events it scores; replicas agree on
//! the shipped tails and converge on the same stream's quantiles.

use crate::baseline::{Calibrated, Stat, Surprise};
use crate::contract::alert::BaselineOf;
use crate::event::Kind;
use crate::tail::Tail;
use std::collections::{HashMap, VecDeque};

/// The tails an event is scored against: the model's, then the scorer's own.
#[derive(Debug, Clone, Default)]
pub struct LiveTails {
    /// The model the values belong to.
    version: Option<String>,
    shipped: Surprise,
    kinds: HashMap<Kind, Recent>,
    /// Per (source, kind), a smaller window: a source whose normal sits in
    /// its kind's tail (one busy service's pulses, a noisy worker) widens
    /// only its own normal. Bounded by [`LiveTails::MAX_SOURCES`].
    sources: HashMap<(String, Kind), Recent>,
}

/// One kind's recent values and the tail fitted on them.
#[derive(Debug, Clone, Default)]
struct Recent {
    values: VecDeque<f32>,
    /// Minute of event time being admitted, events seen and kept in it,
    /// and the stride it admits every so many events by.
    minute: i64,
    seen: u32,
    kept: u32,
    stride: u32,
    tail: Option<Tail>,
    stat: Option<Stat>,
}

impl Recent {
    /// Whether a value at `ts` enters the window: every `stride`-th event of
    /// the minute, at most [`LiveTails::PER_MINUTE`]. Only a later minute
    /// starts a new count (an out-of-order event counts against the
    /// current one), its stride from the last minute's rate.
    fn admit(&mut self, ts: i64, per: u32) -> bool {
        let minute = ts.div_euclid(60_000);
        if self.stride == 0 || minute > self.minute {
            self.stride = if self.stride > 0 && minute == self.minute + 1 {
                self.seen.div_ceil(per).max(1)
            } else {
                1
            };
            self.minute = minute;
            self.seen = 0;
            self.kept = 0;
        }
        self.seen += 1;
        let take = (self.seen - 1).is_multiple_of(self.stride) && self.kept < per;
        self.kept += take as u32;
        take
    }

    /// Learns `x` unless its own tail, or while it has none yet `guard`,
    /// finds it alarming; the tail's shape is at most `shipped`'s, if
    /// given, when that fit saw at least as many values.
    fn learn(
        &mut self,
        ts: i64,
        x: f32,
        (per_minute, window): (u32, usize),
        guard: Option<Tail>,
        shipped: Option<Tail>,
    ) {
        let alarming = self
            .tail
            .or(guard)
            .is_some_and(|t| t.score(x) >= LiveTails::UNLEARNT);
        if alarming || !self.admit(ts, per_minute) {
            return;
        }
        if self.values.len() >= window {
            self.values.pop_front();
        }
        self.values.push_back(x);
        if self.values.len() >= Tail::MIN_N {
            let v = self.values.make_contiguous();
            let max_xi = shipped
                .filter(|t| t.n as usize >= v.len())
                .map_or(Tail::MAX_XI, |t| t.xi);
            self.tail = Tail::fit_shaped(v, Surprise::MIN_SCALE, max_xi);
            self.stat = Stat::of(v);
        }
    }
}

impl LiveTails {
    /// Most values kept per kind: at [`LiveTails::PER_MINUTE`], 128 minutes
    /// or more of the kind's events.
    pub const WINDOW: usize = 4096;
    /// Most values a kind admits per minute of event time. A young window
    /// fills in seconds of a busy kind's first minute, so a new model's
    /// shipped tails decide only the first few events of each kind.
    pub const PER_MINUTE: u32 = 32;
    /// A value whose score against its kind's own tail reaches this (one
    /// normal event in 1 000) is not learnt. At the alert level (5) instead,
    /// a minute of values just below it (32 of a window's 1 952) raised the
    /// level for a risk of 1e-5 five times (the shape estimate is what
    /// moves); a sudden shift of a whole kind above it is learnt only by
    /// the next model, as befits one.
    pub const UNLEARNT: f32 = 3.0;
    /// A source's own window per kind: at [`LiveTails::SOURCE_PER_MINUTE`],
    /// the last two hours or more of its events, so that a minute of a
    /// fault's milder values is under 1 % of it (below the top 5 % the fit
    /// reads; at 256 values and 8 a minute, such a minute took a lone
    /// 80-nat event from 20 to below 10).
    pub const SOURCE_WINDOW: usize = 512;
    pub const SOURCE_PER_MINUTE: u32 = 4;
    /// Most (source, kind) windows kept: 2 KB each, so at most 20 MB; the
    /// least recently admitted half goes when full.
    pub const MAX_SOURCES: usize = 10_000;

    /// Scoring against `shipped` until the scorer's own values take over
    /// (its tails only if fitted on this build's statistic).
    pub fn new(shipped: Surprise) -> LiveTails {
        LiveTails {
            version: None,
            shipped: shipped.for_this_build(),
            kinds: HashMap::new(),
            sources: HashMap::new(),
        }
    }

    /// Follows the model in service: a new `version` brings its shipped
    /// tails and restarts the windows.
    pub fn follow(&mut self, version: &str, shipped: &Surprise) {
        if self.version.as_deref() != Some(version) {
            *self = LiveTails::new(shipped.clone());
            self.version = Some(version.to_string());
        }
    }

    /// How rare `x` is for an event of `source`, `kind` and template
    /// `template` ([`crate::rarity::template_key`], computed only when the
    /// template's cap could lower the score) at `ts`, then `x` learnt.
    pub fn calibrate(
        &mut self,
        source: &str,
        kind: Kind,
        template: impl FnOnce() -> u64,
        ts: i64,
        x: f32,
    ) -> Calibrated {
        let key = (source.to_string(), kind);
        let c = self.score(&key, template, x);
        if x.is_finite() {
            // A source's young window is guarded by its kind's tail, as it
            // stood before this value.
            let guard = self.kinds.get(&kind).and_then(|r| r.tail);
            let shipped = self.shipped.tail(kind);
            self.kinds.entry(kind).or_default().learn(
                ts,
                x,
                (Self::PER_MINUTE, Self::WINDOW),
                None,
                shipped,
            );
            if !self.sources.contains_key(&key) && self.sources.len() >= Self::MAX_SOURCES {
                super::keep_newer_half(&mut self.sources, |r| r.minute);
            }
            self.sources.entry(key).or_default().learn(
                ts,
                x,
                (Self::SOURCE_PER_MINUTE, Self::SOURCE_WINDOW),
                guard,
                None,
            );
        }
        c
    }

    /// How rare `x` is for an event of `source` and `kind` now, learning
    /// nothing: the shipped tail's score, or the kind's own tail's, or the
    /// source's own tail's, whichever is lowest (the own ones once fitted,
    /// or when nothing was shipped for the kind), capped by the template's
    /// own rarity at `x` among the shipped held-out events
    /// ([`crate::rarity::Templates::cap`]).
    pub fn calibrated(
        &self,
        source: &str,
        kind: Kind,
        template: impl FnOnce() -> u64,
        x: f32,
    ) -> Calibrated {
        self.score(&(source.to_string(), kind), template, x)
    }

    fn score(&self, key: &(String, Kind), template: impl FnOnce() -> u64, x: f32) -> Calibrated {
        let kind = key.1;
        let shipped = self.shipped.calibrate(kind, x);
        let own = |r: Option<&Recent>, of: BaselineOf| {
            r.and_then(|r| Some((r.tail?, r.stat)))
                .map(|(t, stat)| Calibrated {
                    score: t.score(x),
                    of,
                    stat,
                    tail: Some(t),
                })
        };
        let kind_own = own(self.kinds.get(&kind), BaselineOf::Kind);
        let source_own = own(self.sources.get(key), BaselineOf::Key);
        let mut best = shipped;
        for c in [kind_own, source_own].into_iter().flatten() {
            if best.tail.is_none() || c.score < best.score {
                best = c;
            }
        }
        // Below the lowest cap the kind allows, no template can lower the
        // score: the template key (a hash of the line) is not computed.
        let templates = &self.shipped.templates;
        if best.score > templates.lowest_cap(kind) {
            if let Some(cap) = templates.cap(kind, template(), x) {
                best.score = best.score.min(cap);
            }
        }
        best
    }

    /// [`LiveTails::calibrate`] for an event rendered as `rendered`, then
    /// raised to the floor of its known failure signature, if any
    /// ([`crate::signature`], lifted by the model's age margin): what the
    /// live scorer and eval score with.
    pub fn calibrate_line(
        &mut self,
        source: &str,
        kind: Kind,
        rendered: &str,
        ts: i64,
        x: f32,
    ) -> Calibrated {
        let template = || crate::rarity::template_key(rendered, source);
        let mut c = self.calibrate(source, kind, template, ts, x);
        let margin = crate::policy::Policy::age_margin(self.shipped.seen_ms());
        c.score = self
            .shipped
            .signatures
            .apply(c.score, source, rendered, margin);
        c
    }

    /// The tail fitted on the scorer's own values of `kind`, if any yet.
    pub fn own_tail(&self, kind: Kind) -> Option<Tail> {
        self.kinds.get(&kind).and_then(|r| r.tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    /// Deterministic pseudo-random uniforms (splitmix64), the `from`-th on:
    /// independent draws, as live values are (a stratified sequence taken
    /// every so many, as the window admits them, is not).
    fn uniforms(from: usize, n: usize) -> impl Iterator<Item = f64> {
        (from..from + n).map(|i| {
            let mut z = (i as u64)
                .wrapping_add(1)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        })
    }

    /// Excess surprise of normal events: a shifted Exp(scale).
    fn normal(from: usize, n: usize, shift: f64, scale: f64) -> Vec<f32> {
        uniforms(from, n)
            .map(|u| (shift - scale * (1.0 - u).ln()) as f32)
            .collect()
    }

    /// Feeds `values`, `per_min` a minute of event time from `t0`.
    fn feed(t: &mut LiveTails, kind: Kind, values: &[f32], t0: i64, per_min: usize) {
        for (i, &x) in values.iter().enumerate() {
            let ts = t0 + (i * 60_000 / per_min) as i64;
            t.calibrate("a", kind, || 0, ts, x);
        }
    }

    fn false_alarms(t: &LiveTails, kind: Kind, draws: &[f32]) -> usize {
        // The youngest model's level (1e-5): these tails are a young
        // model's.
        let level = Policy::default().for_model(None).level();
        draws
            .iter()
            .filter(|&&x| t.calibrated("a", kind, || 0, x).score >= level)
            .count()
    }

    #[test]
    fn live_values_correct_a_tail_fitted_too_low() {
        // Shipped: fitted on held-out values around -2 (what EVALUATE saw);
        // live normal events sit 15 nats higher (what the scorer sees).
        let shipped = Surprise::fit(normal(0, 60, -2.5, 0.3).into_iter().map(|x| (Kind::Log, x)));
        let mut t = LiveTails::default();
        t.follow("m1", &shipped);
        let fresh = normal(1_000_000, 20_000, 13.0, 1.5);
        // Against the shipped tail, every fresh normal event alerts.
        assert_eq!(false_alarms(&t, Kind::Log, &fresh), fresh.len());
        // Fewer than MIN_N live values: still the shipped tail.
        feed(
            &mut t,
            Kind::Log,
            &normal(0, Tail::MIN_N - 1, 13.0, 1.5),
            0,
            600,
        );
        assert!(t.own_tail(Kind::Log).is_none());
        // Three hours of live traffic, 600 events a minute.
        feed(&mut t, Kind::Log, &normal(0, 108_000, 13.0, 1.5), 0, 600);
        let own = t.own_tail(Kind::Log).expect("a tail of its own");
        assert_eq!(own.n as usize, LiveTails::WINDOW);
        // At a risk of 1e-5, 20 000 fresh draws should alert 0.2 times.
        let fa = false_alarms(&t, Kind::Log, &fresh);
        println!("own {own:?}: {fa} false alarms in 20 000 fresh draws");
        assert!(fa <= 2, "{fa} false alarms in 20 000, {own:?}");
        // A rare extreme (the OOM kill was 386 nats) still scores high.
        assert!(
            t.calibrated("a", Kind::Log, || 0, 100.0).score >= 10.0,
            "{own:?}"
        );
        assert!(
            t.calibrated("a", Kind::Log, || 0, 386.0).score >= 15.0,
            "{own:?}"
        );
        // Another kind is untouched: still the shipped (global) tail.
        assert!(t.own_tail(Kind::Flux).is_none());
    }

    #[test]
    fn a_kinds_window_is_no_heavier_tailed_than_a_larger_shipped_fit() {
        // Shipped: 20 000 exponential values (shape 0). Live: a lumpy
        // stream whose three quantiles read the heaviest shape (values in
        // clusters, as HDFS's identical lines give).
        let shipped = Surprise::fit(
            normal(0, 20_000, 0.0, 1.0)
                .into_iter()
                .map(|x| (Kind::Log, x)),
        );
        let lumpy: Vec<f32> = uniforms(7, 4_000)
            .map(|u| match u {
                u if u < 0.8 => 0.5 * u / 0.8,
                u if u < 0.9 => 0.5 + (u - 0.8) * 10.0,
                u if u < 0.95 => 1.5 + (u - 0.9) * 90.0,
                u => 6.0 + (u - 0.95) * 80.0,
            } as f32)
            .collect();
        assert!(Tail::fit(&lumpy, Surprise::MIN_SCALE).unwrap().xi >= 0.4);
        let mut t = LiveTails::new(shipped.clone());
        feed(&mut t, Kind::Log, &lumpy, 0, 32);
        let own = t.own_tail(Kind::Log).expect("a tail of its own");
        assert!(own.xi <= shipped.tail(Kind::Log).unwrap().xi, "{own:?}");
        // So, against the kind's window, a value a hundred nats past
        // anything seen stays extreme. (A source's own window keeps its
        // shape: a busy source widens its own normal by it.)
        assert!(own.score(118.0) >= 15.0, "{own:?}");
    }

    #[test]
    fn a_young_source_window_does_not_learn_what_its_kind_finds_alarming() {
        let mut t = LiveTails::new(Surprise::default());
        // The kind's own tail, from source "a"'s normal values.
        feed(&mut t, Kind::Log, &normal(0, 2_000, 0.0, 1.0), 0, 32);
        // Source "b" starts with a run of one anomaly's values.
        for i in 0..100 {
            t.calibrate("b", Kind::Log, || 0, 5_000_000 + i * 15_000, 60.0);
        }
        // Nothing of it was learnt: "b" has no tail of its own that calls
        // 60 usual, only the kind's.
        let c = t.calibrated("b", Kind::Log, || 0, 60.0);
        assert_eq!(c.of, BaselineOf::Kind, "{c:?}");
        assert_eq!(c.score, t.own_tail(Kind::Log).unwrap().score(60.0));
    }

    #[test]
    fn a_burst_of_anomalies_does_not_teach_itself_normal() {
        let mut t = LiveTails::new(Surprise::default());
        // Three hours of normal traffic, 600 a minute, then one minute in
        // which a fault makes 6 000 events at 80 nats.
        feed(&mut t, Kind::Log, &normal(0, 108_000, 0.0, 1.0), 0, 600);
        let before = t.own_tail(Kind::Log).unwrap().level(1e-5);
        feed(&mut t, Kind::Log, &[80.0; 6_000], 10_800_000, 6_000);
        let after = t.own_tail(Kind::Log).unwrap();
        // Alarming under the kind's own tail, none of it is learnt: the
        // fault's events keep their alarm.
        assert_eq!(after.level(1e-5), before, "{after:?}");
        assert_eq!(
            t.calibrated("a", Kind::Log, || 0, 80.0).score,
            Tail::MAX_SCORE
        );
        // A minute of unusual events (1 in 100 or rarer): those below the
        // cut are learnt, 32 values at most, a 128th of the window: the
        // level moves little.
        let mild: Vec<f32> = normal(0, 6_000, 4.6, 2.3);
        feed(&mut t, Kind::Log, &mild, 10_860_000, 6_000);
        let mild = t.own_tail(Kind::Log).unwrap();
        println!(
            "level(1e-5) {before} -> {} after the 80s -> {} after the mild minute",
            after.level(1e-5),
            mild.level(1e-5)
        );
        assert!(mild.level(1e-5) < 1.3 * before, "{before} -> {mild:?}");
        assert!(
            t.calibrated("a", Kind::Log, || 0, 80.0).score >= 10.0,
            "{mild:?}"
        );
    }

    #[test]
    fn a_new_model_restarts_the_windows() {
        let low = Surprise::fit(normal(0, 100, 0.0, 1.0).into_iter().map(|x| (Kind::Log, x)));
        let mut t = LiveTails::default();
        t.follow("m1", &low);
        feed(&mut t, Kind::Log, &normal(0, 600, 30.0, 1.0), 0, 600);
        assert!(t.calibrated("a", Kind::Log, || 0, 31.0).score < 2.0);
        // The same model again changes nothing; another starts afresh.
        t.follow("m1", &low);
        assert!(t.own_tail(Kind::Log).is_some());
        t.follow("m2", &low);
        assert!(t.own_tail(Kind::Log).is_none());
        assert!(t.calibrated("a", Kind::Log, || 0, 31.0).score >= 10.0);
        // Without any tail (no shipped one for the kind): no score at all.
        assert_eq!(
            LiveTails::default()
                .calibrated("a", Kind::Log, || 0, 1e6)
                .score,
            0.0
        );
    }

    #[test]
    fn its_own_tail_never_makes_the_scorer_more_eager() {
        // Shipped wide (Exp scale 3), live narrower (scale 1): a value the
        // shipped tail calls 1 in 100 stays so.
        let wide = Surprise::fit(
            normal(0, 5_000, 0.0, 3.0)
                .into_iter()
                .map(|x| (Kind::Log, x)),
        );
        let mut t = LiveTails::default();
        t.follow("m", &wide);
        feed(&mut t, Kind::Log, &normal(0, 60_000, 0.0, 1.0), 0, 600);
        let (own, x) = (t.own_tail(Kind::Log).unwrap(), 14.0);
        assert!(own.score(x) > 5.0, "{own:?}");
        let shipped = wide.calibrate(Kind::Log, x).score;
        assert!(shipped < 2.5, "{shipped}");
        assert_eq!(t.calibrated("a", Kind::Log, || 0, x).score, shipped);
    }

    #[test]
    fn admission_spreads_over_the_minute_at_the_last_minutes_rate() {
        let mut r = Recent::default();
        // First minute: every event until the cap.
        let first: usize = (0..1000)
            .filter(|_| r.admit(0, LiveTails::PER_MINUTE))
            .count();
        assert_eq!(first, LiveTails::PER_MINUTE as usize);
        // Next minute at the same rate: every 32nd, through the minute.
        let kept: Vec<usize> = (0..1000)
            .filter(|_| r.admit(60_000, LiveTails::PER_MINUTE))
            .collect();
        assert_eq!(kept.len(), 32);
        assert_eq!(kept.last(), Some(&992));
        // An out-of-order event counts against the current minute.
        assert!(!r.admit(0, LiveTails::PER_MINUTE));
        // After a silent gap, every event again.
        assert!(r.admit(600_000, LiveTails::PER_MINUTE) && r.admit(600_000, LiveTails::PER_MINUTE));
    }

    #[test]
    fn a_routine_template_is_capped_a_new_one_is_not() {
        // 2,000 held-out logs around 0 nats, and 20 of one rare-but-normal
        // template at 40 to 59 nats from four sources.
        let mut obs: Vec<(Kind, u64, &str, f32)> = normal(0, 2_000, 0.0, 1.0)
            .into_iter()
            .map(|x| (Kind::Log, 1, "s", x))
            .collect();
        let sources = ["a", "b", "c", "d"];
        obs.extend((0..20).map(|i| (Kind::Log, 2, sources[i % 4], 40.0 + i as f32)));
        let t = LiveTails::new(Surprise::fit_with_templates(&obs));
        // The tail alone calls 50 nats extreme; the template seen 10 times
        // at least that surprising in 2,020 is about 1 in 200.
        let new = t.calibrated("x", Kind::Log, || 3, 50.0).score;
        let routine = t.calibrated("x", Kind::Log, || 2, 50.0).score;
        assert!(new >= 10.0, "{new}");
        assert!(
            (routine - (2_020f32 / 10.0).log10()).abs() < 1e-3,
            "{routine}"
        );
    }

    #[test]
    fn a_signature_meets_the_configured_risk_whatever_the_models_age() {
        const OK: &str = "<|BOE|><|LOG|><|SVC|>a<|LEVEL|>INFO<|MSG|>GET /health 200<|EOE|>";
        const PORT: &str = "<|BOE|><|LOG|><|SVC|>a<|LEVEL|>ERROR<|MSG|>listen tcp 0.0.0.0:80: bind: address already in use<|EOE|>";
        // 20,000 normal events, none with a signature; the model finds the
        // port conflict ordinary (0 nats, its kind's median).
        let mut shipped = Surprise::fit(
            normal(0, 20_000, 0.0, 1.0)
                .into_iter()
                .map(|x| (Kind::Log, x)),
        );
        shipped.signatures = crate::signature::Signatures::fit([("a", OK); 20_000]);
        let floor = 20_001f32.log10();
        let hour = 3_600_000;
        let p = Policy::default();
        for (seen, young) in [
            (None, true),
            (Some((0, hour)), true),
            (Some((0, 24 * hour)), false),
        ] {
            let mut t = LiveTails::default();
            t.follow(
                "m",
                &Surprise {
                    seen,
                    ..shipped.clone()
                },
            );
            let level = p.for_model(seen.map(|(a, b)| b - a)).level();
            let s = t.calibrate_line("a", Kind::Log, PORT, 0, 0.0).score;
            // The floor, lifted by the model's age margin: as far above
            // the model's level as the count is above the configured one.
            let margin = level - p.level();
            assert!((s - (floor + margin)).abs() < 1e-3, "{seen:?}: {s}");
            assert!(
                s >= level && floor >= p.level(),
                "{seen:?}: {s} under {level}"
            );
            assert_eq!(margin > 0.5, young);
            // An ordinary line gets nothing from it.
            assert!(t.calibrate_line("a", Kind::Log, OK, 0, 0.0).score < 1.0);
        }
    }
}
