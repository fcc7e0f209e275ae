//! Crash safety with real processes: a trainer killed mid-cycle, corrupt and
//! truncated checkpoints in the object store, a scorer replica killed under
//! load.
//!
//! `cargo test --release --test it crash_safety:: -- --nocapture --test-threads=1`

use crate::support::{self, proc};

use async_nats::jetstream;
use proc::{normal, now_ms, publish_all, registry, wait_settled, Proprio};
use proprio::bus::{Bus, BusConfig};
use proprio::contract::{ModelNotice, CONSUMER_HARVESTER, CONSUMER_SCORER, KEY_TRAINER_LOCK};
use proprio::model::checkpoint::Checkpoint;
use proprio::model_store;
use std::time::{Duration, Instant};
use support::NatsServer;

const CYCLES_OK: &str = r#"proprio_growth_cycles_total{outcome="ok"}"#;

async fn connect(url: &str) -> (Bus, jetstream::Context, async_nats::Client) {
    let bus = Bus::connect(&BusConfig::with_url(url)).await.unwrap();
    let client = bus.client().clone();
    (bus.clone(), bus.js().clone(), client)
}

async fn tick(client: &async_nats::Client) {
    client
        .publish(proprio::contract::SUBJECT_TICK_TRAIN, "{}".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
}

async fn notice(bus: &Bus) -> ModelNotice {
    model_store::current(bus)
        .await
        .unwrap()
        .expect("a model in KV")
}

/// The trainer lock as (holder, until_ms), if held.
async fn lock(bus: &Bus) -> Option<(String, i64)> {
    let v = bus.get(KEY_TRAINER_LOCK).await.ok()??;
    let j: serde_json::Value = serde_json::from_slice(&v).ok()?;
    let holder = j["holder"].as_str()?.to_string();
    let until = j["until_ms"].as_i64()?;
    (!holder.is_empty() && until > now_ms()).then_some((holder, until))
}

fn trainer_args(incremental_steps: &str) -> Vec<&str> {
    proc::roles_args("trainer", &["--incremental-steps", incremental_steps])
}

fn model_version(p: &Proprio) -> Option<String> {
    p.metrics()
        .keys()
        .find_map(|k| k.strip_prefix("proprio_model_info{version=\""))
        .map(|v| v.trim_end_matches("\"}").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trainer_killed_mid_cycle_leaves_the_model_and_the_next_tick_trains() {
    let nats = NatsServer::start();
    let (bus, js, client) = connect(&nats.url).await;
    let workers = Proprio::start(
        &nats.url,
        &["--roles", "harvester,scorer", "--registry", registry()],
    );
    let trainer = Proprio::start(&nats.url, &trainer_args("30"));
    publish_all(&js, normal(6, 30, now_ms() - 120_000), 512).await;
    wait_settled(&js, &[CONSUMER_HARVESTER], 60).await;
    tick(&client).await;
    trainer.wait_metric(CYCLES_OK, 1.0, 120).await;
    workers
        .wait_metric("proprio_model_swaps_total", 1.0, 30)
        .await;
    let v1 = notice(&bus).await;
    assert_eq!(
        model_version(&workers).as_deref(),
        Some(v1.version.as_str())
    );

    // A cycle that takes minutes, killed once it holds the lock and trains.
    drop(trainer);
    let mut slow = Proprio::start(&nats.url, &trainer_args("1000000"));
    tick(&client).await;
    let t0 = Instant::now();
    let held = loop {
        if let Some(l) = lock(&bus).await {
            break l;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the slow cycle never took the lock"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Past HARVEST and VALIDATE, into a TRAIN of a million steps.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(slow.alive());
    slow.kill9();
    let killed = Instant::now();
    let left = held.1 - now_ms();
    println!(
        "trainer {} killed mid-cycle ({:.1}s in), its lease had {:.1}s left",
        held.0,
        t0.elapsed().as_secs_f64(),
        left as f64 / 1000.0
    );

    // The previous model stays in KV and in service; scoring goes on.
    assert_eq!(notice(&bus).await, v1);
    assert_eq!(
        model_version(&workers).as_deref(),
        Some(v1.version.as_str())
    );
    let scored = workers.metric("proprio_events_scored_total");
    let more = normal(6, 2, now_ms() - 5_000)
        .into_iter()
        .map(|(s, p, id)| (s, p, format!("after-kill-{id}")));
    publish_all(&js, more, 512).await;
    // 36 events; the pulses repeating their key's last one (at most 12) are
    // left unscored, as the curriculum leaves them out (curriculum::Repeats).
    workers
        .wait_metric("proprio_events_scored_total", scored + 24.0, 30)
        .await;

    // A new trainer: ticks every 2 s until one trains. The dead holder's
    // lease must run out (it is renewed only while its cycle runs).
    let trainer = Proprio::start(&nats.url, &trainer_args("30"));
    let mut ticks = 0;
    while trainer.metric(CYCLES_OK) < 1.0 {
        assert!(
            killed.elapsed() < Duration::from_secs(120),
            "training wedged after the kill:\n{}",
            trainer.log_tail(20)
        );
        tick(&client).await;
        ticks += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let v2 = notice(&bus).await;
    let skipped = trainer.metric(r#"proprio_growth_cycles_total{outcome="skipped"}"#);
    println!(
        "next growth cycle done {:.1}s after the kill ({ticks} ticks, {skipped} skipped while the dead lease ran out): {} -> {} (cold start: {})",
        killed.elapsed().as_secs_f64(),
        v1.version,
        v2.version,
        v2.cold_start
    );
    assert_ne!(v2.version, v1.version);
    assert!(!v2.cold_start, "incremental from the model left in service");
    // Renewed leases are short: a dead trainer blocks for one lease at most.
    assert!(left <= 31_000, "lease {left} ms");
    workers
        .wait_metric("proprio_model_swaps_total", 2.0, 30)
        .await;
    assert_eq!(
        model_version(&workers).as_deref(),
        Some(v2.version.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_truncated_checkpoints_are_refused_and_the_trainer_cold_starts() {
    let nats = NatsServer::start();
    let (bus, js, client) = connect(&nats.url).await;
    let p = Proprio::start(
        &nats.url,
        &proc::roles_args("harvester,scorer,trainer", &["--incremental-steps", "30"]),
    );
    publish_all(&js, normal(6, 30, now_ms() - 120_000), 512).await;
    wait_settled(&js, &[CONSUMER_HARVESTER], 60).await;
    tick(&client).await;
    p.wait_metric(CYCLES_OK, 1.0, 120).await;
    let v1 = notice(&bus).await;
    assert!(v1.cold_start);

    // 1. Truncated in the object store: refused, cold start.
    let bytes = model_store::get(&bus, &v1.object).await.unwrap().unwrap();
    let cut = bytes[..bytes.len() / 2].to_vec();
    let e = Checkpoint::from_bytes(&cut)
        .err()
        .expect("a cut checkpoint loads");
    println!(
        "truncated checkpoint ({} of {} bytes): {e:#}",
        cut.len(),
        bytes.len()
    );
    model_store::put(&bus, &v1.object, &cut).await.unwrap();
    tick(&client).await;
    p.wait_metric(CYCLES_OK, 2.0, 120).await;
    let v2 = notice(&bus).await;
    assert!(v2.cold_start, "trained on a truncated checkpoint");
    assert_ne!(v2.version, v1.version);

    // 2. One byte altered: refused by the hash, by the trainer and by a
    // scorer that starts meanwhile (it waits, warming, for a good model).
    let mut bytes = model_store::get(&bus, &v2.object).await.unwrap().unwrap();
    let mid = bytes.len() * 3 / 4;
    bytes[mid] ^= 0x40;
    let e = Checkpoint::from_bytes(&bytes)
        .err()
        .expect("a corrupt checkpoint loads");
    assert!(format!("{e:#}").contains("hash"), "{e:#}");
    println!("corrupt checkpoint (byte {mid} flipped): {e:#}");
    model_store::put(&bus, &v2.object, &bytes).await.unwrap();
    let scorer = Proprio::start(&nats.url, &["--roles", "scorer"]);
    assert!(
        scorer.log_text().contains("could not be loaded"),
        "{}",
        scorer.log_tail(10)
    );
    assert_eq!(scorer.metric("proprio_model_swaps_total"), 0.0);
    assert_eq!(model_version(&scorer), None);
    tick(&client).await;
    p.wait_metric(CYCLES_OK, 3.0, 120).await;
    let v3 = notice(&bus).await;
    assert!(v3.cold_start, "trained on a corrupt checkpoint");
    let refusals = p.log_text().matches("previous model refused").count();
    println!(
        "models: {} (cold) -> truncated -> {} (cold) -> corrupted -> {} (cold); trainer refusals logged: {refusals}",
        v1.version, v2.version, v3.version
    );
    assert_eq!(refusals, 2);
    // The waiting scorer takes the good model.
    scorer
        .wait_metric("proprio_model_swaps_total", 1.0, 30)
        .await;
    assert_eq!(model_version(&scorer).as_deref(), Some(v3.version.as_str()));
    assert_eq!(
        p.metric(r#"proprio_growth_cycles_total{outcome="failed"}"#),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scorer_replica_killed_under_load_leaves_its_share_to_the_other() {
    let n: usize = std::env::var("PROPRIO_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let nats = NatsServer::start();
    let (_bus, js, client) = connect(&nats.url).await;
    let base = Proprio::start(&nats.url, &proc::roles_args("harvester,trainer", &[]));
    let mut a = Proprio::start(&nats.url, &["--roles", "scorer", "--cooldown", "0"]);
    let b = Proprio::start(&nats.url, &["--roles", "scorer", "--cooldown", "0"]);
    publish_all(&js, normal(6, 30, now_ms() - 120_000), 512).await;
    wait_settled(&js, &[CONSUMER_HARVESTER], 60).await;
    tick(&client).await;
    base.wait_metric(CYCLES_OK, 1.0, 120).await;
    a.wait_metric("proprio_model_swaps_total", 1.0, 30).await;
    b.wait_metric("proprio_model_swaps_total", 1.0, 30).await;
    wait_settled(&js, &[CONSUMER_SCORER], 60).await;

    // Server advisories: a message given up on after too many deliveries
    // would be skipped silently; there must be none.
    let mut gave_up = client
        .subscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>")
        .await
        .unwrap();

    let (a0, b0) = (
        a.metric("proprio_events_scored_total"),
        b.metric("proprio_events_scored_total"),
    );
    let t0 = Instant::now();
    let msgs: Vec<_> = (0..n)
        .map(|k| {
            let (s, i) = (k % 50, k / 50);
            let ts = now_ms() - 300_000 + i as i64 * 500 + s as i64;
            (
                format!("os.log.r{s}"),
                format!(
                    r#"{{"ts":{ts},"level":"info","message":"GET /health 200 in {}ms"}}"#,
                    3 + k % 4
                )
                .into_bytes(),
                format!("r-{k}"),
            )
        })
        .collect();
    let js2 = js.clone();
    let publisher = tokio::spawn(async move { publish_all(&js2, msgs, 1000).await });
    // Kill A once both replicas have scored part of the burst.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (a_kill, b_kill) = loop {
        let (x, y) = (
            a.metric("proprio_events_scored_total") - a0,
            b.metric("proprio_events_scored_total") - b0,
        );
        if x >= (n / 10) as f64 && y >= (n / 10) as f64 {
            break (x, y);
        }
        assert!(Instant::now() < deadline, "replicas not sharing: {x} {y}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let in_flight = proc::consumer_state(&js, CONSUMER_SCORER).await;
    a.kill9();
    let killed_at = t0.elapsed();
    publisher.await.unwrap();
    // A's fetched, unacked messages come back to B after the ack wait (30 s).
    let settle = wait_settled(&js, &[CONSUMER_SCORER], 170).await;
    let b_total = b.metric("proprio_events_scored_total") - b0;
    let mut skipped = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), {
        use futures::StreamExt;
        gave_up.next()
    })
    .await
    {
        skipped += 1;
    }
    let info = {
        let mut c: jetstream::consumer::PullConsumer = js
            .get_consumer_from_stream(CONSUMER_SCORER, proprio::contract::STREAM_TELEMETRY)
            .await
            .unwrap();
        c.info().await.unwrap().clone()
    };
    let last = proc::telemetry_state(&js).await.last_sequence;
    println!(
        "scorer replicas: A scored {a_kill} and B {b_kill} of {n} when A was killed at {:.1}s \
         (pending, ack pending) {in_flight:?}; B scored {b_total} in all; settled {:.1}s later; \
         ack floor {} of {last}; given up after max deliveries: {skipped}; scored A+B >= {}",
        killed_at.as_secs_f64(),
        settle.as_secs_f64(),
        info.ack_floor.stream_sequence,
        a_kill + b_total
    );
    assert_eq!(skipped, 0, "messages skipped after too many deliveries");
    assert_eq!(
        info.ack_floor.stream_sequence, last,
        "unacked telemetry left"
    );
    assert!(b_total > b_kill, "B did not take A's share");
    // Every event acked by a scorer with a model was scored; what A scored
    // after its last scrape and acked is the only uncounted part.
    assert!(
        a_kill + b_total >= n as f64 * 0.95,
        "{a_kill} + {b_total} of {n}"
    );
    drop(base);
}

/// A cycle with nothing to evaluate (the registry's documents, no telemetry
/// of this epoch) fails and publishes nothing: no model evaluated on nothing
/// replaces the one in service (issue 14, item 7). Once telemetry arrives,
/// the next tick publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_evaluated_on_nothing_is_not_published() {
    let nats = NatsServer::start();
    let (bus, js, client) = connect(&nats.url).await;
    let trainer = Proprio::start(
        &nats.url,
        &proc::roles_args("harvester,trainer", &["--incremental-steps", "30"]),
    );
    tick(&client).await;
    trainer
        .wait_metric(r#"proprio_growth_cycles_total{outcome="failed"}"#, 1.0, 60)
        .await;
    assert!(model_store::current(&bus).await.unwrap().is_none());
    assert_eq!(trainer.metric(CYCLES_OK), 0.0);

    publish_all(&js, normal(6, 30, now_ms() - 120_000), 512).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    while trainer.metric(CYCLES_OK) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no cycle published after telemetry"
        );
        tick(&client).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let n = notice(&bus).await;
    assert!(n.val_loss.is_finite(), "{n:?}");
}
