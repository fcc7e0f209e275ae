//! The living loop end to end on a real nats-server: telemetry published as a
//! service would, harvested, trained on by a tick, scored, alerted, digested.

use crate::support;
use crate::support::proc::now_ms;

use futures::StreamExt;
use proprio::bus::{Bus, BusConfig};
use proprio::config::{Role, RunSection, RunSettings, ScorerSection, TrainerSection};
use proprio::context::{Context, Shared};
use proprio::contract::alert::Alert;
use proprio::contract::{KEY_DIGEST, KEY_DIGEST_JSON, STREAM_ALERTS, SUBJECT_RAISE_ALL};
use proprio::model_store;
use proprio::run::Running;
use proprio::trainer::cycle::{Trainer, TrainerConfig};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::telemetry::{handled, publish_normal, wait_until};
use support::NatsServer;

fn args(url: &str, roles: &[Role]) -> RunSettings {
    let d = RunSettings::default();
    RunSettings {
        bus: BusConfig::with_url(url),
        run: RunSection {
            roles: roles.to_vec(),
            registry: std::path::PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/services.yaml"
            )),
            threads: 1,
            max_payload: 64 * 1024,
            ..d.run
        },
        scorer: ScorerSection {
            cooldown: Duration::from_secs(0),
            ..d.scorer
        },
        trainer: TrainerSection {
            cold_steps: 150,
            incremental_steps: 50,
            digest_debounce: Duration::from_millis(500),
            ..d.trainer
        },
        ..d
    }
}

async fn alerts_stored(bus: &Bus) -> Vec<Alert> {
    bus.read_since(STREAM_ALERTS, SUBJECT_RAISE_ALL, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|(p, _)| Alert::decode(&p).unwrap())
        .collect()
}

/// Starts the roles and trains the first model on normal telemetry.
async fn trained(nats: &NatsServer, roles: &[Role]) -> (Running, Bus, async_nats::Client) {
    let running = proprio::run::start(&args(&nats.url, roles)).await.unwrap();
    let (bus, client) = first_model(nats, &running, &running).await;
    (running, bus, client)
}

/// Publishes normal telemetry, has `learner` (harvester and trainer) train
/// on it, and waits for `scoring`'s scorer to take the model.
async fn first_model(
    nats: &NatsServer,
    learner: &Running,
    scoring: &Running,
) -> (Bus, async_nats::Client) {
    let bus = nats.connect().await;
    let client = bus.client().clone();
    publish_normal(&client, 6, 40, now_ms() - 60_000).await;
    let h = learner.harvester.clone().unwrap();
    wait_until("harvest", 30, || handled(&h) >= 6 * 40 * 3).await;
    tick_until_swap(&client, learner, scoring, 1).await;
    (bus, client)
}

/// Ticks `learner`'s trainer, then waits for its `n`th growth cycle and
/// `scoring`'s `n`th model swap.
async fn tick_until_swap(
    client: &async_nats::Client,
    learner: &Running,
    scoring: &Running,
    n: u64,
) {
    client
        .publish("proprio.tick.train", "{}".into())
        .await
        .unwrap();
    let t = learner.trainer.clone().unwrap();
    wait_until(&format!("growth cycle {n}"), 120, || {
        t.cycles.load(Ordering::Relaxed) >= n
    })
    .await;
    let s = scoring.scorer.clone().unwrap();
    wait_until(&format!("the scorer's swap {n}"), 30, || {
        s.swaps.load(Ordering::Relaxed) >= n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_alert_digest_and_model_switch() {
    let nats = NatsServer::start();
    let (running, bus, client) = trained(
        &nats,
        &[
            Role::Harvester,
            Role::Scorer,
            Role::Trainer,
            Role::Incidents,
        ],
    )
    .await;
    let first = model_store::current(&bus)
        .await
        .unwrap()
        .expect("a model in KV");
    assert!(first.cold_start);

    // The digest is in KV and says the model is trained.
    let text = String::from_utf8(bus.get(KEY_DIGEST).await.unwrap().unwrap().to_vec()).unwrap();
    assert!(
        text.starts_with("[OS BASELINE]") && text.contains("trained"),
        "{text}"
    );
    assert!(bus.get(KEY_DIGEST_JSON).await.unwrap().is_some());

    // An event unlike anything seen: an alert on proprio.alert.<source>, diagnosed.
    let mut sub = client.subscribe("proprio.alert.svc3").await.unwrap();
    let mut digests = client.subscribe("proprio.digest").await.unwrap();
    let t_pub = Instant::now();
    let oom = format!(
        r#"{{"ts":{},"level":"fatal","message":"Memory cgroup out of memory: OOMKilled process 4242 (python3) total-vm:8123456kB"}}"#,
        now_ms()
    );
    client.publish("os.log.svc3", oom.into()).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("an alert within 20 s")
        .unwrap();
    let latency = t_pub.elapsed();
    let alert = Alert::decode(&msg.payload).unwrap();
    println!("alert after {latency:?}: {}", alert.to_json());
    assert_eq!(alert.source, "svc3");
    // Alone, it needs twice the level: one normal event in 10^10.
    assert!(alert.score >= 10.0, "{}", alert.score);
    assert_eq!(alert.diagnosis.as_deref(), Some("OOM killed"));
    assert_eq!(alert.model.as_deref(), Some(first.version.as_str()));

    // The digest follows the alert's incident (debounced) on its subject
    // and in KV, and names it.
    let d = tokio::time::timeout(Duration::from_secs(20), digests.next())
        .await
        .expect("a digest after the alert")
        .unwrap();
    let d = String::from_utf8(d.payload.to_vec()).unwrap();
    println!("{d}");
    assert!(d.contains("1 anomaly in 24h"), "{d}");
    assert!(d.contains("svc3 OOM killed"), "{d}");

    // A second tick trains incrementally and every scorer switches to it.
    tick_until_swap(&client, &running, &running, 2).await;
    let second = model_store::current(&bus).await.unwrap().unwrap();
    assert_ne!(second.version, first.version);
    assert!(!second.cold_start, "same fingerprint: incremental");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trainers_one_cycle() {
    let nats = NatsServer::start();
    let bus = nats.bus().await;
    // Curriculum for the trainers: harvested by a harvester.
    let running = proprio::run::start(&args(&nats.url, &[Role::Harvester]))
        .await
        .unwrap();
    publish_normal(bus.client(), 3, 20, now_ms() - 30_000).await;
    let h = running.harvester.clone().unwrap();
    wait_until("harvest", 30, || handled(&h) >= 3 * 20 * 3).await;
    let cfg = |id: &str| TrainerConfig {
        registry: args(&nats.url, &[]).run.registry,
        cold_steps: 60,
        id: id.into(),
        ..Default::default()
    };
    // The gates the harvester's run was started with (its rendering is in
    // the fingerprint).
    let run = args(&nats.url, &[]);
    let gates = run.learning.gates(&run.run.registry);
    let ctx = Context::new(
        bus.clone(),
        Shared {
            gates,
            ..Shared::default()
        },
    );
    let a = Trainer::new(&ctx, cfg("a"));
    let b = Trainer::new(&ctx, cfg("b"));
    let (ra, rb) = tokio::join!(a.cycle(), b.cycle());
    let ran = [ra.unwrap().is_some(), rb.unwrap().is_some()];
    assert_eq!(ran.iter().filter(|r| **r).count(), 1, "{ran:?}");
    // The lock is released: the next tick trains again.
    assert!(a.cycle().await.unwrap().is_some());
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_does_not_alert_twice_and_mutes_hold_then_expire() {
    let nats = NatsServer::start();
    let (running, bus, client) =
        trained(&nats, &[Role::Harvester, Role::Scorer, Role::Trainer]).await;
    let s = running.scorer.clone().unwrap();

    // Muted: a surprising event is scored but not alerted.
    proprio::cli_ops::set_mute(&bus, "svc2", Duration::from_secs(3), now_ms())
        .await
        .unwrap();
    let weird = |n: u32| {
        format!(
            r#"{{"ts":{},"level":"fatal","message":"kernel panic {n}: unable to mount root fs on unknown-block(0,0) ZZZQQQ"}}"#,
            now_ms()
        )
    };
    client
        .publish("os.log.svc2", weird(1).into())
        .await
        .unwrap();
    wait_until("the muted event", 20, || {
        s.muted.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert_eq!(s.alerts.load(Ordering::Relaxed), 0);

    // The mute expires.
    tokio::time::sleep(Duration::from_secs(3)).await;
    client
        .publish("os.log.svc2", weird(2).into())
        .await
        .unwrap();
    wait_until("an alert after the mute", 20, || {
        s.alerts.load(Ordering::Relaxed) >= 1
    })
    .await;
    running.stop().await.unwrap();
    let before = alerts_stored(&bus).await;
    assert_eq!(before.len(), 1);

    // Every telemetry message is delivered again to a fresh scorer consumer
    // (as after a crash before the acks): the same alerts' ids, stored once.
    let js = bus.js();
    js.get_stream("PROPRIO_TELEMETRY")
        .await
        .unwrap()
        .delete_consumer("proprio-scorer")
        .await
        .unwrap();
    let again = proprio::run::start(&args(&nats.url, &[Role::Scorer]))
        .await
        .unwrap();
    let s2 = again.scorer.clone().unwrap();
    let total = 6 * 40 * 3 + 2;
    // Every one of them is scored, or, a pulse repeating its key's last
    // one, acknowledged unscored as the curriculum leaves it out.
    wait_until("re-scoring everything", 60, || {
        s2.scored.load(Ordering::Relaxed) + s2.collapsed.load(Ordering::Relaxed) >= total as u64
    })
    .await;
    // The mute has expired, so the first weird event now alerts (new), the
    // second is a duplicate of the stored alert.
    // (`scored` counts before the batch's alerts are published: wait for them.)
    wait_until("the duplicate alert", 30, || {
        s2.duplicate_alerts.load(Ordering::Relaxed) >= 1
    })
    .await;
    again.stop().await.unwrap();
    let after = alerts_stored(&bus).await;
    let ids: std::collections::HashSet<_> = after.iter().map(|a| a.id.clone()).collect();
    assert_eq!(ids.len(), after.len(), "no alert stored twice");
}

/// The configured model shape, rendering and training settings reach every
/// role: the harvester renders (and fingerprints) with them, the trainer
/// trains that shape and records the rendering in the checkpoint, and the
/// scorer reads events the way its model was trained to, whatever its own
/// settings. A model of another shape than configured is not continued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_learning_reaches_every_role() {
    use proprio::curriculum::{MetricFormat, RenderConfig};
    use proprio::model::checkpoint::Checkpoint;
    let nats = NatsServer::start();
    let learning = proprio::config::Learning {
        shape: proprio::model::GptConfig {
            n_embd: 16,
            n_head: 2,
            block_size: 96,
            ..Default::default()
        },
        batch_size: 16,
        vocab: proprio::vocab::learn::VocabConfig {
            merges: 64,
            names: 64,
        },
        render: RenderConfig {
            metric_format: MetricFormat::Digits,
            ..RenderConfig::default()
        },
        ..Default::default()
    };
    let mut a = args(&nats.url, &[Role::Harvester, Role::Trainer]);
    a.learning = learning.clone();
    let running = proprio::run::start(&a).await.unwrap();
    // The scorer runs with the built-in settings: it must follow its model.
    let scoring = proprio::run::start(&args(&nats.url, &[Role::Scorer]))
        .await
        .unwrap();
    let (bus, client) = first_model(&nats, &running, &scoring).await;

    let n = model_store::current(&bus).await.unwrap().unwrap();
    let registry = a.run.registry.clone();
    let configured_fp = learning.gates(&registry).fingerprint().unwrap();
    let builtin_fp = proprio::config::Learning::default()
        .gates(&registry)
        .fingerprint()
        .unwrap();
    assert_eq!(
        n.fingerprint, configured_fp,
        "documents harvested under the configured rendering"
    );
    assert_ne!(
        configured_fp, builtin_fp,
        "a configured rendering is part of the fingerprint"
    );
    let ck =
        Checkpoint::from_bytes(&model_store::get(&bus, &n.object).await.unwrap().unwrap()).unwrap();
    // The configured shape, with the vocabulary the cold start learned.
    assert_eq!(
        ck.meta.config,
        proprio::model::GptConfig {
            vocab_size: ck.meta.vocab.len(),
            ..learning.shape
        }
    );
    assert!(ck.meta.vocab.learned().0 > 0, "{:?}", ck.meta.vocab);
    assert_eq!(ck.meta.render, learning.render);

    // A pulse unlike its source's: the alert shows it rendered in digits
    // (the model's settings), not in the scorer's own buckets.
    let mut sub = client.subscribe("proprio.alert.svc2").await.unwrap();
    let weird = format!(
        r#"{{"ts":{},"metrics":{{"cpu":4200,"zzz_unknown_gauge":77,"mem_mb":99000}}}}"#,
        now_ms()
    );
    client.publish("os.pulse.svc2", weird.into()).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("an alert within 20 s")
        .unwrap();
    let alert = Alert::decode(&msg.payload).unwrap();
    println!("{}", alert.rendered);
    assert!(alert.rendered.contains("cpu=4.2k"), "{}", alert.rendered);

    // Another shape configured: the model in service is not continued.
    let shared = Shared {
        gates: learning.gates(&registry),
        render: learning.render.clone(),
        ..Shared::default()
    };
    let other = Trainer::new(
        &Context::new(bus.clone(), shared),
        TrainerConfig {
            registry: registry.clone(),
            cold_steps: 20,
            incremental_steps: 10,
            id: "other-shape".into(),
            ..Default::default()
        },
    );
    let report = other.cycle().await.unwrap().expect("the lock was free");
    assert!(
        report.cold_start,
        "a 32-wide model is not continued from a 16-wide one"
    );
    running.stop().await.unwrap();
    scoring.stop().await.unwrap();
}
