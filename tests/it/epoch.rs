//! A fingerprint change on a real nats-server (issue 14 item 7): the model in
//! service keeps scoring, marked as from the previous epoch in its alerts and
//! in the digest; a tick with too little new-epoch telemetry publishes
//! nothing; once enough is harvested the cold start runs without a tick, and
//! the marks go away.

use crate::support;
use crate::support::proc::now_ms;

use futures::StreamExt;
use proprio::bus::Bus;
use proprio::context::{Context, Role, Shared};
use proprio::contract::alert::Alert;
use proprio::contract::digest::{Digest, DigestState};
use proprio::contract::{EpochNotice, KEY_DIGEST, KEY_DIGEST_JSON, KEY_EPOCH};
use proprio::freshness::Gates;
use proprio::harvester::{Harvester, HarvesterConfig};
use proprio::model_store;
use proprio::scorer::role::{Scorer, ScorerConfig};
use proprio::trainer::cycle::{Trainer, TrainerConfig};
use proprio::trainer::epoch::EpochWait;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::telemetry::{handled, publish_normal, wait_until};
use support::NatsServer;

/// New-epoch telemetry documents the cold start waits for.
const MIN_DOCS: usize = 300;

async fn digest(bus: &Bus) -> (String, Digest) {
    let text = bus.get(KEY_DIGEST).await.unwrap().unwrap();
    let json = bus.get(KEY_DIGEST_JSON).await.unwrap().unwrap();
    (
        String::from_utf8(text.to_vec()).unwrap(),
        Digest::decode(&json).unwrap(),
    )
}

/// Waits until the digest in KV is in `state`.
async fn digest_in(bus: &Bus, state: DigestState) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (text, d) = digest(bus).await;
        if d.state == state {
            return text;
        }
        assert!(Instant::now() < deadline, "digest not {state:?}: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A log line no model has seen: alerts on `source` (alone it needs twice
/// the level, which it reaches). Published again, up to five times, when no
/// alert comes: what is tested is how an alert is marked, and on a loaded
/// machine a young model's lone line can fall short of twice the level, or
/// its alert of 20 s; a second line within the evidence window needs only
/// the level.
async fn oom_alert(client: &async_nats::Client, source: &str) -> Alert {
    let mut sub = client
        .subscribe(format!("proprio.alert.{source}"))
        .await
        .unwrap();
    for attempt in 1..=5 {
        let oom = format!(
            r#"{{"ts":{},"level":"fatal","message":"Memory cgroup out of memory: OOMKilled process 4242 (python3) total-vm:8123456kB"}}"#,
            now_ms()
        );
        client
            .publish(format!("os.log.{source}"), oom.into())
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(20), sub.next()).await {
            Ok(m) => return Alert::decode(&m.unwrap().payload).unwrap(),
            Err(_) => eprintln!("no alert on {source} within 20 s (attempt {attempt})"),
        }
    }
    panic!("no alert on {source} after 5 OOM lines");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fingerprint_change_keeps_the_old_model_marked_until_the_early_cold_start() {
    proprio::model::set_libtorch_threads(1);
    let nats = NatsServer::start();
    let bus = nats.bus().await;
    let client = bus.client().clone();
    let keys = tempfile::tempdir().unwrap();
    let registry = keys.path().join("services.yaml");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/services.yaml");
    std::fs::copy(shipped, &registry).unwrap();
    let gates = Gates {
        key_files: vec![registry.clone()],
        ..Gates::default()
    };
    // What is tested is how alerts are marked, so the risk is one these
    // tiny models alert at: at the default (1e-4) the model cold-started
    // on the new epoch's 800 events raised no alert on three OOM lines
    // (its level is 5.5, too few events for a signature floor); at 3e-4
    // it raised none on five in 2 of 4 full `make test` runs (session 19).
    let ctx = Context::new(
        bus.clone(),
        Shared {
            gates: gates.clone(),
            policy: proprio::policy::Policy {
                risk: 1e-3,
                ..Default::default()
            },
            ..Shared::default()
        },
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let harvester = Harvester::new(
        &ctx,
        HarvesterConfig {
            fingerprint_every: Duration::from_millis(100),
            ..HarvesterConfig::default()
        },
    );
    let h = harvester.stats();
    let scorer = Scorer::new(
        &ctx,
        ScorerConfig {
            cooldown_ms: 0,
            threads: 1,
            ..ScorerConfig::default()
        },
    )
    .await
    .unwrap();
    let s = scorer.stats();
    let trainer = Trainer::new(
        &ctx,
        TrainerConfig {
            registry: registry.clone(),
            cold_steps: 150,
            incremental_steps: 50,
            threads: 1,
            epoch_wait: EpochWait {
                min_docs: MIN_DOCS,
                min_age: Duration::from_secs(1),
            },
            epoch_check: Duration::from_millis(300),
            ..TrainerConfig::default()
        },
    );
    let t = trainer.stats();
    let tasks = [
        tokio::spawn(harvester.run(until_stopped())),
        tokio::spawn(scorer.run(until_stopped())),
        tokio::spawn(trainer.run(until_stopped())),
    ];

    // The first model, trained by a tick and taken by the scorer.
    publish_normal(&client, 6, 40, now_ms() - 60_000).await;
    wait_until("harvest", 30, || handled(&h) >= 6 * 40 * 3).await;
    client
        .publish("proprio.tick.train", "{}".into())
        .await
        .unwrap();
    wait_until("the first cycle", 120, || {
        t.cycles.load(Ordering::Relaxed) >= 1
    })
    .await;
    wait_until("the first swap", 30, || {
        s.swaps.load(Ordering::Relaxed) >= 1
    })
    .await;
    let first = model_store::current(&bus).await.unwrap().unwrap();
    let first_harvest = h.harvested.load(Ordering::Relaxed);
    let fp0 = gates.fingerprint().unwrap();
    assert_eq!(first.fingerprint, fp0);
    let text = digest_in(&bus, DigestState::Trained).await;
    assert!(text.contains("baseline: trained (loss="), "{text}");

    // One port changes in the registry: a new fingerprint epoch, announced
    // by the trainer's check, and the digest says so at once.
    let changed =
        std::fs::read_to_string(&registry)
            .unwrap()
            .replacen("port: 5432", "port: 5433", 1);
    std::fs::write(&registry, changed).unwrap();
    let fp1 = gates.fingerprint().unwrap();
    assert_ne!(fp0, fp1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = bus.get(KEY_EPOCH).await.unwrap();
        let e: Option<EpochNotice> = e.and_then(|b| serde_json::from_slice(&b).ok());
        if e.is_some_and(|e| e.fingerprint == fp1) {
            break;
        }
        assert!(Instant::now() < deadline, "the new epoch is not announced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = digest_in(&bus, DigestState::PreviousEpoch).await;
    println!("{text}");
    assert!(
        text.contains(
            "baseline: previous epoch (topology changed, retraining), 0 anomalies in 24h"
        ),
        "{text}"
    );

    // A little new-epoch telemetry, then a tick: nothing is published.
    // Enough for EVALUATE to hold out an event of every key (so it is the
    // epoch's wait that refuses, not the check against a model evaluated on
    // nothing), short of MIN_DOCS.
    let before = handled(&h);
    publish_normal(&client, 6, 12, now_ms() - 20_000).await;
    wait_until("the little harvest", 30, || {
        handled(&h) >= before + 6 * 12 * 3
    })
    .await;
    let harvested = h.harvested.load(Ordering::Relaxed) - first_harvest;
    assert!(harvested < MIN_DOCS as u64, "{harvested}");
    client
        .publish("proprio.tick.train", "{}".into())
        .await
        .unwrap();
    wait_until("the refused cycle", 60, || {
        t.failed.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert_eq!(t.cycles.load(Ordering::Relaxed), 1);
    let still = model_store::current(&bus).await.unwrap().unwrap();
    assert_eq!(still.version, first.version, "nothing published");
    assert_eq!(s.swaps.load(Ordering::Relaxed), 1);

    // The old model keeps scoring; its alerts say it is of the previous epoch.
    let alert = oom_alert(&client, "svc3").await;
    println!("{}", alert.to_json());
    assert!(alert.previous_epoch, "{}", alert.to_json());
    assert_eq!(alert.model.as_deref(), Some(first.version.as_str()));
    assert!(alert.to_json().contains(r#""previous_epoch":true"#));
    assert_eq!(
        digest(&bus).await.1.state,
        DigestState::PreviousEpoch,
        "still retraining"
    );

    // Enough new-epoch telemetry: the cold start runs with no tick.
    let before = handled(&h);
    publish_normal(&client, 6, 40, now_ms() - 45_000).await;
    wait_until("the new epoch's harvest", 30, || {
        handled(&h) >= before + 6 * 40 * 3
    })
    .await;
    wait_until("the early cold start", 120, || {
        t.cycles.load(Ordering::Relaxed) >= 2
    })
    .await;
    wait_until("the second swap", 30, || {
        s.swaps.load(Ordering::Relaxed) >= 2
    })
    .await;
    let second = model_store::current(&bus).await.unwrap().unwrap();
    assert_ne!(second.version, first.version);
    assert_eq!(second.fingerprint, fp1);
    assert!(second.cold_start);
    assert!(second.val_loss.is_finite(), "{}", second.val_loss);
    let text = digest_in(&bus, DigestState::Trained).await;
    println!("{text}");
    assert!(text.contains("baseline: trained (loss="), "{text}");

    // The marks are gone.
    let alert = oom_alert(&client, "svc2").await;
    println!("{}", alert.to_json());
    assert!(!alert.previous_epoch, "{}", alert.to_json());
    assert_eq!(alert.model.as_deref(), Some(second.version.as_str()));
    assert!(!alert.to_json().contains("previous_epoch"));

    stop.send(true).unwrap();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}
