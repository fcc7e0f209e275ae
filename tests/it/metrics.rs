//! The metrics endpoint of a real `proprio run` on a real nats-server:
//! /healthz, /readyz, and /metrics moving as telemetry flows, a model is
//! trained and an alert is raised; names follow Prometheus conventions.

use crate::support::proc::now_ms;
use crate::support::{self, proc};

use proc::{http_get as get, samples};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::NatsServer;

struct Proprio(Child);

impl Drop for Proprio {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (code, body) = get(addr, "/metrics");
    assert_eq!(code, 200);
    samples(&body)
}

fn value(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

async fn wait_metric(addr: &str, key: &str, min: f64, secs: u64) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let m = scrape(addr);
        if value(&m, key) >= min {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{key} stayed below {min}: {}",
            value(&m, key)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_during_a_run() {
    let nats = NatsServer::start();
    let addr = format!("127.0.0.1:{}", support::free_port());
    let registry = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/services.yaml");
    let child = Command::new(support::proprio_bin())
        .args([
            "--metrics-addr",
            &addr,
            "run",
            "--nats",
            &nats.url,
            "--registry",
            registry,
        ])
        .args([
            "--cold-steps",
            "80",
            "--cooldown",
            "0",
            "--digest-debounce",
            "1s",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _p = Proprio(child);

    // Health, then readiness once the roles run.
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(&addr, "/readyz").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready: {:?}",
            get(&addr, "/readyz")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&addr, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(&addr, "/nope").0, 404);

    let before = scrape(&addr);
    assert_eq!(
        value(
            &before,
            r#"proprio_events_received_total{role="harvester"}"#
        ),
        0.0
    );
    assert!(
        before.keys().any(|k| k.starts_with("proprio_build_info{")),
        "{before:?}"
    );

    // Telemetry flows in: received and harvested move, by curriculum.
    let client = async_nats::connect(&nats.url).await.unwrap();
    proc::publish_all(
        &async_nats::jetstream::new(client.clone()),
        proc::normal(4, 30, now_ms() - 60_000),
        64,
    )
    .await;
    client
        .publish("os.pulse.svc9", "not an event".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    // Received and harvested move independently (the harvester counts an
    // event as received before it settles it), so wait for each.
    wait_metric(
        &addr,
        r#"proprio_events_received_total{role="harvester"}"#,
        361.0,
        30,
    )
    .await;
    let m = wait_metric(&addr, "proprio_events_harvested_total", 200.0, 30).await;
    assert!(
        value(
            &m,
            r#"proprio_curriculum_documents_total{curriculum="temporal"}"#
        ) > 0.0
    );
    assert!(
        value(
            &m,
            r#"proprio_curriculum_documents_total{curriculum="nervous"}"#
        ) > 0.0
    );
    let m = wait_metric(
        &addr,
        r#"proprio_events_rejected_total{reason="decode"}"#,
        1.0,
        10,
    )
    .await;
    assert!(
        value(&m, r#"proprio_events_unscored_total{reason="warming"}"#) > 0.0,
        "no model yet"
    );

    // A growth cycle: cycles, step durations, training loss, the model.
    client
        .publish("proprio.tick.train", "{}".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let m = wait_metric(
        &addr,
        r#"proprio_growth_cycles_total{outcome="ok"}"#,
        1.0,
        120,
    )
    .await;
    for step in [
        "harvest",
        "load_previous",
        "validate",
        "train",
        "evaluate",
        "publish",
    ] {
        let k = format!(r#"proprio_growth_step_duration_seconds_count{{step="{step}"}}"#);
        assert!(value(&m, &k) >= 1.0, "{k}");
    }
    assert!(value(&m, r#"proprio_training_loss{split="train"}"#) > 0.0);
    assert!(value(&m, r#"proprio_training_loss{split="validation"}"#) > 0.0);
    assert!(value(&m, "proprio_model_trained_timestamp_seconds") > 1.0e9);
    assert!(m
        .keys()
        .any(|k| k.starts_with("proprio_model_info{version=")));
    wait_metric(&addr, "proprio_model_swaps_total", 1.0, 30).await;

    // Scoring and an alert: loss and score histograms, scoring time, batch size.
    let oom = format!(
        r#"{{"ts":{},"level":"fatal","message":"Memory cgroup out of memory: OOMKilled process 4242 (python3)"}}"#,
        now_ms()
    );
    client.publish("os.log.svc2", oom.into()).await.unwrap();
    client.flush().await.unwrap();
    let m = wait_metric(
        &addr,
        r#"proprio_alerts_published_total{reason="surprise"}"#,
        1.0,
        30,
    )
    .await;
    assert!(value(&m, "proprio_events_scored_total") >= 1.0);
    assert!(value(&m, r#"proprio_event_loss_count{kind="log"}"#) >= 1.0);
    assert!(value(&m, r#"proprio_event_score_count{kind="log"}"#) >= 1.0);
    assert!(value(&m, "proprio_scoring_duration_seconds_count") >= 1.0);
    assert!(value(&m, "proprio_scoring_batch_size_count") >= 1.0);
    // The incidents role runs in `proprio run` by default: the alert opened one.
    let m = wait_metric(&addr, r#"proprio_incidents_total{event="opened"}"#, 1.0, 30).await;
    assert!(value(&m, "proprio_incidents_open") >= 1.0);
    assert!(value(&m, r#"proprio_incident_alerts_total{outcome="opened"}"#) >= 1.0);
    assert!(
        value(&m, "proprio_incident_topology_edges") > 100.0,
        "the registry's edges"
    );
    // Consumer lag is polled from the server (every 5 s).
    let lag = r#"proprio_consumer_pending_messages{consumer="proprio-scorer"}"#;
    let deadline = Instant::now() + Duration::from_secs(12);
    while !scrape(&addr).contains_key(lag) {
        assert!(Instant::now() < deadline, "no {lag}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Conventions: counters end in _total, durations in seconds, and no
    // label carries a source name.
    let (_, text) = get(&addr, "/metrics");
    for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut w = l.split_whitespace().skip(2);
        let (name, ty) = (w.next().unwrap(), w.next().unwrap());
        assert!(name.starts_with("proprio_"), "{name}");
        if ty == "counter" {
            assert!(name.ends_with("_total"), "{name}");
        }
        if name.contains("duration") {
            assert!(name.ends_with("_seconds"), "{name}");
        }
    }
    for k in samples(&text).keys() {
        assert!(!k.contains("source=") && !k.contains("svc"), "{k}");
    }
}
