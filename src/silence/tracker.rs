//! The silence watch's decisions: each source's rhythm learned from its
//! arrivals, and which sources are overdue. Pure: time is passed in, so it
//! is testable without a bus or a clock (and `proprio eval` replays it).

use super::{SilenceConfig, ALL_SOURCES};
use crate::contract::alert::{Alert, AlertBaseline, AlertReason, BaselineOf, Span};
use crate::event::Kind;
use crate::units::format_duration_human as format_duration;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// One source's rhythm. Its times are arrival times; its gaps and silences
/// are measured on the tracker's flowing clock (see [`Tracker`]).
#[derive(Debug, Clone)]
struct Track {
    first_seen: i64,
    last_seen: i64,
    /// The flowing clock at `last_seen`.
    flow_seen: i64,
    kind: Kind,
    /// The last `history` gaps.
    gaps: VecDeque<i64>,
    /// The longest gap per slice of the rest window, (slice start, gap):
    /// the source's rests, remembered for the window however many short
    /// gaps a burst puts in `gaps`.
    rests: VecDeque<(i64, i64)>,
    /// The current silence has been alerted (or suppressed by a mute).
    alerted: bool,
    /// After a failed publish, when to try again.
    retry_at: i64,
}

/// Slices of the rest window: its memory per source, and how finely a rest
/// leaves it.
const REST_SLICES: i64 = 8;

impl Track {
    fn new(ts: i64, flow: i64, kind: Kind) -> Track {
        Track {
            first_seen: ts,
            last_seen: ts,
            flow_seen: flow,
            kind,
            gaps: VecDeque::new(),
            rests: VecDeque::new(),
            alerted: false,
            retry_at: 0,
        }
    }

    /// The longest gap of its recent past: of the last `history` gaps, and
    /// of the rest window. A source that bursts and then rests is judged by
    /// its rests, not by the tiny gaps inside a burst, and a burst longer
    /// than `history` does not make it forget them. The longest gap of the
    /// window is one the source takes about once per window, so `multiple`
    /// of it is longer than anything it did for a window: that is the false
    /// alarm budget, about one per source per window at worst, far less
    /// for regular gaps.
    fn usual(&self) -> Option<i64> {
        let g = self.gaps.iter().copied().max();
        let r = self.rests.iter().map(|&(_, g)| g).max();
        g.max(r)
    }

    fn learn(&mut self, gap: i64, ts: i64, cfg: &SilenceConfig) {
        self.gaps.push_back(gap);
        while self.gaps.len() > cfg.history.max(1) {
            self.gaps.pop_front();
        }
        let window = (cfg.rest_window.as_millis() as i64).max(REST_SLICES);
        let slice = window / REST_SLICES;
        let start = ts - ts.rem_euclid(slice);
        match self.rests.back_mut() {
            Some((s, g)) if *s == start => *g = (*g).max(gap),
            _ => self.rests.push_back((start, gap)),
        }
        while self
            .rests
            .front()
            .is_some_and(|&(s, _)| s + slice <= ts - window)
        {
            self.rests.pop_front();
        }
    }
}

/// A source found silent.
#[derive(Debug, Clone, PartialEq)]
pub struct Overdue {
    pub source: String,
    pub kind: Kind,
    pub last_seen: i64,
    /// How long it has been silent (on the flowing clock).
    pub silent_ms: i64,
    pub usual_ms: i64,
    /// Its threshold: silent past this.
    pub allowed_ms: i64,
}

impl Overdue {
    /// When, found at `now_ms`, the silence crossed its threshold (the
    /// stream flowing since, as it does when replayed from a file).
    pub fn crossed_at(&self, now_ms: i64) -> i64 {
        now_ms - (self.silent_ms - self.allowed_ms) + 1
    }

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
            previous_epoch: false,
        }
    }
}

/// Learns each source's interval and says which sources are overdue. Pure:
/// time is passed in, so it is testable without a bus or a clock.
///
/// Silences are measured on a flowing clock: arrival time, except that a
/// stretch in which no source at all speaks counts only up to the stream's
/// own threshold (`multiple` times its usual gap, no floor). A source is
/// silent when others kept speaking while it did not; when everyone stops
/// at once (a publisher stall, the network, a watcher behind on its reads)
/// no source's silence grows, and the stream's own silence
/// ([`Tracker::all_silent`]) is the one alert. Measured: without it, the
/// demo's end (every source stopping together) raised 96 silence alerts
/// besides the stream's, one per source whose last word came a little
/// before the stream's (`proprio demo --warmup-minutes 200`).
#[derive(Debug)]
pub struct Tracker {
    cfg: SilenceConfig,
    sources: HashMap<String, Track>,
    /// (last_seen, source), for least-recently-heard eviction.
    by_age: BTreeSet<(i64, String)>,
    /// The stream as a whole, as one more source (judged on arrival time).
    all: Track,
    /// The flowing clock at `all.last_seen`.
    flow: i64,
    /// Sources trusted (a source, once trusted, stays so until evicted).
    judged: usize,
}

impl Tracker {
    pub fn new(cfg: SilenceConfig) -> Tracker {
        Tracker {
            cfg,
            sources: HashMap::new(),
            by_age: BTreeSet::new(),
            all: Track::new(i64::MIN, 0, Kind::Flux),
            flow: 0,
            judged: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// How much of a stretch with no arrival at all counts as flowing: the
    /// stream's threshold without the floor, while the stream's own silence
    /// is watched ([`Tracker::all_silent`]); all of it otherwise (with a
    /// few sources, the stream stopping may well be one of them dying).
    fn flow_cap(&self) -> i64 {
        let t = &self.all;
        match t.usual() {
            Some(u) if self.mass_watched() => ((u as f64 * self.cfg.multiple) as i64).max(1),
            _ => i64::MAX,
        }
    }

    /// Enough sources judged for the stream's silence to be told from
    /// theirs.
    fn mass_watched(&self) -> bool {
        self.judged >= self.cfg.mass_min.max(1) && self.trusted(&self.all)
    }

    /// The flowing clock at `now_ms`.
    fn flow_at(&self, now_ms: i64) -> i64 {
        if self.all.last_seen == i64::MIN {
            return self.flow;
        }
        let quiet = (now_ms - self.all.last_seen).max(0);
        self.flow + quiet.min(self.flow_cap())
    }

    /// `source` was heard from at `ts_ms` (server time).
    pub fn observe(&mut self, source: &str, kind: Kind, ts_ms: i64) {
        if ts_ms > self.all.last_seen {
            if self.all.last_seen != i64::MIN {
                let gap = ts_ms - self.all.last_seen;
                self.flow += gap.min(self.flow_cap());
                if self.all.alerted {
                    self.all.alerted = false;
                } else {
                    self.all.gaps.push_back(gap);
                    while self.all.gaps.len() > self.cfg.history.max(1) {
                        self.all.gaps.pop_front();
                    }
                }
            } else {
                self.all.first_seen = ts_ms;
            }
            self.all.last_seen = ts_ms;
        }
        // An arrival older than the newest (same instant, or reordered):
        // its flowing time as if the stream flowed since.
        let flow = self.flow - (self.all.last_seen - ts_ms);
        if let Some(t) = self.sources.get_mut(source) {
            t.kind = kind;
            if ts_ms <= t.last_seen {
                // Same millisecond or out of order: no new gap to learn.
                return;
            }
            let gap = (flow - t.flow_seen).max(0);
            let was = trusted(&self.cfg, t);
            self.by_age.remove(&(t.last_seen, source.to_string()));
            self.by_age.insert((ts_ms, source.to_string()));
            t.last_seen = ts_ms;
            t.flow_seen = flow.max(t.flow_seen);
            if t.alerted {
                // The silence just ended: re-arm, and keep the outage out of
                // what "usual" means.
                t.alerted = false;
            } else {
                t.learn(gap, ts_ms, &self.cfg);
            }
            self.judged += usize::from(!was && trusted(&self.cfg, t));
            return;
        }
        while self.sources.len() >= self.cfg.max_sources.max(1) {
            let Some(oldest) = self.by_age.pop_first() else {
                break;
            };
            if let Some(t) = self.sources.remove(&oldest.1) {
                self.judged -= usize::from(trusted(&self.cfg, &t));
            }
        }
        self.by_age.insert((ts_ms, source.to_string()));
        self.sources
            .insert(source.to_string(), Track::new(ts_ms, flow, kind));
    }

    /// Sources silent past their threshold and not yet alerted.
    pub fn overdue(&self, now_ms: i64) -> Vec<Overdue> {
        let flow = self.flow_at(now_ms);
        let mut out = Vec::new();
        for (source, t) in &self.sources {
            if t.alerted || now_ms < t.retry_at || !self.trusted(t) {
                continue;
            }
            let Some(usual) = t.usual() else { continue };
            let silent = flow - t.flow_seen;
            let allowed = self.cfg.allowed_ms(usual);
            if silent > allowed {
                out.push(Overdue {
                    source: source.clone(),
                    kind: t.kind,
                    last_seen: t.last_seen,
                    silent_ms: silent,
                    usual_ms: usual,
                    allowed_ms: allowed,
                });
            }
        }
        out.sort_by(|a, b| a.source.cmp(&b.source));
        out
    }

    /// Sources whose rhythm is known well enough to be judged.
    pub fn judged(&self) -> usize {
        self.judged
    }

    fn trusted(&self, t: &Track) -> bool {
        trusted(&self.cfg, t)
    }

    /// The whole stream's silence (see [`SilenceConfig::mass_min`]): Some
    /// while no source at all has spoken for longer than its threshold,
    /// whether or not it was alerted yet. Judged on arrival time.
    pub fn all_silent(&self, now_ms: i64) -> Option<Overdue> {
        let t = &self.all;
        if !self.mass_watched() {
            return None;
        }
        let usual = t.usual()?;
        let silent = now_ms - t.last_seen;
        let allowed = self.cfg.allowed_ms(usual);
        (silent > allowed).then(|| Overdue {
            source: ALL_SOURCES.to_string(),
            kind: Kind::Flux,
            last_seen: t.last_seen,
            silent_ms: silent,
            usual_ms: usual,
            allowed_ms: allowed,
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

/// Heard often enough, and long enough, for its rhythm to be known. Once
/// true it stays true: gaps and span only grow (the count is kept by
/// [`Tracker::observe`]).
fn trusted(cfg: &SilenceConfig, t: &Track) -> bool {
    t.gaps.len() >= cfg.min_observations
        && t.last_seen - t.first_seen >= cfg.min_span.as_millis() as i64
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

    /// A source speaking in bursts (here 40 trace lines 100 ms apart, more
    /// than `history` gaps) and resting a minute between them: the rests
    /// are its rhythm. It is not silent between bursts, and is when it
    /// stops for good.
    #[test]
    fn a_bursty_source_is_judged_by_its_rests() {
        let mut t = Tracker::new(SilenceConfig::default());
        let mut ts = 0;
        for _ in 0..6 {
            for _ in 0..40 {
                t.observe("orch", Kind::Trace, ts);
                ts += 100;
            }
            let burst_end = ts - 100;
            assert!(
                t.overdue(burst_end + 59_000).is_empty(),
                "silent between bursts at {burst_end}"
            );
            ts = burst_end + 60_000;
        }
        let track = &t.sources["orch"];
        assert_eq!(track.gaps.iter().max(), Some(&100), "a burst fills history");
        assert_eq!(track.usual(), Some(60_000), "the rest is remembered");
        // It stops: silent past three rests, once.
        let last = ts - 60_000;
        assert!(t.overdue(last + 179_000).is_empty());
        let o = t.overdue(last + 180_100);
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].usual_ms, o[0].allowed_ms), (60_000, 180_000));
        assert_eq!(o[0].crossed_at(last + 180_100), last + 180_001);
    }

    /// A rest older than the window is forgotten: a source that sped up is
    /// judged by its new rhythm within a window.
    #[test]
    fn rests_leave_with_the_window() {
        let mut t = Tracker::new(SilenceConfig {
            rest_window: Duration::from_secs(800),
            history: 4,
            ..cfg()
        });
        t.observe("a", Kind::Log, 0);
        t.observe("a", Kind::Log, 100_000);
        for i in 1..=10 {
            t.observe("a", Kind::Log, 100_000 + i * 1_000);
        }
        assert_eq!(t.sources["a"].usual(), Some(100_000));
        for i in 1..=900 {
            t.observe("a", Kind::Log, 110_000 + i * 1_000);
        }
        assert_eq!(t.sources["a"].usual(), Some(1_000));
        assert!(t.sources["a"].rests.len() <= REST_SLICES as usize + 1);
    }

    /// Twelve sources beating every second, then none for a minute (a
    /// publisher stall) and all back: one silence, the stream's, and no
    /// source's, though each was quiet far past its own threshold; one that
    /// does not come back is silent once the stream flows again.
    #[test]
    fn a_stall_of_everyone_is_no_source_silence() {
        let mut t = Tracker::new(SilenceConfig {
            max_sources: 100,
            ..cfg()
        });
        let beat = |t: &mut Tracker, from: i64, to: i64, n: i64| {
            for i in from..to {
                for s in 0..n {
                    t.observe(&format!("s{s}"), Kind::Pulse, i * 1000 + s * 50);
                }
            }
        };
        beat(&mut t, 0, 10, 12);
        for now in (9_600..70_000).step_by(250) {
            assert!(t.overdue(now).is_empty(), "a source silent at {now}");
        }
        let all = t.all_silent(70_000).expect("the stream is silent");
        assert_eq!(all.last_seen, 9_550);
        t.settle_all();
        // Back, all but s11.
        beat(&mut t, 70, 71, 11);
        assert!(t.overdue(71_000).is_empty(), "the stall is not a silence");
        assert!(!t.all_alerted());
        beat(&mut t, 71, 73, 11);
        let o = t.overdue(73_000);
        assert_eq!(o.len(), 1, "{o:?}");
        assert_eq!(o[0].source, "s11");
        assert!(o[0].silent_ms < 5_000, "{o:?}");
    }

    #[test]
    fn at_speed_shrinks_the_rhythm() {
        let c = SilenceConfig::default().at_speed(90.0);
        let d = SilenceConfig::default();
        assert_eq!(c.min_span, d.min_span / 90);
        assert_eq!(c.floor, super::super::WALL_PAUSE, "not 55 ms");
        assert_eq!(c.rest_window, d.rest_window / 90);
        assert_eq!(
            (c.multiple, c.history, c.lookback),
            (d.multiple, d.history, d.lookback)
        );
        assert_eq!(SilenceConfig::default().at_speed(1.0), d);
        assert_eq!(SilenceConfig::default().at_speed(f64::NAN), d);
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
