//! The incidents role against a real nats-server: alerts in, incidents in
//! KV and on the stream; restarts and crashes lose nothing and count
//! nothing twice; bad input is terminated; quiet incidents resolve on the
//! injected clock.

use crate::support::NatsServer;
use async_nats::jetstream::kv;
use futures::TryStreamExt;
use proprio::bus::Bus;
use proprio::cli_incidents::{query_output, IncidentsArgs, Query};
use proprio::context::{Context, Role, Shared};
use proprio::contract::alert::{Alert, AlertBaseline, AlertReason, BaselineOf, Span};
use proprio::contract::incident::{Incident, IncidentState};
use proprio::contract::{self, raise_subject};
use proprio::event::Kind;
use proprio::freshness::{Clock, ManualClock, SystemClock};
use proprio::incident::{EngineConfig, IncidentStats, Incidents, IncidentsConfig};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const MIN: i64 = 60_000;

/// A → B → C (A depends on B, B on C); D and E stand alone.
const REGISTRY: &str = "services:
- {name: C, layer: 0, port: 1}
- {name: B, layer: 1, port: 2, depends_on: [C]}
- {name: A, layer: 2, port: 3, depends_on: [B]}
- {name: D, layer: 0, port: 4}
- {name: E, layer: 0, port: 5}
";

fn alert(seq: u64, source: &str, ts: i64, score: f32) -> Alert {
    Alert {
        id: Alert::id_for_message(contract::STREAM_TELEMETRY, seq),
        ts,
        source: source.into(),
        key: source.into(),
        kind: Kind::Pulse,
        score,
        loss: 2.0,
        baseline: AlertBaseline {
            median: 1.0,
            scale: 0.5,
            of: BaselineOf::Key,
        },
        rendered: format!("<|BOE|><|PULSE|><|SVC|>{source}<|EOE|>"),
        span: Span::default(),
        diagnosis: Some("process crashed".into()),
        model: None,
        reason: AlertReason::Surprise,
        previous_epoch: false,
    }
}

/// An alert without a diagnosis (a diagnosed one is told at once).
fn undiagnosed(seq: u64, source: &str, ts: i64, score: f32) -> Alert {
    Alert {
        diagnosis: None,
        ..alert(seq, source, ts, score)
    }
}

struct Running {
    stats: Arc<IncidentStats>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The role with every incident told at once (grouping, restarts, the
/// CLI), or with the default confirmation rule.
fn start(bus: &Bus, clock: &ManualClock, registry: &std::path::Path) -> Running {
    start_with(bus, clock, registry, 1)
}

fn start_with(
    bus: &Bus,
    clock: &ManualClock,
    registry: &std::path::Path,
    confirm_alerts: u32,
) -> Running {
    let cfg = IncidentsConfig {
        registry: Some(registry.to_path_buf()),
        check_every: Duration::from_millis(50),
        engine: EngineConfig {
            confirm_alerts,
            ..Default::default()
        },
        ..Default::default()
    };
    start_role(bus, clock, cfg)
}

/// The role with `cfg`, on `clock`.
fn start_role(bus: &Bus, clock: &ManualClock, cfg: IncidentsConfig) -> Running {
    let ctx = Context::new(bus.clone(), Shared::default()).with_clock(Arc::new(clock.clone()));
    let role = Incidents::new(&ctx, cfg);
    let stats = role.stats();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(role.run(async move {
        let _ = rx.await;
    }));
    Running { stats, stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }

    /// A crash: the task is dropped wherever it is, nothing flushed.
    async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn stored(kv: &kv::Store) -> Vec<Incident> {
    let keys: Vec<String> = kv.keys().await.unwrap().try_collect().await.unwrap();
    let mut out = Vec::new();
    for k in keys {
        if let Some(v) = kv.get(&k).await.unwrap() {
            out.push(Incident::decode(&v).unwrap());
        }
    }
    out.sort_by_key(|i| i.opened_ts);
    out
}

/// Waits (10 s at most) until the stored incidents satisfy `ok`.
async fn wait_for(kv: &kv::Store, what: &str, ok: impl Fn(&[Incident]) -> bool) -> Vec<Incident> {
    let t0 = Instant::now();
    loop {
        let s = stored(kv).await;
        if ok(&s) {
            return s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what}: have {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every incident message on the stream, as (subject, incident).
async fn published(bus: &Bus) -> Vec<(String, Incident)> {
    let mut out = Vec::new();
    bus.scan_since(
        contract::STREAM_INCIDENTS,
        contract::SUBJECT_INCIDENTS_ALL,
        0,
        |m, _| out.push((m.subject.to_string(), Incident::decode(&m.payload).unwrap())),
    )
    .await
    .unwrap();
    out
}

async fn raise(bus: &Bus, a: &Alert) {
    assert!(bus.publish_alert(a).await.unwrap(), "{} stored once", a.id);
}

/// The same alert stored again under another message id: what a
/// redelivery looks like to the incidents role.
async fn redeliver(bus: &Bus, a: &Alert, n: u32) {
    let msg_id = format!("{}#again{n}", a.id);
    bus.publish_once(raise_subject(&a.source), a.to_msgpack(), None, &msg_id)
        .await
        .unwrap();
}

/// A nats-server, its bus and incidents KV, the registry file and a manual
/// clock at now.
struct World {
    _server: NatsServer,
    _dir: tempfile::TempDir,
    bus: Bus,
    kv: kv::Store,
    registry: std::path::PathBuf,
    t0: i64,
    clock: ManualClock,
}

impl World {
    async fn new() -> World {
        let server = NatsServer::start();
        let bus = server.bus().await;
        let kv = bus.incidents_kv().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("services.yaml");
        std::fs::write(&registry, REGISTRY).unwrap();
        let t0 = SystemClock.now_ms();
        World {
            _server: server,
            _dir: dir,
            bus,
            kv,
            registry,
            t0,
            clock: ManualClock::new(t0),
        }
    }
}

#[tokio::test]
async fn alerts_become_incidents_across_restarts_and_crashes() {
    let w = World::new().await;
    let (bus, kv, registry, t0, clock) = (&w.bus, &w.kv, &w.registry, w.t0, &w.clock);

    // C fails first, B after it: one incident, rooted at C.
    let role = start(&bus, &clock, &registry);
    raise(&bus, &alert(1, "C", t0, 5.0)).await;
    raise(&bus, &alert(2, "B", t0 + 1000, 4.0)).await;
    let s = wait_for(&kv, "C and B in one incident", |s| {
        s.len() == 1 && s[0].alerts == 2
    })
    .await;
    let id = s[0].id.clone();
    assert_eq!(s[0].sources, ["C", "B"]);
    assert_eq!(s[0].root().unwrap().source, "C");

    // Restart (clean) in the middle: A joins the same incident, D opens its own.
    role.stop().await;
    raise(&bus, &alert(3, "A", t0 + 2000, 6.0)).await;
    raise(&bus, &alert(4, "D", t0 + 2000, 4.0)).await;
    let role = start(&bus, &clock, &registry);
    let s = wait_for(&kv, "A joins, D apart", |s| {
        s.len() == 2 && s[0].alerts == 3
    })
    .await;
    assert_eq!(s[0].id, id, "the id is stable across the restart");
    assert_eq!(s[0].sources, ["C", "B", "A"]);
    assert_eq!(s[0].root().unwrap().source, "C");
    assert_eq!(s[1].sources, ["D"]);

    // Undecodable input is terminated and the role goes on.
    bus.publish_once(raise_subject("junk"), &b"\x93\x01junk"[..], None, "junk-1")
        .await
        .unwrap();
    // An observed call (graph telemetry) connects E to C.
    bus.publish_acked(
        "os.graph.ServiceGraph",
        r#"{"ts":1767225600000,"src":"E","rel":"calls","dst":"C"}"#,
        None,
    )
    .await
    .unwrap();
    let t = Instant::now();
    while role.stats.edges.load(Ordering::Relaxed) < 3 || role.stats.bad.load(Ordering::Relaxed) < 1
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "graph edge and junk not seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    raise(&bus, &alert(5, "E", t0 + 3000, 3.5)).await;
    wait_for(&kv, "E joins through the observed edge", |s| {
        s.len() == 2 && s[0].alerts == 4
    })
    .await;

    // A crash, then redeliveries of alerts already counted: no double count,
    // no duplicate incident.
    role.crash().await;
    redeliver(&bus, &alert(2, "B", t0 + 1000, 4.0), 1).await;
    redeliver(&bus, &alert(4, "D", t0 + 2000, 4.0), 1).await;
    let role = start(&bus, &clock, &registry);
    raise(&bus, &alert(6, "B", t0 + 4000, 4.5)).await;
    let s = wait_for(&kv, "B's new alert counted once", |s| {
        s.len() == 2 && s[0].alerts == 5
    })
    .await;
    let t = Instant::now();
    while role.stats.duplicates.load(Ordering::Relaxed) < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "redeliveries not seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s[1].alerts, 1);
    assert_eq!(s[0].state, IncidentState::Open);

    // Quiet for the quiet period on the role's clock: both resolve.
    clock.set(t0 + 4000 + 10 * MIN);
    let s = wait_for(&kv, "both resolved", |s| {
        s.len() == 2 && s.iter().all(|i| i.state == IncidentState::Resolved)
    })
    .await;
    assert_eq!(s[0].resolved_ts, Some(t0 + 4000 + 10 * MIN));
    assert_eq!(role.stats.open.load(Ordering::Relaxed), 0);
    role.stop().await;

    // The stream told each state once: opened (1 alert), 2, 3, 4, 5 alerts,
    // resolved; the other incident opened and resolved.
    let msgs = published(&bus).await;
    let mine: Vec<(u32, IncidentState)> = msgs
        .iter()
        .filter(|(_, i)| i.id == id)
        .map(|(_, i)| (i.alerts, i.state))
        .collect();
    // (Alerts delivered together are stored as one state, so not every
    // count need appear; none twice, in order, and the last two states.)
    use IncidentState::{Open, Resolved};
    assert!(
        mine.windows(2)
            .all(|w| w[0].0 < w[1].0 || w[1] == (5, Resolved)),
        "{mine:?}"
    );
    assert_eq!(
        mine[mine.len() - 2..],
        [(5, Open), (5, Resolved)],
        "{mine:?}"
    );
    assert!(mine.len() >= 4, "stored at least once per stage: {mine:?}");
    assert!(msgs
        .iter()
        .all(|(subj, i)| *subj == format!("proprio.incident.{}", i.id)));
    assert_eq!(msgs.len(), mine.len() + 2);

    // `proprio incidents`: the list, one in full, and a clear error for an
    // unknown id.
    let args = IncidentsArgs {
        nats: Default::default(),
        query: vec![],
        follow: false,
        since: Duration::from_secs(3600),
        open: false,
        json: false,
    };
    let later = t0 + 4000 + 10 * MIN;
    let list = query_output(&bus, &Query::List, &args, later)
        .await
        .unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines[0].contains(&format!("resolved {id} root=C (process crashed")),
        "{list}"
    );
    assert!(lines[0].ends_with("sources=4 alerts=5 score=6.0"), "{list}");
    let open_only = IncidentsArgs {
        open: true,
        ..args.clone()
    };
    let none = query_output(&bus, &Query::List, &open_only, later)
        .await
        .unwrap();
    assert_eq!(none, "");
    let show = query_output(&bus, &Query::Show(id.clone()), &args, later)
        .await
        .unwrap();
    assert!(show.contains("blast radius (4): C, B, A, E"), "{show}");
    let missing = query_output(&bus, &Query::Show("inc-0-00000000".into()), &args, later)
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("no incident inc-0-00000000"), "{missing}");
}

#[tokio::test]
async fn a_pending_incident_is_kept_untold_across_a_crash_and_told_once_confirmed() {
    let w = World::new().await;
    let (bus, kv, registry, t0, clock) = (&w.bus, &w.kv, &w.registry, w.t0, &w.clock);
    let confirm = EngineConfig::default().confirm_alerts;
    assert_eq!(confirm, 3, "the default this test walks through");

    // Two alerts: pending, stored (a restart resumes it), not published.
    let role = start_with(&bus, &clock, &registry, confirm);
    raise(&bus, &undiagnosed(1, "C", t0, 6.0)).await;
    raise(&bus, &undiagnosed(2, "B", t0 + 1000, 6.0)).await;
    let s = wait_for(&kv, "pending with 2 alerts", |s| {
        s.len() == 1 && s[0].alerts == 2
    })
    .await;
    assert_eq!(s[0].state, IncidentState::Pending);
    assert_eq!(role.stats.open.load(Ordering::Relaxed), 0);
    role.crash().await;
    assert!(
        published(&bus).await.is_empty(),
        "nothing told while pending"
    );

    // After the crash the third alert confirms the same incident.
    let role = start_with(&bus, &clock, &registry, confirm);
    raise(&bus, &undiagnosed(3, "A", t0 + 2000, 6.0)).await;
    let s = wait_for(&kv, "confirmed with 3 alerts", |s| {
        s.len() == 1 && s[0].state == IncidentState::Open
    })
    .await;
    assert_eq!((s[0].alerts, s[0].confirmed_ts), (3, Some(t0 + 2000)));
    assert_eq!(s[0].sources, ["C", "B", "A"]);
    let told = published(&bus).await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].1.state, IncidentState::Open);

    // A lone alert elsewhere stays pending and, quiet, is forgotten: its
    // stored state deleted, never published.
    raise(&bus, &undiagnosed(4, "D", t0 + 3000, 6.0)).await;
    wait_for(&kv, "D pending", |s| s.len() == 2).await;
    clock.set(t0 + 3000 + 10 * MIN);
    let s = wait_for(&kv, "D forgotten, the incident resolved", |s| {
        s.len() == 1 && s[0].state == IncidentState::Resolved
    })
    .await;
    assert_eq!(s[0].sources, ["C", "B", "A"]);
    let told = published(&bus).await;
    assert!(told.iter().all(|(_, i)| i.sources[0] == "C"), "{told:?}");
    role.stop().await;
}

/// Every alert on the alerts stream.
async fn alerts_stored(bus: &Bus) -> Vec<Alert> {
    let mut out = Vec::new();
    bus.scan_since(
        contract::STREAM_ALERTS,
        contract::SUBJECT_RAISE_ALL,
        0,
        |m, _| out.push(Alert::decode(&m.payload).unwrap()),
    )
    .await
    .unwrap();
    out
}

#[tokio::test]
async fn a_new_dependency_is_alerted_once_and_tells_its_incident() {
    let w = World::new().await;
    let (bus, kv, registry, t0, clock) = (&w.bus, &w.kv, &w.registry, w.t0, &w.clock);
    let cfg = IncidentsConfig {
        registry: Some(registry.to_path_buf()),
        check_every: Duration::from_millis(50),
        new_edges: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    let role = start_role(bus, clock, cfg);
    let edge = |ts: i64, src: &str, dst: &str| {
        format!(r#"{{"ts":{ts},"src":"{src}","rel":"calls","dst":"{dst}"}}"#)
    };
    // The graph heard from since two hours ago (its warm-up is an hour),
    // a registry edge, a new one of a registered service (twice), and the
    // edges of a service first seen now (learnt during its own warm-up).
    let edges = [
        (t0 - 120 * MIN, "A", "B"),
        (t0, "A", "B"),
        (t0 + 1, "D", "E"),
        (t0 + 2, "D", "E"),
        (t0 + 3, "F", "A"),
        (t0 + 4, "F", "C"),
    ];
    for (ts, src, dst) in edges {
        bus.publish_acked("os.graph.ServiceGraph", edge(ts, src, dst), None)
            .await
            .unwrap();
    }
    let s = wait_for(&kv, "D's incident, told at once", |s| {
        s.len() == 1 && s[0].state == IncidentState::Open
    })
    .await;
    assert_eq!(s[0].sources, ["D"]);
    let alerts = alerts_stored(&bus).await;
    assert_eq!(alerts.len(), 1, "one alert: {alerts:#?}");
    let a = &alerts[0];
    assert_eq!(
        (a.source.as_str(), a.reason, a.kind),
        ("D", AlertReason::Topology, Kind::Graph)
    );
    assert_eq!(
        a.diagnosis.as_deref(),
        Some("new dependency: D calls E (never seen before)")
    );
    assert_eq!(role.stats.new_edges.load(Ordering::Relaxed), 1);
    assert_eq!(published(&bus).await.len(), 1);
    role.stop().await;
}
