//! The `incidents` role: the alerts stream through the [`Engine`], each
//! changed incident stored in KV and published, the alert acked only after.
//!
//! Inputs:
//! - durable pull consumer `proprio-incidents` on `PROPRIO_ALERTS` (one
//!   engine state per deployment: a second replica would split the alerts
//!   and see half of each incident, so run one);
//! - an ordered consumer on the telemetry's graph and trace subjects,
//!   replayed `lookback` back at start-up, for the observed topology (losing
//!   one only delays an edge, so nothing is acked);
//! - a timer on the context's clock that resolves quiet incidents, only
//!   once the alert backlog is read (mid-backlog every incident looks quiet).
//!
//! Restart safety: the KV holds every incident's full state
//! ([`Incident`]), so start-up rebuilds the open ones from it; their
//! `alert_ids` make a redelivered alert a duplicate, not a second count. A
//! change is stored (KV, then the stream with `Nats-Msg-Id`
//! `<id>:<alerts>:<state>`) before the alert is acked; if storing fails the
//! alert is handed back and the change stays pending, retried on the
//! redelivery or the next tick. Alerts already delivered are taken as one
//! batch, each changed incident stored once for it, so an alert flood does
//! not double the writes (the intermediate states are not published).

use super::engine::{Engine, EngineConfig, Verdict};
use super::novelty::{EdgeWatch, NewEdge};
use super::topology::Topology;
use crate::bus;
use crate::context::{settle, Context, Role};
use crate::contract::alert::Alert;
use crate::contract::incident::{Incident, IncidentState};
use crate::contract::{self, incident_subject};
use crate::event::{Event, Kind};
use crate::metrics::{Family, ReadAtScrape, Report};
use crate::registry::Registry;
use anyhow::{Context as _, Result};
use async_nats::jetstream::{self, kv, AckKind};
use futures::{FutureExt, StreamExt, TryStreamExt};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most alerts taken through the engine before their changes are stored
/// (the feed's pull batch).
const MAX_BATCH: usize = 256;

/// Incidents role settings.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentsConfig {
    pub engine: EngineConfig,
    /// The registry whose dependencies seed the topology; without it only
    /// observed edges (and same-source alerts) connect.
    pub registry: Option<PathBuf>,
    /// How often quiet incidents are looked for.
    pub check_every: Duration,
    /// Graph and trace telemetry replayed at start-up.
    pub lookback: Duration,
    /// New dependencies are alerted once a graph source has been heard
    /// from for this long ([`super::novelty`]); None: not watched.
    pub new_edges: Option<Duration>,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        IncidentsConfig {
            engine: EngineConfig::default(),
            registry: None,
            check_every: Duration::from_secs(1),
            lookback: Duration::from_secs(15 * 60),
            new_edges: Some(Duration::from_millis(
                super::novelty::DEFAULT_WARMUP_MS as u64,
            )),
        }
    }
}

/// What the role has done, for metrics and tests.
#[derive(Debug, Default)]
pub struct IncidentStats {
    /// Alert deliveries (a redelivery counts again).
    pub received: AtomicU64,
    /// Undecodable alerts, terminated.
    pub bad: AtomicU64,
    /// Redelivered alerts already counted.
    pub duplicates: AtomicU64,
    /// Incidents confirmed (told).
    pub opened: AtomicU64,
    /// Incidents opened pending, and pending ones that ended untold.
    pub pending: AtomicU64,
    pub unconfirmed: AtomicU64,
    pub resolved: AtomicU64,
    /// Resolved early to stay within the open-incident bound.
    pub evicted: AtomicU64,
    /// Alerts that joined an existing incident.
    pub joined: AtomicU64,
    /// Incident states stored (KV and stream).
    pub stored: AtomicU64,
    /// Stores that failed (retried).
    pub failed: AtomicU64,
    /// Incidents open now.
    pub open: AtomicU64,
    /// Topology edges held now.
    pub edges: AtomicU64,
    /// Topology alerts published, muted, and not published (see the log).
    pub new_edges: AtomicU64,
    pub new_edges_muted: AtomicU64,
    pub new_edges_failed: AtomicU64,
}

static INCIDENTS: Family = Family::counter(
    "proprio_incidents_total",
    "Incidents, by what happened (pending: opened, not yet told; opened: confirmed and told; unconfirmed: went quiet while pending, never told; resolved; evicted: resolved early to stay within the bound)",
    &["event"],
);
static OPEN: Family = Family {
    name: "proprio_incidents_open",
    help: "Incidents open (confirmed) now",
    labels: &[],
    gauge: true,
};
static INCIDENT_ALERTS: Family = Family::counter(
    "proprio_incident_alerts_total",
    "Alerts the incidents role took, by outcome (opened: a new, pending incident; joined, duplicate, bad)",
    &["outcome"],
);
static EDGES: Family = Family {
    name: "proprio_incident_topology_edges",
    help: "Dependency edges the incidents role knows (registry and observed)",
    labels: &[],
    gauge: true,
};
static NEW_EDGES: Family = Family::counter(
    "proprio_new_dependencies_total",
    "Topology alerts: an established service's never-seen dependency in graph telemetry, by outcome (alerted, muted, failed: not published)",
    &["outcome"],
);
static STORE_FAILED: Family = Family::counter(
    "proprio_incident_store_failures_total",
    "Incident changes whose KV put or publish failed (retried)",
    &[],
);

impl ReadAtScrape for IncidentStats {
    fn report(&self, out: &mut Report) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.add(&INCIDENTS, &["pending"], g(&self.pending));
        out.add(&INCIDENTS, &["opened"], g(&self.opened));
        out.add(&INCIDENTS, &["unconfirmed"], g(&self.unconfirmed));
        out.add(&INCIDENTS, &["resolved"], g(&self.resolved));
        out.add(&INCIDENTS, &["evicted"], g(&self.evicted));
        out.add(&OPEN, &[], g(&self.open));
        out.add(&INCIDENT_ALERTS, &["opened"], g(&self.pending));
        out.add(&INCIDENT_ALERTS, &["joined"], g(&self.joined));
        out.add(&INCIDENT_ALERTS, &["duplicate"], g(&self.duplicates));
        out.add(&INCIDENT_ALERTS, &["bad"], g(&self.bad));
        out.add(&EDGES, &[], g(&self.edges));
        out.add(&STORE_FAILED, &[], g(&self.failed));
        out.add(&NEW_EDGES, &["alerted"], g(&self.new_edges));
        out.add(&NEW_EDGES, &["muted"], g(&self.new_edges_muted));
        out.add(&NEW_EDGES, &["failed"], g(&self.new_edges_failed));
    }
}

/// The incidents role.
pub struct Incidents {
    ctx: Context,
    cfg: IncidentsConfig,
    stats: Arc<IncidentStats>,
}

impl Incidents {
    pub fn new(ctx: &Context, cfg: IncidentsConfig) -> Incidents {
        Incidents {
            ctx: ctx.clone(),
            cfg,
            stats: ctx.metrics.counters(),
        }
    }

    pub fn stats(&self) -> Arc<IncidentStats> {
        self.stats.clone()
    }
}

/// The topology's telemetry: ordered, so not acked.
type TopologyFeed = jetstream::consumer::pull::Ordered;

impl Role for Incidents {
    async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let kv = self.ctx.bus.incidents_kv().await?;
        let mut engine = Engine::new(self.cfg.engine.clone(), self.topology());
        let stored = load_all(&kv).await?;
        let n = stored.len();
        self.republish_resolved(&stored).await;
        engine.restore(stored);
        tracing::info!(
            stored = n,
            open = engine.open_count(),
            "incidents: rebuilt from {}",
            contract::BUCKET_INCIDENTS
        );
        let mut feed = self
            .ctx
            .bus
            .feed(
                contract::STREAM_ALERTS,
                contract::CONSUMER_INCIDENTS,
                contract::SUBJECT_RAISE_ALL,
            )
            .await?;
        let mut since = self.ctx.clock.now_ms() - self.cfg.lookback.as_millis() as i64;
        let mut topo: Option<TopologyFeed> = None;
        let mut edges = self
            .cfg
            .new_edges
            .map(|w| EdgeWatch::new(w.as_millis() as i64));
        let mut tick = tokio::time::interval(self.cfg.check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Not the immediate first tick: it would find "no alert since the
        // last tick" before the backlog's first alert had time to arrive.
        tick.tick().await;
        // Until a tick passes with no alert, or an alert says none is
        // pending, the backlog may hold alerts older than the clock.
        let (mut backlog, mut since_tick) = (true, false);
        tokio::pin!(shutdown);
        tracing::info!("incidents: running");
        loop {
            self.observe_counts(&engine);
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    backlog &= since_tick;
                    since_tick = false;
                    if !backlog {
                        engine.advance(self.ctx.clock.now_ms());
                    }
                    if let Err(e) = self.store(&kv, &mut engine).await {
                        tracing::warn!("incidents: storing: {e:#}; retrying");
                    }
                    if topo.is_none() {
                        topo = self.open_topology(since).await;
                    }
                }
                m = next_topology(&mut topo) => match m {
                    Some(Ok(m)) => {
                        if let Ok(info) = m.info() {
                            since = since.max(bus::datetime_ms(&info) + 1);
                        }
                        let subject = Some((self.ctx.bus.root(), m.subject.as_str()));
                        let limits = &self.ctx.shared.limits;
                        if let Ok(ev) = Event::decode(&m.payload, subject, limits, None) {
                            let topology = engine.topology_mut();
                            let new = match edges.as_mut() {
                                Some(w) => w.observe(topology, &ev),
                                None => {
                                    topology.observe_event(&ev);
                                    None
                                }
                            };
                            if let (Some(n), Ok(info)) = (new, m.info()) {
                                let id = NewEdge::id_for_message(info.stream, info.stream_sequence);
                                self.raise(n.alert(id, &ev.key, self.ctx.shared.policy.level())).await;
                            }
                        }
                    }
                    Some(Err(e)) => tracing::debug!("incidents: topology feed: {e}"),
                    None => topo = None,
                },
                msg = feed.next() => {
                    since_tick = true;
                    // What else is already here joins the batch: one store
                    // per changed incident per batch, not per alert, so an
                    // alert flood is not doubled in writes.
                    let mut batch = vec![msg];
                    while batch.len() < MAX_BATCH {
                        match feed.next().now_or_never() {
                            Some(m) => batch.push(m),
                            None => break,
                        }
                    }
                    let last = batch.last().and_then(|m| m.info().ok().map(|i| i.pending));
                    backlog = last.unwrap_or(0) > 0;
                    self.handle(&kv, &mut engine, batch).await;
                }
            }
        }
        if let Err(e) = self.store(&kv, &mut engine).await {
            tracing::warn!("incidents: changes not stored at shutdown (their alerts will be redelivered): {e:#}");
        }
        tracing::info!(open = engine.open_count(), "incidents: stopped");
        Ok(())
    }
}

/// The next topology message, or never while there is no feed.
async fn next_topology(
    topo: &mut Option<TopologyFeed>,
) -> Option<Result<jetstream::Message, jetstream::consumer::pull::OrderedError>> {
    match topo {
        Some(t) => t.next().await,
        None => std::future::pending().await,
    }
}

impl Incidents {
    /// The registry's dependencies, when a registry is configured and
    /// readable; otherwise an empty topology (with a warning: incidents
    /// then connect only through observed edges).
    fn topology(&self) -> Topology {
        let t = Topology::new(self.cfg.engine.max_edges);
        let Some(path) = &self.cfg.registry else {
            return t;
        };
        match Registry::load(path) {
            Ok(reg) => t.with_registry(&reg),
            Err(e) => {
                tracing::warn!("incidents: {e:#}; starting from observed edges only");
                t
            }
        }
    }

    async fn open_topology(&self, since_ms: i64) -> Option<TopologyFeed> {
        let r = async {
            let stream = self
                .ctx
                .bus
                .js()
                .get_stream(contract::STREAM_TELEMETRY)
                .await
                .context("opening the telemetry stream")?;
            let root = self.ctx.bus.root();
            let mut cfg = bus::ordered_since("", since_ms)?;
            cfg.filter_subjects = [Kind::Graph, Kind::Trace]
                .iter()
                .map(|k| format!("{root}.{k}.>"))
                .collect();
            let c = stream.create_consumer(cfg).await.context("creating")?;
            c.messages().await.context("reading")
        }
        .await;
        match r {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!("incidents: topology feed: {e:#}; retrying");
                None
            }
        }
    }

    /// Publishes a new dependency's alert unless its caller is muted; it
    /// comes back through the alerts stream like any other. Not retried:
    /// the edge is learnt, so a lost publish loses this one alert (logged).
    async fn raise(&self, alert: Alert) {
        let now = self.ctx.clock.now_ms();
        if let Ok(true) = crate::alert::mute::is_muted(&self.ctx.bus, &alert.source, now).await {
            self.stats.new_edges_muted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.ctx.bus.publish_alert(&alert).await {
            Ok(_) => {
                tracing::info!(source = %alert.source, "incidents: {}", alert.diagnosis.as_deref().unwrap_or(""));
                self.stats.new_edges.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(source = %alert.source, "new dependency alert not published: {e:#}");
                self.stats.new_edges_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Publishes again (deduplicated) the incidents resolved within the
    /// stream's dedup window: a crash between their KV put and their
    /// publish would otherwise leave subscribers never told.
    async fn republish_resolved(&self, stored: &[Incident]) {
        let recent = self.ctx.clock.now_ms() - 3_600_000;
        let resolved = stored.iter().filter(|i| {
            i.state == IncidentState::Resolved && i.resolved_ts.unwrap_or(i.updated_ts) >= recent
        });
        for inc in resolved {
            let (subject, id) = (incident_subject(&inc.id), inc.msg_id());
            let r = self
                .ctx
                .bus
                .publish_once(subject, inc.to_msgpack(), None, &id);
            if let Err(e) = r.await {
                tracing::warn!(incident = %inc.id, "incidents: republishing: {e:#}");
            }
        }
    }

    /// A batch of alerts through the engine, their changes stored, then
    /// each settled: acked once stored, handed back if storing failed.
    async fn handle(&self, kv: &kv::Store, engine: &mut Engine, batch: Vec<jetstream::Message>) {
        let mut taken = Vec::with_capacity(batch.len());
        for msg in batch {
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            let alert = match Alert::decode(&msg.payload) {
                Ok(a) if !a.id.is_empty() && !a.source.is_empty() => a,
                Ok(_) => {
                    self.refuse(&msg, "an alert without id or source").await;
                    continue;
                }
                Err(e) => {
                    self.refuse(&msg, &format!("undecodable alert: {e}")).await;
                    continue;
                }
            };
            match engine.observe(&alert) {
                Verdict::Opened(id) => {
                    tracing::info!(incident = %id, source = %alert.source, "incident opened")
                }
                Verdict::Joined(id) => {
                    tracing::debug!(incident = %id, source = %alert.source, "alert joined")
                }
                Verdict::Duplicate => {
                    tracing::debug!(alert = %alert.id, "alert already counted (redelivered)")
                }
            }
            taken.push(msg);
        }
        let stored = self.store(kv, engine).await;
        if let Err(e) = &stored {
            tracing::warn!(
                "incidents: storing: {e:#}; {} alerts will be redelivered",
                taken.len()
            );
        }
        for msg in taken {
            let kind = match &stored {
                Ok(()) => AckKind::Ack,
                Err(_) => {
                    let delivered = msg.info().map_or(1, |i| i.delivered);
                    AckKind::Nak(Some(bus::nak_delay(delivered)))
                }
            };
            settle(&msg, kind).await;
        }
    }

    /// Bad input stays bad: terminated (never redelivered), logged, counted.
    async fn refuse(&self, msg: &jetstream::Message, why: &str) {
        self.stats.bad.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(subject = %msg.subject, "incidents: {why}; terminated");
        settle(msg, AckKind::Term).await;
    }

    /// Stores every pending change: KV first (the state a restart reads),
    /// then the stream. Stops at the first failure; the rest stay pending.
    /// A pending incident is stored but not published; one dropped
    /// unconfirmed has its stored state deleted.
    async fn store(&self, kv: &kv::Store, engine: &mut Engine) -> Result<()> {
        for id in engine.dropped() {
            kv.delete(&id)
                .await
                .with_context(|| format!("deleting {}/{id}", contract::BUCKET_INCIDENTS))?;
            engine.forgotten(&id);
        }
        for inc in engine.changed() {
            let payload = inc.to_msgpack();
            let r = async {
                kv.put(&inc.id, payload.clone().into())
                    .await
                    .with_context(|| {
                        format!("writing {}/{}", contract::BUCKET_INCIDENTS, inc.id)
                    })?;
                if inc.state == IncidentState::Pending {
                    return Ok(());
                }
                self.ctx
                    .bus
                    .publish_once(incident_subject(&inc.id), payload, None, &inc.msg_id())
                    .await?;
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = r {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
            self.stats.stored.fetch_add(1, Ordering::Relaxed);
            if inc.state == IncidentState::Resolved {
                self.ctx
                    .metrics
                    .incident_alerts
                    .observe(f64::from(inc.alerts));
                tracing::info!(incident = %inc.id, alerts = inc.alerts, sources = inc.sources.len(), "incident resolved");
            }
            engine.persisted(&inc);
        }
        Ok(())
    }

    fn observe_counts(&self, engine: &Engine) {
        let c = engine.counts;
        let s = &self.stats;
        s.opened.store(c.opened, Ordering::Relaxed);
        s.pending.store(c.pending, Ordering::Relaxed);
        s.unconfirmed.store(c.unconfirmed, Ordering::Relaxed);
        s.resolved.store(c.resolved, Ordering::Relaxed);
        s.evicted.store(c.evicted, Ordering::Relaxed);
        s.joined.store(c.joined, Ordering::Relaxed);
        s.duplicates.store(c.duplicates, Ordering::Relaxed);
        s.open.store(engine.open_count() as u64, Ordering::Relaxed);
        s.edges
            .store(engine.topology().edges() as u64, Ordering::Relaxed);
    }
}

/// Every incident in the bucket. An undecodable value is skipped with a
/// warning rather than stopping the role: it is one lost incident, not all.
pub async fn load_all(kv: &kv::Store) -> Result<Vec<Incident>> {
    let keys: Vec<String> = kv
        .keys()
        .await
        .context("listing incidents")?
        .try_collect()
        .await
        .context("listing incidents")?;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let Some(v) = kv
            .get(&k)
            .await
            .with_context(|| format!("reading incident {k}"))?
        else {
            continue;
        };
        match Incident::decode(&v) {
            Ok(i) => out.push(i),
            Err(e) => {
                tracing::warn!(key = %k, "incidents: stored incident undecodable, skipped: {e}")
            }
        }
    }
    Ok(out)
}
