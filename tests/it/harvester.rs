//! The harvester against a real nats-server: telemetry in, curriculum and
//! dead letters out, acknowledged only once the output is stored.

use crate::support;
use crate::support::proc::now_ms;

use async_nats::jetstream::consumer::PullConsumer;
use proprio::bus::Bus;
use proprio::context::{Context, Role, Shared};
use proprio::contract;
use proprio::curriculum::{Curriculum, Document};
use proprio::event::Reason;
use proprio::freshness::Gates;
use proprio::harvester::{HarvestStats, Harvester, HarvesterConfig};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::NatsServer;
use tokio::sync::oneshot;

struct Running {
    bus: Bus,
    stats: Arc<HarvestStats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    fingerprint: String,
    _keys: tempfile::TempDir,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

async fn start(server: &NatsServer, budget: u32) -> Running {
    start_rendering(server, budget, Default::default()).await
}

/// A harvester rendering as `render` says.
async fn start_rendering(
    server: &NatsServer,
    budget: u32,
    render: proprio::curriculum::RenderConfig,
) -> Running {
    let bus = server.bus().await;
    let keys = tempfile::tempdir().unwrap();
    let reg = keys.path().join("services.yaml");
    std::fs::write(&reg, "services: {}\n").unwrap();
    let gates = Gates {
        key_files: vec![reg],
        ..Gates::default()
    };
    let fingerprint = gates.fingerprint().unwrap();
    let ctx = Context::new(
        bus.clone(),
        Shared {
            gates,
            render,
            ..Shared::default()
        },
    );
    let h = Harvester::new(
        &ctx,
        HarvesterConfig {
            sampling: proprio::curriculum::Sampling {
                budget_per_minute: budget,
                ..Default::default()
            },
            ..HarvesterConfig::default()
        },
    );
    let stats = h.stats();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(h.run(async move {
        let _ = rx.await;
    }));
    Running {
        bus,
        stats,
        stop: Some(tx),
        task: Some(task),
        fingerprint,
        _keys: keys,
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn documents(bus: &Bus) -> Vec<Document> {
    bus.read_since(
        contract::STREAM_CURRICULUM,
        contract::SUBJECT_CURRICULUM_ALL,
        0,
    )
    .await
    .unwrap()
    .into_iter()
    .map(|(p, _)| Document::from_msgpack(&p).unwrap())
    .collect()
}

async fn consumer_state(bus: &Bus) -> (u64, usize) {
    let mut c: PullConsumer = bus
        .js()
        .get_consumer_from_stream(contract::CONSUMER_HARVESTER, contract::STREAM_TELEMETRY)
        .await
        .unwrap();
    let i = c.info().await.unwrap();
    (i.num_pending, i.num_ack_pending)
}

async fn publish(bus: &Bus, subject: &str, payload: impl Into<bytes::Bytes>) {
    bus.publish_acked(subject, payload.into(), None)
        .await
        .unwrap();
}

/// MessagePack written byte by byte, as a service in any language would:
/// {"ts": <int64>, "metrics": {"cpu": 0.5}} on os.pulse.<source>.
fn hand_msgpack_pulse(ts: i64, cpu: f64) -> Vec<u8> {
    let mut b = vec![0x82];
    b.push(0xa2);
    b.extend_from_slice(b"ts");
    b.push(0xd3);
    b.extend_from_slice(&ts.to_be_bytes());
    b.push(0xa7);
    b.extend_from_slice(b"metrics");
    b.push(0x81);
    b.push(0xa3);
    b.extend_from_slice(b"cpu");
    b.push(0xcb);
    b.extend_from_slice(&cpu.to_be_bytes());
    b
}

#[tokio::test]
async fn raw_json_and_hand_made_msgpack_become_curriculum() {
    let server = NatsServer::start();
    let r = start(&server, 120).await;
    let ts = now_ms();
    publish(
        &r.bus,
        "os.flux.AitherMind.started",
        format!(r#"{{"ts": {ts}, "state": "healthy", "attrs": {{"port": 8080}}}}"#),
    )
    .await;
    publish(&r.bus, "os.pulse.AitherMind", hand_msgpack_pulse(ts, 0.5)).await;
    // A bare log line is a log event too.
    publish(
        &r.bus,
        "os.log.AitherMind",
        "connection refused to localhost:5432\n",
    )
    .await;
    wait_for("three documents", || {
        r.stats.harvested.load(Ordering::Relaxed) == 3
    })
    .await;

    let docs = documents(&r.bus).await;
    assert_eq!(docs.len(), 3);
    assert!(docs
        .iter()
        .all(|d| d.fingerprint == r.fingerprint && d.source == "AitherMind"));
    let curricula: Vec<_> = docs.iter().map(|d| d.curriculum).collect();
    assert!(curricula.contains(&Curriculum::Nervous));
    assert_eq!(
        curricula
            .iter()
            .filter(|c| **c == Curriculum::Temporal)
            .count(),
        2
    );
    let subjects: Vec<String> = {
        let mut v = Vec::new();
        r.bus
            .scan_since(
                contract::STREAM_CURRICULUM,
                contract::SUBJECT_CURRICULUM_ALL,
                0,
                |m, _| v.push(m.subject.to_string()),
            )
            .await
            .unwrap();
        v
    };
    assert!(subjects.contains(&"proprio.curriculum.nervous".to_string()));
    wait_for_settled(&r.bus).await;
    assert_eq!(r.stats.rejected_total(), 0);
    r.stop().await;
}

async fn wait_for_settled(bus: &Bus) {
    let t0 = Instant::now();
    loop {
        if consumer_state(bus).await == (0, 0) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "telemetry never all acked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bad_payloads_are_dead_lettered_once_and_terminated() {
    let server = NatsServer::start();
    let r = start(&server, 120).await;
    publish(&r.bus, "os.pulse.svc", &b"\x93\x01\x02\x03"[..]).await; // an array, not a map
    publish(&r.bus, "os.pulse.svc", format!(r#"{{"ts": {}}}"#, now_ms())).await; // no metrics
    publish(&r.bus, "os.nonsense.svc", "{}").await;
    wait_for("three rejections", || r.stats.rejected_total() == 3).await;
    assert_eq!(r.stats.rejected(Reason::Decode), 1);
    assert_eq!(r.stats.rejected(Reason::MissingField), 1);
    assert_eq!(r.stats.rejected(Reason::BadSubject), 1);

    let mut seen = Vec::new();
    r.bus
        .scan_since(
            contract::STREAM_DLQ,
            contract::SUBJECT_DLQ_ALL,
            0,
            |m, _| {
                let h = m.headers.clone().unwrap();
                seen.push((
                    m.subject.to_string(),
                    h.get(contract::HEADER_SUBJECT).unwrap().to_string(),
                    h.get(contract::HEADER_DETAIL).unwrap().to_string(),
                    m.payload.clone(),
                ));
            },
        )
        .await
        .unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].0, "proprio.dlq.decode");
    assert_eq!(seen[0].1, "os.pulse.svc");
    assert_eq!(&seen[0].3[..], b"\x93\x01\x02\x03", "the original bytes");
    assert_eq!(seen[1].0, "proprio.dlq.missing_field");
    assert!(seen[1].2.contains("metrics"), "{}", seen[1].2);
    assert_eq!(seen[2].0, "proprio.dlq.bad_subject");

    // Terminated: nothing pending, nothing redelivered later.
    wait_for_settled(&r.bus).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(r.stats.received.load(Ordering::Relaxed), 3);
    assert_eq!(r.stats.rejected_total(), 3);
    assert!(documents(&r.bus).await.is_empty());
    r.stop().await;
}

#[tokio::test]
async fn telemetry_is_acked_only_after_the_curriculum_write() {
    let server = NatsServer::start();
    let r = start(&server, 120).await;
    // The curriculum stream is gone: the document cannot be stored.
    r.bus
        .js()
        .delete_stream(contract::STREAM_CURRICULUM)
        .await
        .unwrap();
    let ts = now_ms();
    publish(
        &r.bus,
        "os.chronicle.vault",
        format!(r#"{{"ts":{ts},"actor":"ops","action":"rotate","target":"key","outcome":"ok"}}"#),
    )
    .await;
    wait_for("a failed publish", || {
        r.stats.failed.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert_eq!(r.stats.harvested.load(Ordering::Relaxed), 0);
    let (pending, ack_pending) = consumer_state(&r.bus).await;
    assert_eq!(
        pending + ack_pending as u64,
        1,
        "the telemetry message is still owed"
    );

    // The stream comes back: the message is redelivered and harvested.
    r.bus.ensure().await.unwrap();
    wait_for("the redelivery", || {
        r.stats.harvested.load(Ordering::Relaxed) == 1
    })
    .await;
    let docs = documents(&r.bus).await;
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].ts, ts);
    wait_for_settled(&r.bus).await;
    r.stop().await;
}

#[tokio::test]
async fn a_chatty_source_is_sampled_and_a_quiet_one_is_not() {
    let server = NatsServer::start();
    let r = start(&server, 20).await;
    // All in one minute of event time.
    let ts = (now_ms() / 60_000) * 60_000 + 1;
    let mut acks = Vec::new();
    for i in 0..200 {
        let p = format!(r#"{{"ts":{},"message":"request {i} served"}}"#, ts + i);
        acks.push(r.bus.js().publish("os.log.chatty", p.into()).await.unwrap());
        if i % 40 == 0 {
            let p = format!(r#"{{"ts":{},"message":"quiet {i}"}}"#, ts + i);
            acks.push(r.bus.js().publish("os.log.quiet", p.into()).await.unwrap());
        }
    }
    for a in acks {
        a.await.unwrap();
    }
    wait_for("all 205 looked at", || {
        r.stats.harvested.load(Ordering::Relaxed) + r.stats.sampled_out.load(Ordering::Relaxed)
            == 205
    })
    .await;
    let docs = documents(&r.bus).await;
    let chatty = docs.iter().filter(|d| d.source == "chatty").count();
    let quiet = docs.iter().filter(|d| d.source == "quiet").count();
    assert_eq!(chatty, 20, "the budget");
    assert_eq!(quiet, 5, "every quiet event");
    assert_eq!(r.stats.sampled_out.load(Ordering::Relaxed), 180);
    wait_for_settled(&r.bus).await;

    // The next minute opens a new budget.
    publish(
        &r.bus,
        "os.log.chatty",
        format!(r#"{{"ts":{},"message":"next minute"}}"#, ts + 60_000),
    )
    .await;
    wait_for("the next minute", || {
        r.stats.harvested.load(Ordering::Relaxed) == 26
    })
    .await;
    r.stop().await;
}

/// Publishes one pulse of `api` per value, a millisecond apart from `ts`,
/// and waits until the harvester has looked at every one.
async fn publish_pulses(r: &Running, ts: i64, values: &[f64]) {
    for (i, cpu) in values.iter().enumerate() {
        publish(
            &r.bus,
            "os.pulse.api",
            hand_msgpack_pulse(ts + i as i64, *cpu),
        )
        .await;
    }
    wait_for("every pulse looked at", || {
        r.stats.harvested.load(Ordering::Relaxed) + r.stats.collapsed.load(Ordering::Relaxed)
            == values.len() as u64
    })
    .await;
}

/// With `render.metric_format = "scaled"` the harvester reads each pulse
/// against its series' own level: a steady series reads `cpu=0` (and its
/// repeats collapse), a jump reads as how far it went, and the series'
/// usual afterwards reads `cpu=0` again.
#[tokio::test]
async fn scaled_pulses_read_against_their_own_series() {
    use proprio::curriculum::{MetricFormat, RenderConfig};
    let server = NatsServer::start();
    let render = RenderConfig {
        metric_format: MetricFormat::Scaled,
        ..RenderConfig::default()
    };
    let r = start_rendering(&server, 120, render).await;
    let ts = now_ms();
    // Eight steady values, a jump (0.9 against 0.5: 40 spreads), the same
    // again, then the usual.
    let values: Vec<f64> = [0.5; 8].iter().chain(&[0.9, 0.9, 0.5]).copied().collect();
    publish_pulses(&r, ts, &values).await;
    assert_eq!(r.stats.collapsed.load(Ordering::Relaxed), 8);
    let docs = documents(&r.bus).await;
    let words: Vec<&str> = docs
        .iter()
        .map(|d| {
            d.text
                .split("cpu=")
                .nth(1)
                .unwrap_or("")
                .split('<')
                .next()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(words, ["0", "+5", "0"], "usual, the jump, usual again");
    r.stop().await;
}

#[tokio::test]
async fn identical_consecutive_heartbeats_collapse() {
    use proprio::curriculum::{MetricFormat, RenderConfig};
    let server = NatsServer::start();
    // Buckets: each value its own line. (Scaled, a series too new to know
    // reads 0, so all six would collapse into one.)
    let buckets = RenderConfig {
        metric_format: MetricFormat::Buckets,
        ..RenderConfig::default()
    };
    let r = start_rendering(&server, 120, buckets).await;
    publish_pulses(&r, now_ms(), &[0.5, 0.5, 0.5, 0.9, 0.9, 0.5]).await;
    assert_eq!(r.stats.collapsed.load(Ordering::Relaxed), 3);
    assert_eq!(documents(&r.bus).await.len(), 3, "0.5, 0.9, 0.5");
    r.stop().await;
}

#[tokio::test]
async fn the_harvester_resumes_where_it_left_off() {
    let server = NatsServer::start();
    let r = start(&server, 120).await;
    let bus = r.bus.clone();
    r.stop().await;
    // Published while no harvester runs.
    let ts = now_ms();
    for i in 0..3 {
        publish(
            &bus,
            "os.trace.orchestrator",
            format!(
                r#"{{"ts":{},"phase":"plan","request":"r{i}","summary":"delegate to coder"}}"#,
                ts + i
            ),
        )
        .await;
    }
    let r = start(&server, 120).await;
    wait_for("the backlog", || {
        r.stats.harvested.load(Ordering::Relaxed) == 3
    })
    .await;
    assert!(documents(&r.bus)
        .await
        .iter()
        .all(|d| d.curriculum == Curriculum::Reasoning));
    r.stop().await;
}

#[tokio::test]
async fn the_harvester_rides_out_a_server_restart() {
    let server = NatsServer::start();
    let r = start(&server, 120).await;
    publish(
        &r.bus,
        "os.log.svc",
        format!(r#"{{"ts":{},"message":"before"}}"#, now_ms()),
    )
    .await;
    wait_for("before", || r.stats.harvested.load(Ordering::Relaxed) == 1).await;
    let (store, port) = server.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = NatsServer::start_in(store, Some(port), &[]);
    let t0 = Instant::now();
    loop {
        let p = format!(r#"{{"ts":{},"message":"after"}}"#, now_ms());
        if r.bus.publish_acked("os.log.svc", p, None).await.is_ok() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for("after", || r.stats.harvested.load(Ordering::Relaxed) == 2).await;
    r.stop().await;
    drop(server);
}
