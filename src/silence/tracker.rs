//! The silence watch's decisions: each source's rhythm learned from its
//! arrivals, and which sources are overdue. Pure: time is passed in, so it
//! is testable without a bus or a clock (and `proprio eval` replays it).

use super::{SilenceConfig, ALL_SOURCES};
use crate::contract::alert::{Alert, AlertBaseline, AlertReason, BaselineOf, Span};
use crate::event::Kind;
use crate::units::format_duration_human as format_duration;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// One source's rhythm.
#[derive(Debug, Clone)]
struct Track {
    first_seen: i64,
    last_seen: i64,
    kind: Kind,
    gaps: VecDeque<i64>,
    /// The current silence has been alerted (or suppressed by a mute).
    alerted: bool,
    /// After a failed publish, when to try again.
    retry_at: i64,
}

impl Track {
    /// The longest recent gap: a source that bursts and then rests is judged
    /// by its rests, not by the tiny gaps inside a burst.
    fn usual(&self) -> Option<i64> {
        self.gaps.iter().copied().max()
    }
}

/// A source found silent.
#[derive(Debug, Clone, PartialEq)]
pub struct Overdue {
    pub source: String,
    pub kind: Kind,
    pub last_seen: i64,
    pub silent_ms: i64,
    pub usual_ms: i64,
}

impl Overdue {
    /// "silent for 42s (usual 10s)"
    pub fn describe(&self) -> String {
        format!(
            "silent for {} (usual {})",
            format_duration(self.silent_ms),
            format_duration(self.usual_ms)
        )
    }

    /// The alert for this silence. Its loss is the silence in seconds and
    /// its baseline the usual interval (as scale, median 0), so that the
    /// score, like a surprise's, reads as "how many usuals".
    pub fn alert(&self, now_ms: i64) -> Alert {
        let usual_s = self.usual_ms.max(1) as f32 / 1000.0;
        let silent_s = self.silent_ms as f32 / 1000.0;
        let what = self.describe();
        let rendered = format!("{} {what}", self.source);
        Alert {
            id: Alert::id_for_silence(&self.source, self.last_seen),
            ts: now_ms,
            source: self.source.clone(),
            key: self.source.clone(),
            kind: self.kind,
            score: silent_s / usual_s,
            loss: silent_s,
            baseline: AlertBaseline {
                median: 0.0,
                scale: usual_s,
                of: BaselineOf::Key,
            },
            span: Span {
                text: rendered.clone(),
                start: 0,
                end: 0,
                loss: silent_s,
            },
            rendered,
            diagnosis: Some(what),
            model: None,
            reason: AlertReason::Silence,
        }
    }
}

/// Learns each source's interval and says which sources are overdue. Pure:
/// time is passed in, so it is testable without a bus or a clock.
#[derive(Debug)]
pub struct Tracker {
    cfg: SilenceConfig,
    sources: HashMap<String, Track>,
    /// (last_seen, source), for least-recently-heard eviction.
    by_age: BTreeSet<(i64, String)>,
    /// The stream as a whole, as one more source.
    all: Track,
}

impl Tracker {
    pub fn new(cfg: SilenceConfig) -> Tracker {
        Tracker {
            cfg,
            sources: HashMap::new(),
            by_age: BTreeSet::new(),
            all: Track {
                first_seen: i64::MIN,
                last_seen: i64::MIN,
                kind: Kind::Flux,
                gaps: VecDeque::new(),
                alerted: false,
                retry_at: 0,
            },
        }
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// `source` was heard from at `ts_ms` (server time).
    pub fn observe(&mut self, source: &str, kind: Kind, ts_ms: i64) {
        let all = &mut self.all;
        if ts_ms > all.last_seen {
            if all.alerted {
                all.alerted = false;
            } else if all.last_seen != i64::MIN {
                all.gaps.push_back(ts_ms - all.last_seen);
                while all.gaps.len() > self.cfg.history.max(1) {
                    all.gaps.pop_front();
                }
            }
            if all.first_seen == i64::MIN {
                all.first_seen = ts_ms;
            }
            all.last_seen = ts_ms;
        }
        if let Some(t) = self.sources.get_mut(source) {
            if ts_ms <= t.last_seen {
                // Same millisecond or out of order: no new gap to learn.
                t.kind = kind;
                return;
            }
            let gap = ts_ms - t.last_seen;
            self.by_age.remove(&(t.last_seen, source.to_string()));
            self.by_age.insert((ts_ms, source.to_string()));
            t.last_seen = ts_ms;
            t.kind = kind;
            if t.alerted {
                // The silence just ended: re-arm, and keep the outage out of
                // what "usual" means.
                t.alerted = false;
                return;
            }
            t.gaps.push_back(gap);
            while t.gaps.len() > self.cfg.history.max(1) {
                t.gaps.pop_front();
            }
            return;
        }
        while self.sources.len() >= self.cfg.max_sources.max(1) {
            let Some(oldest) = self.by_age.pop_first() else {
                break;
            };
            self.sources.remove(&oldest.1);
        }
        self.by_age.insert((ts_ms, source.to_string()));
        self.sources.insert(
            source.to_string(),
            Track {
                first_seen: ts_ms,
                last_seen: ts_ms,
                kind,
                gaps: VecDeque::new(),
                alerted: false,
                retry_at: 0,
            },
        );
    }

    /// Sources silent past their threshold and not yet alerted.
    pub fn overdue(&self, now_ms: i64) -> Vec<Overdue> {
        let mut out = Vec::new();
        for (source, t) in &self.sources {
            if t.alerted || now_ms < t.retry_at || !self.trusted(t) {
                continue;
            }
            let Some(usual) = t.usual() else { continue };
            let silent = now_ms - t.last_seen;
            if silent > self.cfg.allowed_ms(usual) {
                out.push(Overdue {
                    source: source.clone(),
                    kind: t.kind,
                    last_seen: t.last_seen,
                    silent_ms: silent,
                    usual_ms: usual,
                });
            }
        }
        out.sort_by(|a, b| a.source.cmp(&b.source));
        out
    }

    /// Sources whose rhythm is known well enough to be judged.
    pub fn judged(&self) -> usize {
        self.sources.values().filter(|t| self.trusted(t)).count()
    }

    /// Heard often enough, and long enough, for its rhythm to be known.
    fn trusted(&self, t: &Track) -> bool {
        t.gaps.len() >= self.cfg.min_observations
            && t.last_seen - t.first_seen >= self.cfg.min_span.as_millis() as i64
    }

    /// The whole stream's silence (see [`SilenceConfig::mass_min`]): Some
    /// while no source at all has spoken for longer than its threshold,
    /// whether or not it was alerted yet.
    pub fn all_silent(&self, now_ms: i64) -> Option<Overdue> {
        let t = &self.all;
        if self.judged() < self.cfg.mass_min.max(1) || !self.trusted(t) {
            return None;
        }
        let usual = t.usual()?;
        let silent = now_ms - t.last_seen;
        (silent > self.cfg.allowed_ms(usual)).then(|| Overdue {
            source: ALL_SOURCES.to_string(),
            kind: Kind::Flux,
            last_seen: t.last_seen,
            silent_ms: silent,
            usual_ms: usual,
        })
    }

    /// Whether the whole stream's current silence was alerted.
    pub fn all_alerted(&self) -> bool {
        self.all.alerted
    }

    pub fn settle_all(&mut self) {
        self.all.alerted = true;
    }

    /// This silence has been dealt with (alerted, or muted); no more alerts
    /// until the source speaks again.
    pub fn settle(&mut self, source: &str) {
        if let Some(t) = self.sources.get_mut(source) {
            t.alerted = true;
        }
    }

    /// Publishing failed: try again later rather than on every tick.
    pub fn retry_later(&mut self, source: &str, at_ms: i64) {
        if let Some(t) = self.sources.get_mut(source) {
            t.retry_at = at_ms;
        }
    }
}

/// One alert for the whole stream's silence: the telemetry path stopped.
/// Its id is the last arrival's stream time, so two watchers name it alike.
/// A source's silence alert, named for [`ALL_SOURCES`], with no baseline.
pub fn mass_alert(all: &Overdue, judged: usize, now_ms: i64) -> Alert {
    let all = Overdue {
        source: ALL_SOURCES.to_string(),
        kind: Kind::Flux,
        ..all.clone()
    };
    let what = format!(
        "all {judged} sources silent for {} (usual gap {}): telemetry stopped reaching NATS",
        format_duration(all.silent_ms),
        format_duration(all.usual_ms)
    );
    let mut a = all.alert(now_ms);
    a.rendered = format!("{ALL_SOURCES} {what}");
    a.span.text = a.rendered.clone();
    a.diagnosis = Some(what);
    a.baseline = AlertBaseline {
        median: 0.0,
        scale: 0.0,
        of: BaselineOf::None,
    };
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> SilenceConfig {
        SilenceConfig {
            floor: Duration::from_millis(100),
            min_observations: 3,
            min_span: Duration::ZERO,
            max_sources: 2,
            ..SilenceConfig::default()
        }
    }

    #[test]
    fn learns_alerts_once_and_rearms() {
        let mut t = Tracker::new(cfg());
        for i in 0..5 {
            t.observe("a", Kind::Pulse, i * 1000);
        }
        assert!(t.overdue(6_500).is_empty(), "2.5 usuals is not silent yet");
        let o = t.overdue(7_100);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].describe(), "silent for 3.1s (usual 1s)");
        t.settle("a");
        assert!(t.overdue(60_000).is_empty(), "one alert per episode");
        t.observe("a", Kind::Pulse, 60_000);
        assert_eq!(
            t.sources["a"].usual(),
            Some(1000),
            "the outage is not usual"
        );
        assert_eq!(t.overdue(63_100).len(), 1, "re-armed");
    }

    #[test]
    fn needs_observations_and_respects_floor() {
        let mut t = Tracker::new(SilenceConfig {
            floor: Duration::from_secs(10),
            ..cfg()
        });
        t.observe("a", Kind::Log, 0);
        t.observe("a", Kind::Log, 10);
        assert!(t.overdue(1_000_000).is_empty(), "too few gaps to judge");
        t.observe("a", Kind::Log, 20);
        t.observe("a", Kind::Log, 30);
        assert!(t.overdue(9_000).is_empty(), "under the floor");
        assert_eq!(t.overdue(10_100).len(), 1);
    }

    #[test]
    fn the_whole_stream_silent_is_one_silence() {
        let mut t = Tracker::new(SilenceConfig {
            max_sources: 100,
            ..cfg()
        });
        for i in 0..5 {
            for s in 0..6 {
                t.observe(&format!("s{s}"), Kind::Pulse, i * 1000 + s * 10);
            }
        }
        // One source stops, the others go on: its own silence.
        for i in 5..8 {
            for s in 1..6 {
                t.observe(&format!("s{s}"), Kind::Pulse, i * 1000 + s * 10);
            }
        }
        assert!(t.all_silent(7_100).is_none());
        assert_eq!(t.overdue(7_100).len(), 1);
        t.settle("s0");
        // Then nothing from anyone: the stream's silence, once.
        let all = t.all_silent(10_000).expect("the stream is silent");
        assert_eq!((all.last_seen, all.usual_ms), (7_050, 960));
        let a = mass_alert(&all, t.judged(), 10_000);
        assert_eq!(a.source, ALL_SOURCES);
        assert_eq!(a.reason, AlertReason::Silence);
        assert!(
            a.rendered.contains("all 6 sources silent for 3s"),
            "{}",
            a.rendered
        );
        assert_eq!(a.id, Alert::id_for_silence(ALL_SOURCES, 7_050));
        t.settle_all();
        assert!(t.all_alerted() && t.all_silent(20_000).is_some());
        // Speaking again re-arms it, and the outage is not a usual gap.
        t.observe("s3", Kind::Pulse, 30_000);
        assert!(!t.all_alerted());
        assert_eq!(t.all.usual(), Some(960));
        // Too few sources to tell the path from its services.
        let mut small = Tracker::new(cfg());
        for i in 0..5 {
            small.observe("a", Kind::Pulse, i * 1000);
            small.observe("b", Kind::Pulse, i * 1000 + 1);
        }
        assert!(small.all_silent(60_000).is_none());
    }

    #[test]
    fn a_start_up_burst_is_not_the_usual_rhythm() {
        let mut t = Tracker::new(SilenceConfig {
            floor: Duration::from_secs(5),
            ..SilenceConfig::default()
        });
        // Boot: six lines within a second; then a pulse every 30 s.
        for i in 0..6 {
            t.observe("svc", Kind::Log, i * 100);
        }
        for i in 1..=3 {
            t.observe("svc", Kind::Pulse, i * 30_000);
            assert!(
                t.overdue(i * 30_000 + 25_000).is_empty(),
                "judged by its boot burst at pulse {i}"
            );
        }
        // Two minutes in, its rhythm is known: 3 pulses missed is silence.
        t.observe("svc", Kind::Pulse, 120_000);
        assert!(t.overdue(200_000).is_empty(), "within 3 usual gaps");
        assert_eq!(t.overdue(210_100).len(), 1);
    }

    #[test]
    fn bounded_and_evicts_least_recently_heard() {
        let mut t = Tracker::new(cfg());
        t.observe("a", Kind::Pulse, 0);
        t.observe("b", Kind::Pulse, 1);
        t.observe("a", Kind::Pulse, 2);
        t.observe("c", Kind::Pulse, 3);
        assert_eq!(t.len(), 2);
        assert!(t.sources.contains_key("a") && t.sources.contains_key("c"));
    }
}
