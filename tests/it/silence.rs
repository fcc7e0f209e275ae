//! The silence watch against a real nats-server, on the wall clock with
//! intervals of a tenth of a second.

use crate::support;

use proprio::bus::Bus;
use proprio::context::{Context, Role, Shared};
use proprio::contract;
use proprio::contract::alert::{Alert, AlertReason};
use proprio::freshness::SystemClock;
use proprio::silence::{SilenceConfig, SilenceStats, SilenceWatch};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::NatsServer;
use tokio::sync::oneshot;

fn cfg() -> SilenceConfig {
    SilenceConfig {
        multiple: 3.0,
        floor: Duration::from_millis(300),
        min_observations: 3,
        min_span: Duration::from_millis(200),
        check_every: Duration::from_millis(50),
        lookback: Duration::from_secs(60),
        ..SilenceConfig::default()
    }
}

struct Watch {
    stats: Arc<SilenceStats>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn watch(bus: &Bus) -> Watch {
    let w = SilenceWatch::new(&Context::new(bus.clone(), Shared::default()), cfg());
    let stats = w.stats();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(w.run(async move {
        let _ = rx.await;
    }));
    Watch { stats, stop, task }
}

impl Watch {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// `n` heartbeats from `source`, 100 ms apart.
async fn beat(bus: &Bus, source: &str, n: usize) {
    for _ in 0..n {
        bus.publish_acked(
            format!("os.pulse.{source}"),
            r#"{"metrics":{"up":1}}"#,
            None,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn alerts(bus: &Bus) -> Vec<Alert> {
    bus.read_since(contract::STREAM_ALERTS, contract::SUBJECT_RAISE_ALL, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|(p, _)| Alert::decode(&p).unwrap())
        .collect()
}

async fn wait_alerts(bus: &Bus, n: usize) -> Vec<Alert> {
    let t0 = Instant::now();
    loop {
        let a = alerts(bus).await;
        if a.len() >= n {
            return a;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "expected {n} alerts, have {}",
            a.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_silent_source_is_alerted_once_and_rearmed() {
    let server = NatsServer::start();
    let bus = server.bus().await;
    let w = watch(&bus);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // "steady" keeps beating throughout; "worker" beats, dies, returns, dies.
    let steady = {
        let bus = bus.clone();
        tokio::spawn(async move { beat(&bus, "steady", 40).await })
    };
    beat(&bus, "worker", 6).await;
    let a = wait_alerts(&bus, 1).await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].source, "worker");
    assert_eq!(a[0].reason, AlertReason::Silence);
    let d = a[0].diagnosis.clone().unwrap();
    assert!(
        d.starts_with("silent for ") && d.contains("(usual 0.1s)"),
        "{d}"
    );
    assert!(a[0].score >= 3.0, "{}", a[0].score);

    // Still silent: no second alert for the same episode.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(alerts(&bus).await.len(), 1);

    // Back, then silent again: a new episode, a new alert.
    beat(&bus, "worker", 4).await;
    let a = wait_alerts(&bus, 2).await;
    assert_eq!(a.len(), 2);
    assert_eq!(a[1].source, "worker");
    assert_ne!(a[0].id, a[1].id);

    steady.await.unwrap();
    assert!(
        alerts(&bus).await.iter().all(|a| a.source == "worker"),
        "steady never alerted"
    );
    assert_eq!(w.stats.alerts.load(Ordering::Relaxed), 2);
    w.stop().await;
}

#[tokio::test]
async fn two_watchers_make_one_alert() {
    let server = NatsServer::start();
    let bus = server.bus().await;
    let (w1, w2) = (watch(&bus), watch(&bus));
    tokio::time::sleep(Duration::from_millis(200)).await;
    beat(&bus, "worker", 6).await;
    wait_alerts(&bus, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        alerts(&bus).await.len(),
        1,
        "the alerts stream dedups by id"
    );
    w1.stop().await;
    w2.stop().await;
}

#[tokio::test]
async fn a_watcher_started_late_relearns_from_the_stream() {
    let server = NatsServer::start();
    let bus = server.bus().await;
    // The source beat and died before any watcher ran.
    beat(&bus, "worker", 6).await;
    let w = watch(&bus);
    let a = wait_alerts(&bus, 1).await;
    assert_eq!(a[0].source, "worker");
    w.stop().await;
}

#[tokio::test]
async fn a_muted_source_is_not_alerted() {
    let server = NatsServer::start();
    let bus = server.bus().await;
    let now = proprio::freshness::Clock::now_ms(&SystemClock);
    proprio::alert::mute::set(&bus, "worker", now + 60_000)
        .await
        .unwrap();
    let w = watch(&bus);
    tokio::time::sleep(Duration::from_millis(200)).await;
    beat(&bus, "worker", 6).await;
    let t0 = Instant::now();
    while w.stats.muted.load(Ordering::Relaxed) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the silence was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(alerts(&bus).await.is_empty());
    w.stop().await;
}

/// Every source stopping at once is the telemetry path going down (the
/// publishers' network, NATS), not six services dying in the same second:
/// one alert naming it, not six.
#[tokio::test]
async fn everything_silent_at_once_is_one_alert() {
    let server = NatsServer::start();
    let bus = server.bus().await;
    let w = watch(&bus);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let beats: Vec<_> = (0..6)
        .map(|i| {
            let bus = bus.clone();
            tokio::spawn(async move { beat(&bus, &format!("svc{i}"), 8).await })
        })
        .collect();
    for b in beats {
        b.await.unwrap();
    }
    let a = wait_alerts(&bus, 1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let a2 = alerts(&bus).await;
    assert_eq!(a2.len(), 1, "one alert, not one per source: {a2:?}");
    assert_eq!(a[0].source, proprio::silence::ALL_SOURCES);
    assert_eq!(a[0].reason, AlertReason::Silence);
    let d = a[0].diagnosis.clone().unwrap();
    assert!(d.starts_with("all 6 sources silent for "), "{d}");
    w.stop().await;
}
