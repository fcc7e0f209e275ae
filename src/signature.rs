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
//! the sample can show. Per source: a source that carried the label is
//! judged by its own rate too, one that never did by how often a source
//! showed it for the first time ([`Signatures::floor`]), so one database's
//! nightly compaction does not make a far value common for every service.
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
use crate::curriculum::Said;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Per diagnosis label, how many normal events carried it, of how many.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Signatures {
    /// Events read.
    pub n: u64,
    /// Every label the diagnoser knows, with its hits (0 included: a label
    /// absent here gets no floor).
    pub hits: BTreeMap<String, u64>,
    /// The sources that carried a label at least once: their own count. A
    /// label routine for one source (a database's nightly compaction,
    /// `cpu=+7 disk_io_mb_s=+5`) is no rarer for it than its own rate,
    /// however rare the fleet finds it.
    pub sources: BTreeMap<String, Count>,
}

/// One source's events read and hits per label (labels it never carried
/// are absent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Count {
    pub n: u64,
    pub hits: BTreeMap<String, u64>,
}

/// The built-in diagnoser, built once (the scorer's and the trainer's).
pub fn diagnoser() -> &'static Diagnoser {
    static D: OnceLock<Diagnoser> = OnceLock::new();
    D.get_or_init(Diagnoser::default)
}

/// The label of a rendered line, as the floor reads it: what the event
/// says, not the flux event a pulse carries as context.
pub fn label_of(rendered: &str) -> Option<String> {
    diagnoser().diagnose(&strip_specials(&Said::without_carried(rendered)))
}

impl Signatures {
    /// Fewest held-out events before any floor applies.
    pub const MIN_N: u64 = 1_000;
    /// The highest score a floor gives (the tails' own ceiling).
    pub const MAX_FLOOR: f32 = 20.0;

    /// Counts the labels of normal events' (source, rendered line).
    pub fn fit<'a>(events: impl IntoIterator<Item = (&'a str, &'a str)>) -> Signatures {
        let mut c = Counter::default();
        for (source, rendered) in events {
            c.count(source, rendered);
        }
        c.finish()
    }

    /// The least score an event of `source` with diagnosis `label` has.
    pub fn floor(&self, label: &str, source: &str) -> Option<f32> {
        if self.n < Self::MIN_N {
            return None;
        }
        let h = match self.hits.get(label) {
            Some(&h) => h,
            None if self.counted(label) => 0,
            None => return None,
        };
        let own = self
            .sources
            .get(source)
            .and_then(|c| Some((c.n, *c.hits.get(label)?)));
        let f = match own {
            Some((ns, hs)) => rate(self.n, h).min(rate(ns, hs)),
            None => rate(self.n, self.carriers(label, h)),
        };
        Some(f.min(Self::MAX_FLOOR))
    }

    /// Whether `label` expands a pattern's label (`metric jumped: mem_mb`
    /// of `metric jumped: ${metric}`) that these counts knew: one that
    /// normal never carried was counted as 0. A label of a pattern the
    /// checkpoint's diagnoser lacked gets no floor.
    fn counted(&self, label: &str) -> bool {
        self.hits.keys().any(|k| {
            k.find("${")
                .is_some_and(|i| i > 0 && label.len() > i && label.starts_with(&k[..i]))
        })
    }

    /// How many normal events showed a source carrying `label` (seen `h`
    /// times) for the first time: the rate a source that never carried it
    /// is judged by. A label one database shows nightly (`h` in the
    /// hundreds, one carrier) is no evidence that another source shows it;
    /// ten sources showing it once each are. Checkpoints without per-source
    /// counts fall back to the fleet's hits.
    fn carriers(&self, label: &str, h: u64) -> u64 {
        if h == 0 || self.sources.is_empty() {
            return h;
        }
        let c = self
            .sources
            .values()
            .filter(|c| c.hits.get(label).is_some_and(|&k| k > 0));
        (c.count() as u64).min(h)
    }

    /// `score` raised to the floor of `rendered`'s signature for `source`,
    /// if any, lifted by the model's age `margin`
    /// ([`crate::policy::Policy::age_margin`]); the label is looked for
    /// only when a floor could raise the score.
    pub fn apply(&self, score: f32, source: &str, rendered: &str, margin: f32) -> f32 {
        if self.n < Self::MIN_N || score >= self.highest() + margin {
            return score;
        }
        match label_of(rendered).and_then(|l| self.floor(&l, source)) {
            Some(f) if f + margin > score || score.is_nan() => f + margin,
            _ => score,
        }
    }

    /// The highest floor any label gives: the least-carried label's.
    /// Called for every scored event: a label normal never carried (the
    /// usual case) settles it without counting any label's carriers.
    fn highest(&self) -> f32 {
        let least = if self.hits.values().any(|&h| h == 0) {
            Some(0)
        } else {
            self.hits.iter().map(|(l, &h)| self.carriers(l, h)).min()
        };
        least
            .map(|h| rate(self.n, h))
            .map_or(f32::NEG_INFINITY, |f| f.min(Self::MAX_FLOOR))
    }
}

/// How rare a label seen `h` times in `n` events is: `log10((n + 1) / (h + 1))`.
fn rate(n: u64, h: u64) -> f32 {
    ((n + 1) as f64 / (h + 1) as f64).log10() as f32
}

/// Counts labels over a stream of normal events, then keeps the sources
/// that carried one ([`Signatures::sources`]).
#[derive(Debug, Default)]
pub struct Counter {
    n: u64,
    hits: BTreeMap<String, u64>,
    sources: std::collections::HashMap<String, Count>,
}

impl Counter {
    /// Counts one normal event's rendered line.
    pub fn count(&mut self, source: &str, rendered: &str) {
        self.n += 1;
        let c = match self.sources.get_mut(source) {
            Some(c) => c,
            None => self.sources.entry(source.to_string()).or_default(),
        };
        c.n += 1;
        if let Some(l) = label_of(rendered) {
            *c.hits.entry(l.clone()).or_insert(0) += 1;
            *self.hits.entry(l).or_insert(0) += 1;
        }
    }

    pub fn finish(self) -> Signatures {
        let mut hits: BTreeMap<String, u64> = diagnoser()
            .patterns()
            .map(|p| (p.label.clone(), 0))
            .collect();
        hits.extend(self.hits);
        Signatures {
            n: self.n,
            hits,
            sources: self
                .sources
                .into_iter()
                .filter(|(_, c)| !c.hits.is_empty())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORT: &str = "<|BOE|><|LOG|><|SVC|>a<|LEVEL|>ERROR<|MSG|>listen tcp 0.0.0.0:80: bind: address already in use<|EOE|>";
    const REFUSED: &str = "<|BOE|><|LOG|><|SVC|>a<|LEVEL|>WARN<|MSG|>dial tcp b:80: connect: connection refused<|EOE|>";
    const OK: &str = "<|BOE|><|LOG|><|SVC|>a<|LEVEL|>INFO<|MSG|>GET /health 200<|EOE|>";

    /// `n` events of source `a`, the line `line`.
    fn of(n: usize, line: &'static str) -> Vec<(&'static str, &'static str)> {
        vec![("a", line); n]
    }

    #[test]
    fn a_signature_normal_never_shows_is_as_rare_as_the_sample_can_say() {
        let mut held = of(9_989, OK);
        held.extend(of(10, REFUSED).into_iter().enumerate().map(|(i, (_, l))| {
            // Ten sources, once each: the fleet's rate is their rate.
            (["b", "c", "d", "e", "f", "g", "h", "i", "j", "k"][i], l)
        }));
        let s = Signatures::fit(held.iter().copied());
        assert_eq!(s.n, 9_999);
        assert_eq!(s.hits["dependency unreachable"], 10);
        // Never seen: log10(10 000) = 4.
        assert!((s.floor("port conflict", "a").unwrap() - 4.0).abs() < 1e-4);
        assert!((s.apply(1.0, "a", PORT, 0.0) - 4.0).abs() < 1e-4);
        // Seen 10 times: 10 000 / 11 (for a source that carried it once,
        // its own rate, 2 / 2, is lower still).
        assert!((s.apply(1.0, "a", REFUSED, 0.0) - 2.9586).abs() < 1e-3);
        assert_eq!(s.apply(1.0, "b", REFUSED, 0.0), 1.0);
        // Only ever raises; no signature, no floor; an unknown label none.
        assert_eq!(s.apply(7.0, "a", PORT, 0.0), 7.0);
        assert_eq!(s.apply(1.0, "a", OK, 0.0), 1.0);
        assert_eq!(s.floor("made up", "a"), None);
        // A young model's margin lifts the floor, not a score above it, and
        // gives nothing to a line without a signature.
        assert!((s.apply(1.0, "a", PORT, 1.5) - 5.5).abs() < 1e-4);
        assert!((s.apply(4.8, "a", REFUSED, 1.5) - 4.8).abs() < 1e-4);
        assert!((s.apply(1.0, "a", REFUSED, 1.5) - 4.4586).abs() < 1e-3);
        assert_eq!(s.apply(9.0, "a", PORT, 1.5), 9.0);
        assert_eq!(s.apply(1.0, "a", OK, 1.5), 1.0);
        // Only sources that carried a label keep a count of their own.
        assert_eq!(s.sources.len(), 10);
    }

    /// 1,000 events of each of 100 sources `s0`..`s99`: event `k` of source
    /// `i` a port conflict where `conflict(i, k)`.
    fn fleet(conflict: impl Fn(usize, usize) -> bool) -> Signatures {
        let sources: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
        let mut c = Counter::default();
        for (i, src) in sources.iter().enumerate() {
            for k in 0..1_000 {
                c.count(src, if conflict(i, k) { PORT } else { OK });
            }
        }
        c.finish()
    }

    #[test]
    fn a_pulses_carried_event_is_no_signature() {
        let flux = "<|BOE|><|FLUX|><|SVC|>a<|EVENT|>oom_killed<|EOE|>";
        assert_eq!(label_of(flux).as_deref(), Some("OOM killed"));
        let pulse = "<|BOE|><|PULSE|><|SVC|>a<|EVENT|>oom_killed<|METRIC|>mem_mb=+1<|EOE|>";
        assert_eq!(label_of(pulse), None);
        let far = "<|BOE|><|PULSE|><|SVC|>a<|EVENT|>oom_killed<|METRIC|>mem_mb=+7<|EOE|>";
        assert_eq!(label_of(far).as_deref(), Some("metric far from its usual"));
    }

    #[test]
    fn a_jump_off_the_recent_line_is_a_reading_counted_per_metric() {
        let line = |m: &str, w: &str| format!("<|BOE|><|PULSE|><|SVC|>a<|METRIC|>{m}={w}<|EOE|>");
        let label = |m: &str, w: &str| label_of(&line(m, w));
        assert_eq!(
            label("mem_mb", "0!+3").as_deref(),
            Some("metric jumped: mem_mb")
        );
        assert_eq!(label("cpu", "+1!-9").as_deref(), Some("metric leapt: cpu"));
        assert_eq!(label("cpu", "-2!+2").as_deref(), Some("metric moved: cpu"));
        assert_eq!(label("cpu", "0!+1"), None);
        // A slow series' window word 8 to 64 spreads off, on its recent
        // line: a shift that held. A fast series' (no second word) is no
        // such label.
        assert_eq!(
            label("cpu", "+4!0").as_deref(),
            Some("metric off its usual: cpu")
        );
        assert_eq!(
            label("cpu", "-3!+1").as_deref(),
            Some("metric off its usual: cpu")
        );
        assert_eq!(label("cpu", "+4"), None);
        assert_eq!(label("cpu", "+2!0"), None);
        // A leap is read per metric before a value far from the window's
        // level is the fleet's reading.
        assert_eq!(label("cpu", "+7!+9").as_deref(), Some("metric leapt: cpu"));
        for w in ["+7", "-6!+4", "+7~!+1"] {
            assert_eq!(
                label("cpu", w).as_deref(),
                Some("metric far from its usual"),
                "{w}"
            );
        }
        // Held off its usual (scheme 5), once it lasted;
        // a jump on the way is named first.
        for (w, l) in [
            ("-2~!0", "metric held off its usual: cpu"),
            ("+5~", "metric held off its usual: cpu"),
            ("+6~!0", "metric held off its usual: cpu"),
            ("+2~!+3", "metric jumped: cpu"),
            ("+1~!0", "metric held off its usual: cpu"),
            ("0~!0", "metric held off its usual: cpu"),
        ] {
            assert_eq!(label("cpu", w).as_deref(), Some(l), "{w}");
        }
        assert_eq!(label("cpu", "+1!0"), None);
        for l in [
            "metric leapt: cpu",
            "metric jumped: cpu",
            "metric moved: cpu",
            "metric off its usual: cpu",
            "metric held off its usual: cpu",
        ] {
            assert!(crate::alert::is_reading(l), "{l}");
        }
        // Counted per metric: a counter that jumps in 1 of 10 events of
        // source a says nothing of a's gauge, which normal never saw jump.
        let (busy, quiet) = (line("errors", "+1!+5"), line("mem_mb", "0"));
        let held: Vec<(&str, &str)> = (0..10_000)
            .map(|k| {
                (
                    "a",
                    if k % 10 == 0 {
                        busy.as_str()
                    } else {
                        quiet.as_str()
                    },
                )
            })
            .collect();
        let s = Signatures::fit(held);
        assert_eq!(s.hits["metric leapt: errors"], 1_000);
        let gauge = s.floor("metric leapt: mem_mb", "a").unwrap();
        assert!((gauge - 10_001f32.log10()).abs() < 1e-4, "{gauge}");
        let counter = s.floor("metric leapt: errors", "a").unwrap();
        assert!((counter - (10_001f32 / 1_001.0).log10()).abs() < 1e-4);
        // A checkpoint counted before the label existed gives it no floor.
        let mut old = s.clone();
        old.hits.retain(|l, _| !l.starts_with("metric leapt"));
        assert_eq!(old.floor("metric leapt: mem_mb", "a"), None);
    }

    #[test]
    fn a_label_routine_for_one_source_is_not_rare_for_it() {
        // 100,000 events of 100 sources; one of them carries the label on
        // 1 in 50 of its 1,000 events.
        let s = fleet(|i, k| i == 0 && k % 50 == 0);
        // s0: 20 in 1,000 (1.7). The others: one source in 100,000 events
        // first showed it (4.7), not the fleet's 20 hits (3.7): s0's
        // routine says nothing of them.
        let own = (1_001f32 / 21.0).log10();
        assert!((s.floor("port conflict", "s0").unwrap() - own).abs() < 1e-4);
        assert!((s.apply(0.0, "s0", PORT, 0.0) - own).abs() < 1e-4);
        let first = (100_001f32 / 2.0).log10();
        assert!((s.floor("port conflict", "s1").unwrap() - first).abs() < 1e-4);
        assert!((s.apply(0.0, "s9", PORT, 0.0) - first).abs() < 1e-4);
    }

    #[test]
    fn a_label_many_sources_show_is_as_common_for_a_source_that_never_did() {
        // 20 sources of 100 show it 5 times each: 20 first showings in
        // 100,000 events, whatever the 100 hits.
        let s = fleet(|i, k| i < 20 && k % 200 == 0);
        assert_eq!(s.hits["port conflict"], 100);
        let first = (100_001f32 / 21.0).log10();
        assert!((s.floor("port conflict", "s50").unwrap() - first).abs() < 1e-4);
        // A checkpoint without per-source counts judges by the fleet's hits.
        let old = Signatures {
            sources: BTreeMap::new(),
            ..s.clone()
        };
        let fleet = (100_001f32 / 101.0).log10();
        assert!((old.floor("port conflict", "s50").unwrap() - fleet).abs() < 1e-4);
    }

    #[test]
    fn too_few_held_out_events_give_no_floor_and_old_checkpoints_none() {
        let s = Signatures::fit(of(999, OK));
        assert_eq!(s.floor("port conflict", "a"), None);
        assert_eq!(s.apply(0.5, "a", PORT, 1.5), 0.5);
        let old: Signatures = serde_json::from_str("{}").unwrap();
        assert_eq!(old.apply(0.5, "a", PORT, 1.5), 0.5);
    }
}
