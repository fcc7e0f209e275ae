//! The silence watch: a source that stops publishing is an event too. It is
//! the article's first failure (a container OOM-killed at 3 am stays dead
//! until morning) and the one a loss-based scorer can never see, since a dead
//! service sends nothing to score.
//!
//! Each source's usual interval is learned from when its telemetry reached
//! the server; a source quiet for longer than a multiple of it gets one
//! silence alert per episode, re-armed when it speaks again.
//!
//! Why an ordered consumer starting a few minutes back, not the shared
//! durable the other roles use, nor a core subscription:
//! - every watcher must see every message (a shared durable would split the
//!   sources between replicas, and each would think the others' sources
//!   silent);
//! - arrival times are the stream's own timestamps, identical in every
//!   watcher, so two watchers name a silence alike
//!   ([`Alert::id_for_silence`]) and the alerts stream's dedup keeps one;
//! - replaying the last minutes at start-up relearns the intervals at once,
//!   and a source that died while proprio was down is still noticed;
//! - nothing here needs acknowledging: losing a message only delays a
//!   silence, so an ack per message would be cost without benefit.

use crate::alert::mute;
use crate::bus::{self, Bus};
use crate::contract::alert::{Alert, AlertBaseline, AlertReason, BaselineOf, Span};
use crate::contract::STREAM_TELEMETRY;
use crate::event::Kind;
use crate::freshness::Clock;
use anyhow::{Context as _, Result};
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Silence watch settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SilenceConfig {
    /// A source is silent once quiet for this many times its usual interval.
    pub multiple: f64,
    /// ... and for at least this long, so sub-second publishers do not alert
    /// on a garbage-collection pause.
    pub floor: Duration,
    /// Gaps seen before a source's interval is trusted.
    pub min_observations: usize,
    /// ... and for at least this long since it was first heard: a service's
    /// first gaps are its start-up burst (milliseconds), and judging its
    /// 30 s pulses by them alerts on every pulse. Measured on a fault-free
    /// simulated 3 h at 203 services: 1,450 false alerts per hour without
    /// it.
    pub min_span: Duration,
    /// Gaps remembered per source.
    pub history: usize,
    /// Most sources tracked; the least recently heard is forgotten first.
    pub max_sources: usize,
    pub check_every: Duration,
    /// Telemetry replayed at start-up to relearn intervals.
    pub lookback: Duration,
    /// With at least this many sources judged, the stream as a whole is
    /// watched too: when no source at all speaks for `multiple` times the
    /// stream's usual gap (and `floor`), it is the telemetry path
    /// (publishers, their network, NATS) that stopped, not every service at
    /// once. That is one alert for source [`ALL_SOURCES`], and the sources'
    /// own silences in that episode are not alerted one by one.
    pub mass_min: usize,
}

impl SilenceConfig {
    /// How long a source (or the stream) whose usual gap is `usual_ms` may
    /// stay quiet; past it, it is silent.
    pub fn allowed_ms(&self, usual_ms: i64) -> i64 {
        ((usual_ms as f64 * self.multiple) as i64).max(self.floor.as_millis() as i64)
    }
}

/// The source named by a silence of (nearly) every source at once.
pub const ALL_SOURCES: &str = "telemetry";

impl Default for SilenceConfig {
    fn default() -> Self {
        SilenceConfig {
            multiple: 3.0,
            floor: Duration::from_secs(5),
            min_observations: 5,
            min_span: Duration::from_secs(120),
            history: 32,
            max_sources: 10_000,
            check_every: Duration::from_millis(250),
            lookback: Duration::from_secs(15 * 60),
            mass_min: 5,
        }
    }
}

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

/// The source a telemetry subject speaks for (`<root>.<kind>.<source>...`).
/// Graph subjects name a graph, not a service that can die, so they have none.
pub fn source_of(root: &str, subject: &str) -> Option<(String, Kind)> {
    let rest = subject.strip_prefix(root)?.strip_prefix('.')?;
    let mut parts = rest.split('.');
    let kind = Kind::parse(parts.next()?)?;
    let source = parts.next().filter(|s| !s.is_empty())?;
    (kind != Kind::Graph).then(|| (source.to_string(), kind))
}

/// What the watch has done, for metrics and tests.
#[derive(Debug, Default)]
pub struct SilenceStats {
    pub observed: AtomicU64,
    /// Silence alerts stored (dedup'd ones not counted).
    pub alerts: AtomicU64,
    /// Silences not alerted because the source was muted.
    pub muted: AtomicU64,
    /// Sources currently tracked.
    pub tracked: AtomicU64,
}

/// The silence watch role.
pub struct SilenceWatch {
    bus: Bus,
    cfg: SilenceConfig,
    clock: Arc<dyn Clock>,
    stats: Arc<SilenceStats>,
}

impl SilenceWatch {
    pub fn new(bus: Bus, cfg: SilenceConfig, clock: Arc<dyn Clock>) -> SilenceWatch {
        SilenceWatch {
            bus,
            cfg,
            clock,
            stats: Arc::new(SilenceStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<SilenceStats> {
        self.stats.clone()
    }

    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let mut tracker = Tracker::new(self.cfg.clone());
        let lookback = self.cfg.lookback.as_millis() as i64;
        let mut since = self.clock.now_ms() - lookback;
        let mut tick = tokio::time::interval(self.cfg.check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        tracing::info!("silence watch: running");
        'bind: loop {
            let (mut msgs, mut caught_up) = match self.open(since).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("silence watch: {e:#}; retrying");
                    tokio::select! {
                        _ = &mut shutdown => break 'bind,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue 'bind,
                    }
                }
            };
            loop {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break 'bind,
                    _ = tick.tick(), if caught_up => self.check(&mut tracker).await,
                    m = msgs.next() => match m {
                        Some(Ok(m)) => {
                            let Ok(info) = m.info() else { continue };
                            let (ts, pending) = (bus::datetime_ms(&info), info.pending);
                            since = since.max(ts + 1);
                            if let Some((source, kind)) = source_of(self.bus.root(), m.subject.as_str()) {
                                tracker.observe(&source, kind, ts);
                                self.stats.observed.fetch_add(1, Ordering::Relaxed);
                                self.stats.tracked.store(tracker.len() as u64, Ordering::Relaxed);
                            }
                            // Judge silences only once the replay is done;
                            // mid-replay every source looks minutes late.
                            caught_up |= pending == 0;
                        }
                        Some(Err(e)) => tracing::debug!("silence watch: {e}"),
                        None => {
                            tracing::warn!("silence watch: consumer ended; rebinding");
                            continue 'bind;
                        }
                    },
                }
            }
        }
        tracing::info!("silence watch: stopped");
        Ok(())
    }

    async fn open(
        &self,
        since_ms: i64,
    ) -> Result<(async_nats::jetstream::consumer::pull::Ordered, bool)> {
        let stream = self
            .bus
            .js()
            .get_stream(STREAM_TELEMETRY)
            .await
            .context("opening the telemetry stream (run ensure first)")?;
        let consumer = stream
            .create_consumer(bus::ordered_since(&self.bus.telemetry_filter(), since_ms)?)
            .await
            .context("creating the silence watch's consumer")?;
        let caught_up = consumer.cached_info().num_pending == 0;
        let msgs = consumer.messages().await.context("reading telemetry")?;
        Ok((msgs, caught_up))
    }

    async fn check(&self, tracker: &mut Tracker) {
        let now = self.clock.now_ms();
        if let Some(all) = tracker.all_silent(now) {
            // The path is down: its sources' silences are that one silence.
            for o in tracker.overdue(now) {
                tracker.settle(&o.source);
            }
            if tracker.all_alerted() {
                return;
            }
            let alert = mass_alert(&all, tracker.judged(), now);
            match self.bus.publish_alert(&alert).await {
                Ok(stored) => {
                    if stored {
                        self.stats.alerts.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("{}", alert.rendered);
                    }
                    tracker.settle_all();
                }
                Err(e) => tracing::warn!("silence alert not published: {e:#}"),
            }
            return;
        }
        for o in tracker.overdue(now) {
            match mute::is_muted(&self.bus, &o.source, now).await {
                Ok(true) => {
                    self.stats.muted.fetch_add(1, Ordering::Relaxed);
                    tracker.settle(&o.source);
                    continue;
                }
                Ok(false) => {}
                // Better a possibly muted alert than a silenced outage.
                Err(e) => tracing::warn!("silence watch: reading mute of {}: {e:#}", o.source),
            }
            let alert = o.alert(now);
            match self.bus.publish_alert(&alert).await {
                Ok(stored) => {
                    if stored {
                        self.stats.alerts.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(source = %o.source, "{}", o.describe());
                    }
                    tracker.settle(&o.source);
                }
                Err(e) => {
                    tracing::warn!(source = %o.source, "silence alert not published: {e:#}");
                    tracker.retry_later(&o.source, now + 2_000);
                }
            }
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

/// Runs the silence watch until `shutdown` resolves.
pub async fn run(
    bus: Bus,
    cfg: SilenceConfig,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    SilenceWatch::new(bus, cfg, clock).run(shutdown).await
}

/// A duration for people: "0.4s", "42s", "3m20s", "2h5m", "3d4h".
pub fn format_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 10_000 && ms % 1000 != 0 {
        let s = format!("{:.1}", ms as f64 / 1000.0);
        return format!("{}s", s.trim_end_matches(".0"));
    }
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let two = |a: i64, ua: &str, b: i64, ub: &str| {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua}{b}{ub}")
        }
    };
    if d > 0 {
        two(d, "d", h, "h")
    } else if h > 0 {
        two(h, "h", m, "m")
    } else if m > 0 {
        two(m, "m", s, "s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn subjects_and_durations() {
        assert_eq!(
            source_of("os", "os.flux.api.started"),
            Some(("api".into(), Kind::Flux))
        );
        assert_eq!(
            source_of("os", "os.pulse.api"),
            Some(("api".into(), Kind::Pulse))
        );
        assert_eq!(source_of("os", "os.graph.deps"), None);
        assert_eq!(source_of("os", "other.pulse.api"), None);
        assert_eq!(source_of("os", "os.nope.api"), None);
        assert_eq!(format_duration(42_000), "42s");
        assert_eq!(format_duration(400), "0.4s");
        assert_eq!(format_duration(200_000), "3m20s");
        assert_eq!(format_duration(3_600_000), "1h");
        assert_eq!(format_duration(90_000_000), "1d1h");
    }
}
