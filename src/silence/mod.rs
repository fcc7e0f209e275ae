//! The silence watch: a source that stops publishing is an event too. It is
//! the article's first failure (a container OOM-killed at 3 am stays dead
//! until morning) and the one a loss-based scorer can never see, since a dead
//! service sends nothing to score.
//!
//! Each source's usual interval is learned from when its telemetry reached
//! the server: its longest recent gap, rests between bursts included
//! ([`SilenceConfig::rest_window`]). A source quiet for longer than a
//! multiple of it, while the others keep speaking, gets one silence alert
//! per episode, re-armed when it speaks again; everyone quiet at once is
//! one alert for the stream (see [`Tracker`]'s flowing clock).
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
//!
//! The role's steps: the [`Tracker`] decides (pure, given the time), the
//! watch carries out (mute look-ups, alert publishes) and settles the
//! tracker's state by how each publish went.

mod tracker;

pub use tracker::{mass_alert, Overdue, Tracker};

use crate::bus;
use crate::context::{Context, Role};
use crate::event::Kind;
use crate::metrics::{self, Family, ReadAtScrape, Report};
use anyhow::{Context as _, Result};
use futures::StreamExt;
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
    /// ... and, whatever their number, its longest gap of this long: a
    /// source that bursts (request logs, traces, batch jobs) puts more
    /// than `history` short gaps in each burst, and judged by them alone it
    /// reads as silent in every rest. Measured on a simulated 12 h day
    /// (every fault kind thrice): 17 false silence alerts, all on the
    /// Orchestrator (trace bursts between 46 s pulses), with `history`
    /// alone.
    pub rest_window: Duration,
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

/// The shortest floor a faster replay shrinks to (see
/// [`SilenceConfig::at_speed`]).
pub const WALL_PAUSE: Duration = Duration::from_millis(500);

/// The source named by a silence of (nearly) every source at once.
pub const ALL_SOURCES: &str = "telemetry";

impl SilenceConfig {
    /// The same watch for telemetry whose time runs `speed` times faster
    /// than the wall clock (the demo's replay of the simulated OS): every
    /// duration of a source's rhythm shrinks with it, so a 30 s pulse is
    /// judged by the same rule at any speed. The replay at start-up stays
    /// in wall time, and so does the floor's pause of the telemetry path
    /// (the publisher and the machine pause on the wall clock), down to
    /// [`WALL_PAUSE`]: at 90x a 5 s floor shrinks to 55 ms, and the demo
    /// on a busy 2-core machine measured two whole-stream pauses of 0.1 s in
    /// 133 s, each a false "telemetry stopped".
    pub fn at_speed(self, speed: f64) -> SilenceConfig {
        if !(speed.is_finite() && speed > 0.0) || speed == 1.0 {
            return self;
        }
        let s = |d: Duration| d.div_f64(speed);
        SilenceConfig {
            floor: s(self.floor).max(WALL_PAUSE.min(self.floor)),
            min_span: s(self.min_span),
            rest_window: s(self.rest_window),
            check_every: s(self.check_every).max(Duration::from_millis(20)),
            ..self
        }
    }

    /// How long a source (or the stream) whose usual gap is `usual_ms` may
    /// stay quiet; past it, it is silent.
    pub fn allowed_ms(&self, usual_ms: i64) -> i64 {
        ((usual_ms as f64 * self.multiple) as i64).max(self.floor.as_millis() as i64)
    }
}

impl Default for SilenceConfig {
    fn default() -> Self {
        SilenceConfig {
            multiple: 3.0,
            floor: Duration::from_secs(5),
            min_observations: 5,
            min_span: Duration::from_secs(120),
            history: 32,
            rest_window: Duration::from_secs(3600),
            max_sources: 10_000,
            check_every: Duration::from_millis(250),
            lookback: Duration::from_secs(15 * 60),
            mass_min: 5,
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

static OBSERVATIONS: Family = Family::counter(
    "proprio_silence_observations_total",
    "Telemetry arrivals the silence watch learned from",
    &[],
);
static TRACKED: Family = Family {
    name: "proprio_silence_sources_tracked",
    help: "Sources whose rhythm the silence watch knows",
    labels: &[],
    gauge: true,
};

impl ReadAtScrape for SilenceStats {
    fn report(&self, out: &mut Report) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.add(&metrics::ALERTS_PUBLISHED, &["silence"], g(&self.alerts));
        out.add(&OBSERVATIONS, &[], g(&self.observed));
        out.add(&metrics::ALERTS_SUPPRESSED, &["muted"], g(&self.muted));
        out.add(&TRACKED, &[], g(&self.tracked));
    }
}

/// The silence watch role.
pub struct SilenceWatch {
    ctx: Context,
    cfg: SilenceConfig,
    stats: Arc<SilenceStats>,
}

impl SilenceWatch {
    pub fn new(ctx: &Context, cfg: SilenceConfig) -> SilenceWatch {
        SilenceWatch {
            ctx: ctx.clone(),
            cfg,
            stats: ctx.metrics.counters(),
        }
    }

    pub fn stats(&self) -> Arc<SilenceStats> {
        self.stats.clone()
    }
}

impl Role for SilenceWatch {
    async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let mut tracker = Tracker::new(self.cfg.clone());
        let lookback = self.cfg.lookback.as_millis() as i64;
        let mut since = self.ctx.clock.now_ms() - lookback;
        let mut tick = tokio::time::interval(self.cfg.check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        tracing::info!("silence watch: running");
        // The stream time of the last message read while more were pending:
        // judged at it, not at the wall clock, a watcher behind on its reads
        // (a busy machine) does not take the backlog for silence.
        let mut behind: Option<i64> = None;
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
                    _ = tick.tick(), if caught_up => self.check(&mut tracker, behind).await,
                    m = msgs.next() => match m {
                        Some(Ok(m)) => {
                            let Ok(info) = m.info() else { continue };
                            let (ts, pending) = (bus::datetime_ms(&info), info.pending);
                            since = since.max(ts + 1);
                            if let Some((source, kind)) = source_of(self.ctx.bus.root(), m.subject.as_str()) {
                                tracker.observe(&source, kind, ts);
                                self.stats.observed.fetch_add(1, Ordering::Relaxed);
                                self.stats.tracked.store(tracker.len() as u64, Ordering::Relaxed);
                            }
                            // Judge silences only once the replay is done;
                            // mid-replay every source looks minutes late.
                            caught_up |= pending == 0;
                            behind = (pending > 0).then_some(ts);
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
}

impl SilenceWatch {
    async fn open(
        &self,
        since_ms: i64,
    ) -> Result<(async_nats::jetstream::consumer::pull::Ordered, bool)> {
        let stream = self
            .ctx
            .bus
            .js()
            .get_stream(crate::contract::STREAM_TELEMETRY)
            .await
            .context("opening the telemetry stream (run ensure first)")?;
        let consumer = stream
            .create_consumer(bus::ordered_since(
                &self.ctx.bus.telemetry_filter(),
                since_ms,
            )?)
            .await
            .context("creating the silence watch's consumer")?;
        let caught_up = consumer.cached_info().num_pending == 0;
        let msgs = consumer.messages().await.context("reading telemetry")?;
        Ok((msgs, caught_up))
    }

    async fn check(&self, tracker: &mut Tracker, behind: Option<i64>) {
        let now = behind.unwrap_or_else(|| self.ctx.clock.now_ms());
        if let Some(all) = tracker.all_silent(now) {
            // The path is down: that is the one silence. The sources' own
            // silences stopped growing with the stream (the tracker's
            // flowing clock); a source still quiet once the stream is back
            // is judged then.
            if tracker.all_alerted() {
                return;
            }
            // A mute on the whole stream is a maintenance window of the
            // telemetry path itself (`proprio mute telemetry`).
            if let Ok(true) = crate::alert::mute::is_muted(&self.ctx.bus, ALL_SOURCES, now).await {
                self.stats.muted.fetch_add(1, Ordering::Relaxed);
                tracker.settle_all();
                return;
            }
            let alert = mass_alert(&all, tracker.judged(), now);
            match self.ctx.bus.publish_alert(&alert).await {
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
            match crate::alert::mute::is_muted(&self.ctx.bus, &o.source, now).await {
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
            match self.ctx.bus.publish_alert(&alert).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_of_subjects() {
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
    }
}
