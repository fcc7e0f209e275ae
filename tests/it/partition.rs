//! Scorer replicas partitioned by source (`scorer.partitions`), on a real
//! nats-server: every source is scored by exactly one replica at a time,
//! the replicas share the work, and when one is killed the other takes its
//! partitions and scores everything after.

use crate::support::{self, proc};
use proc::{now_ms, publish_all, Proprio};
use proprio::contract::{BUCKET_SCORERS, STREAM_SCORING};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::NatsServer;

const PARTITIONS: u32 = 8;
const SOURCES: usize = 40;

/// Per partition: (events received, held now) of one replica.
fn partitions(p: &Proprio) -> BTreeMap<u32, (f64, bool)> {
    let m = p.metrics();
    (0..PARTITIONS)
        .map(|k| {
            let got = |name: &str| {
                m.get(&format!(r#"{name}{{partition="{k}"}}"#))
                    .copied()
                    .unwrap_or(0.0)
            };
            (
                k,
                (
                    got("proprio_scorer_partition_events_total"),
                    got("proprio_scorer_partition_held") == 1.0,
                ),
            )
        })
        .collect()
}

fn received(p: &Proprio) -> f64 {
    partitions(p).values().map(|v| v.0).sum()
}

fn held(p: &Proprio) -> Vec<u32> {
    partitions(p)
        .into_iter()
        .filter(|(_, v)| v.1)
        .map(|(k, _)| k)
        .collect()
}

/// `rounds` log lines from each of the sources, ids prefixed with `tag`.
fn burst(tag: &str, rounds: usize) -> Vec<(String, Vec<u8>, String)> {
    let t0 = now_ms();
    (0..rounds * SOURCES)
        .map(|k| {
            let (s, i) = (k % SOURCES, k / SOURCES);
            let ts = t0 + i as i64 * 10 + s as i64;
            (
                format!("os.log.p{s:02}"),
                format!(r#"{{"ts":{ts},"level":"info","message":"GET /health 200 in 3ms"}}"#)
                    .into_bytes(),
                format!("{tag}-{k}"),
            )
        })
        .collect()
}

/// Waits until the scoring stream has taken the telemetry through `seq`
/// and every partition's consumer has acknowledged all it was given.
/// A cluster answers 503 ("JetStream system temporarily unavailable")
/// while it elects a leader; such an answer is polled again, not a failure.
async fn scored_through(js: &async_nats::jetstream::Context, seq: u64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let state = scoring_state(js).await;
        if let Ok((left, sourced)) = state {
            if left == 0 && sourced >= seq {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "scoring stream not through {seq}: (unacknowledged, last sequence) = {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// (events pending or unacknowledged over all partitions, the scoring
/// stream's last sequence).
async fn scoring_state(js: &async_nats::jetstream::Context) -> Result<(u64, u64), String> {
    let mut left = 0;
    for k in 0..PARTITIONS {
        let mut c: async_nats::jetstream::consumer::PullConsumer = js
            .get_consumer_from_stream(format!("proprio-scorer-p{k}"), STREAM_SCORING)
            .await
            .map_err(|e| format!("consumer p{k}: {e}"))?;
        let i = c
            .info()
            .await
            .map_err(|e| format!("consumer p{k} info: {e}"))?;
        left += i.num_pending + i.num_ack_pending as u64;
    }
    let mut s = js
        .get_stream(STREAM_SCORING)
        .await
        .map_err(|e| format!("stream: {e}"))?;
    let sourced = s
        .info()
        .await
        .map_err(|e| format!("stream info: {e}"))?
        .state
        .last_sequence;
    Ok((left, sourced))
}

async fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_has_one_replica_and_a_dead_ones_share_moves() {
    let nats = NatsServer::start();
    let bus = nats.bus().await;
    let js = bus.js().clone();
    let args = ["--roles", "scorer", "--partitions", "8"];
    let mut a = Proprio::start(&nats.url, &args);
    let b = Proprio::start(&nats.url, &args);
    until(30, "the partitions split between the replicas", || {
        let (ha, hb) = (held(&a), held(&b));
        ha.len() == 4 && hb.len() == 4 && ha.iter().all(|p| !hb.contains(p))
    })
    .await;

    let first = burst("one", 100);
    let n1 = first.len() as f64;
    publish_all(&js, first, 1000).await;
    until(60, "the first burst received", || {
        received(&a) + received(&b) >= n1
    })
    .await;
    let (pa, pb) = (partitions(&a), partitions(&b));
    for k in 0..PARTITIONS {
        let (x, y) = (pa[&k].0, pb[&k].0);
        assert!(
            (x > 0.0) != (y > 0.0) || x + y == 0.0,
            "partition {k} went to both replicas: {x} and {y}"
        );
    }
    let (ra, rb) = (received(&a), received(&b));
    println!(
        "partitioned scorers: A received {ra}, B {rb} of {n1}; A holds {:?}",
        held(&a)
    );
    assert_eq!(ra + rb, n1, "each event to exactly one replica");
    assert!(ra >= 0.3 * n1 && rb >= 0.3 * n1, "unshared: {ra} {rb}");

    // A dies without leaving: B takes its partitions once A's membership
    // expires and scores every later event.
    let a_held = held(&a);
    a.kill9();
    let t = Instant::now();
    until(40, "B holding every partition", || held(&b).len() == 8).await;
    let took = t.elapsed();
    let before = received(&b);
    let second = burst("two", 50);
    let n2 = second.len() as f64;
    publish_all(&js, second, 1000).await;
    until(60, "the second burst received by B", || {
        received(&b) - before >= n2
    })
    .await;
    let pb2 = partitions(&b);
    for k in &a_held {
        assert!(pb2[k].0 > pb[k].0, "A's partition {k} not taken over");
    }
    println!(
        "partitioned scorers: B took A's partitions {a_held:?} {:.1}s after the kill",
        took.as_secs_f64()
    );

    // Every event of the scoring stream is acknowledged in the end (A's
    // unacknowledged ones come back to B after the ack wait).
    let all = last_telemetry_seq(&js).await;
    scored_through(&js, all, 90).await;
    assert!(js.get_key_value(BUCKET_SCORERS).await.is_ok());
}

#[tokio::test]
async fn a_partition_count_other_than_the_streams_is_refused() {
    let nats = NatsServer::start();
    let bus = nats.bus().await;
    bus.ensure_scoring(8).await.unwrap();
    bus.ensure_scoring(8).await.unwrap();
    let e = bus.ensure_scoring(4).await.unwrap_err().to_string();
    assert!(
        e.contains("partition(8,2)") && e.contains("scorer.partitions is 4"),
        "{e}"
    );
    assert!(bus.ensure_scoring(1).await.is_err());
}

/// The alerts on the alerts stream as (source, telemetry sequence).
async fn alerts(js: &async_nats::jetstream::Context) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    proc::scan(
        js,
        proprio::contract::STREAM_ALERTS,
        proprio::contract::SUBJECT_RAISE_ALL,
        |m| {
            let a = proprio::contract::alert::Alert::decode(&m.payload).unwrap();
            let seq = a.id.rsplit(':').next().unwrap().parse().unwrap();
            out.push((a.source, seq));
        },
    )
    .await;
    out
}

async fn last_telemetry_seq(js: &async_nats::jetstream::Context) -> u64 {
    proc::telemetry_state(js).await.last_sequence
}

/// A first model for the partitioned replicas `a` and `b`: `warm_up`
/// harvested by `base`, one tick, both swapped it in and scored through the
/// warm-up. Returns the warm-up's last telemetry sequence.
async fn first_model(
    bus: &proprio::bus::Bus,
    base: &Proprio,
    (a, b): (&Proprio, &Proprio),
    warm_up: Vec<(String, Vec<u8>, String)>,
) -> u64 {
    let js = bus.js();
    publish_all(js, warm_up, 512).await;
    proc::wait_settled(js, &[proprio::contract::CONSUMER_HARVESTER], 120).await;
    bus.client()
        .publish(proprio::contract::SUBJECT_TICK_TRAIN, "{}".into())
        .await
        .unwrap();
    base.wait_metric(r#"proprio_growth_cycles_total{outcome="ok"}"#, 1.0, 180)
        .await;
    a.wait_metric("proprio_model_swaps_total", 1.0, 30).await;
    b.wait_metric("proprio_model_swaps_total", 1.0, 30).await;
    let warm = last_telemetry_seq(js).await;
    scored_through(js, warm, 120).await;
    warm
}

/// The stretch both set-ups score: normal telemetry of 12 sources, and on
/// four of them an OOM kill (three lines close together, as a kernel logs
/// it), three quarters in.
///
/// Why that late: a kind's live window learns every value until it has a
/// tail of its own (`scorer::calibrate`, so that a shipped tail fitted too
/// low is corrected), and a replica holding fewer sources reaches that
/// later; a fault in a young window is learnt and calms its repeats. With
/// the faults half way through 20 rounds, one full run in four caught 1 of
/// the 4 faults partitioned: an artefact of the windows' youth, not of the
/// partitions, which this test is about.
fn stretch(t0: i64) -> (Vec<(String, Vec<u8>, String)>, Vec<String>) {
    // Ids of their own: the warm-up's would be dropped as duplicates.
    let mut v: Vec<_> = proc::normal(12, 40, t0)
        .into_iter()
        .map(|(s, p, id)| (s, p, format!("stretch-{id}")))
        .collect();
    let faulty: Vec<String> = [1, 4, 7, 10].iter().map(|s| format!("svc{s}")).collect();
    for (k, src) in faulty.iter().enumerate() {
        for line in 0..3 {
            let ts = t0 + 30_000 + k as i64 * 1000 + line;
            v.insert(
                v.len() * 3 / 4 + k * 7,
                (
                    format!("os.log.{src}"),
                    format!(
                        r#"{{"ts":{ts},"level":"error","message":"kernel: Out of memory: Killed process {} (python3) total-vm:8812340kB OOMKilled"}}"#,
                        4000 + k
                    )
                    .into_bytes(),
                    format!("fault-{k}-{line}"),
                ),
            );
        }
    }
    (v, faulty)
}

/// Detection does not depend on the split: two partitioned replicas and
/// one unpartitioned replica score the same stretch with the same model and
/// catch the same faults, with false alerts within 10 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_partitioned_replicas_detect_what_one_replica_does() {
    use proprio::contract::{CONSUMER_SCORER, STREAM_ALERTS};
    let nats = NatsServer::start();
    let bus = nats.bus().await;
    let js = bus.js().clone();
    let base = Proprio::start(&nats.url, &proc::roles_args("harvester,trainer", &[]));
    // Parity is what is tested, at a risk these few minutes of warm-up can
    // carry: the first model's signature count (a few thousand documents,
    // under the 10,000 a floor needs to claim 1e-4) cannot lift an OOM line
    // to the default's level, so only the model's own scores alert, near
    // the level, and the unpartitioned replica (its online tails fed by the
    // warm-up too) fell under it in four runs in a row, after passing three.
    let parts = [
        "--roles",
        "scorer",
        "--cooldown",
        "0s",
        "--partitions",
        "8",
        "--risk",
        "3e-4",
    ];
    let a = Proprio::start(&nats.url, &parts);
    let b = Proprio::start(&nats.url, &parts);
    until(30, "the partitions split", || {
        held(&a).len() == 4 && held(&b).len() == 4
    })
    .await;
    let normal = proc::normal(12, 200, now_ms() - 600_000);
    let warm = first_model(&bus, &base, (&a, &b), normal).await;
    let (a0, b0) = (received(&a), received(&b));
    let (msgs, faulty) = stretch(now_ms() - 60_000);
    publish_all(&js, msgs, 512).await;
    let total = last_telemetry_seq(&js).await;
    scored_through(&js, total, 120).await;
    let (ra, rb) = (received(&a) - a0, received(&b) - b0);
    let stretch_alerts = |v: Vec<(String, u64)>| -> Vec<(String, u64)> {
        v.into_iter().filter(|(_, seq)| *seq > warm).collect()
    };
    let split = stretch_alerts(alerts(&js).await);
    drop((a, b));

    // The same telemetry again through one replica of the shared consumer
    // (from the stream's start), with the alerts stream afresh so its dedup
    // window does not hide the second set-up's alerts.
    js.delete_stream(STREAM_ALERTS).await.unwrap();
    bus.ensure().await.unwrap();
    let one = Proprio::start(
        &nats.url,
        &["--roles", "scorer", "--cooldown", "0s", "--risk", "3e-4"],
    );
    one.wait_metric(
        r#"proprio_events_received_total{role="scorer"}"#,
        total as f64,
        120,
    )
    .await;
    proc::wait_settled(&js, &[CONSUMER_SCORER], 60).await;
    let single = stretch_alerts(alerts(&js).await);

    let caught = |v: &[(String, u64)]| -> Vec<String> {
        faulty
            .iter()
            .filter(|f| v.iter().any(|(s, _)| s == *f))
            .cloned()
            .collect()
    };
    let false_alerts = |v: &[(String, u64)]| v.iter().filter(|(s, _)| !faulty.contains(s)).count();
    let (f1, f2) = (false_alerts(&single), false_alerts(&split));
    println!(
        "partition parity: one replica {} alerts ({f1} false), faults caught {:?}; two partitioned \
         ({ra} and {rb} events of the stretch) {} alerts ({f2} false), faults caught {:?}",
        single.len(),
        caught(&single),
        split.len(),
        caught(&split)
    );
    assert!(!caught(&single).is_empty(), "no fault caught at all");
    assert_eq!(caught(&single), caught(&split), "other faults caught");
    assert!(
        (f1 as f64 - f2 as f64).abs() <= (0.1 * f1.max(f2) as f64).max(1.0),
        "false alerts {f1} vs {f2}"
    );
    assert!(ra > 0.0 && rb > 0.0, "one replica scored nothing");
}

/// `n` seconds of load at 2,000 events/s: normal telemetry of 48 sources
/// and, each second, an OOM kill (three lines) on one of the first 12; the fault
/// lines' (source, ts).
fn load(secs: usize, t0: i64) -> (Vec<Vec<(String, Vec<u8>, String)>>, Vec<(String, i64)>) {
    let mut seconds = Vec::new();
    let mut faults = Vec::new();
    for sec in 0..secs {
        let ts = t0 + sec as i64 * 1000;
        // 1,997 normal events of 48 sources (enough for the partitions to
        // share them evenly), re-stamped.
        let mut v: Vec<_> = proc::normal(48, 14, ts - 14_000)
            .into_iter()
            .take(1997)
            .map(|(s, p, id)| (s, p, format!("load-{sec}-{id}")))
            .collect();
        let src = format!("svc{}", sec % 12);
        for line in 0..3 {
            let t = ts + 500 + line;
            v.insert(
                1000 + line as usize,
                (
                    format!("os.log.{src}"),
                    format!(
                        r#"{{"ts":{t},"level":"error","message":"kernel: Out of memory: Killed process {} (python3) total-vm:8812340kB OOMKilled"}}"#,
                        5000 + sec
                    )
                    .into_bytes(),
                    format!("load-fault-{sec}-{line}"),
                ),
            );
            faults.push((src.clone(), t));
        }
        seconds.push(v);
    }
    (seconds, faults)
}

/// The issue's cluster scenario with partitioned scorers: a three-node
/// cluster (R3), two scorer replicas, 2,000 events/s from an outside
/// publisher; the node leading the telemetry stream is killed, then one
/// replica. No acknowledged event is lost or stored twice, no event alerts
/// twice, the replicas shared the work, and the survivor scores on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_dead_leader_and_a_dead_replica_lose_nothing() {
    use crate::cluster::{eventually, Cluster};
    use proprio::bus::{Bus, BusConfig};
    use proprio::contract::{CONSUMER_HARVESTER, STREAM_TELEMETRY};
    let mut cluster = Cluster::start();
    let urls = cluster.urls();
    let cfg = BusConfig {
        replicas: 3,
        ..BusConfig::with_url(urls.clone())
    };
    let bus = eventually(30, "R3 streams", || async {
        let b = Bus::connect(&cfg).await?;
        b.ensure().await?;
        Ok(b)
    })
    .await;
    let js = bus.js().clone();
    let env = [("PROPRIO_NATS_REPLICAS", "3")];
    let base = Proprio::start_env(&urls, &proc::roles_args("harvester,trainer", &[]), &env);
    let parts = ["--roles", "scorer", "--partitions", "8", "--cooldown", "0s"];
    let mut a = Proprio::start_env(&urls, &parts, &env);
    let b = Proprio::start_env(&urls, &parts, &env);
    until(60, "the partitions split", || {
        held(&a).len() == 4 && held(&b).len() == 4
    })
    .await;
    let warm = first_model(
        &bus,
        &base,
        (&a, &b),
        proc::normal(48, 50, now_ms() - 600_000),
    )
    .await;
    let (a0, b0) = (received(&a), received(&b));

    let secs = 20;
    let (seconds, faults) = load(secs, now_ms() - 30_000);
    let sent: usize = seconds.iter().map(Vec::len).sum();
    let js2 = js.clone();
    let publisher = tokio::spawn(async move {
        let t0 = Instant::now();
        for (k, second) in seconds.into_iter().enumerate() {
            for (j, tenth) in second.chunks(200).enumerate() {
                let at = Duration::from_millis(k as u64 * 1000 + j as u64 * 100);
                tokio::time::sleep_until((t0 + at).into()).await;
                publish_all(&js2, tenth.to_vec(), 200).await;
            }
        }
        t0.elapsed()
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let leader = js
        .get_stream(STREAM_TELEMETRY)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .cluster
        .clone()
        .and_then(|c| c.leader)
        .expect("the telemetry stream has a leader");
    cluster.kill(&leader);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (ra, rb) = (received(&a) - a0, received(&b) - b0);
    a.kill9();
    let took = publisher.await.unwrap();

    // Every acknowledged event is stored once, harvested and scored; A's
    // unacknowledged ones come back to B after the ack wait.
    let stored = eventually(30, "the telemetry stream's state", || async {
        Ok(js
            .get_stream(STREAM_TELEMETRY)
            .await?
            .info()
            .await?
            .state
            .clone())
    })
    .await;
    assert_eq!(stored.messages, warm + sent as u64, "lost or stored twice");
    proc::wait_settled(&js, &[CONSUMER_HARVESTER], 120).await;
    scored_through(&js, stored.last_sequence, 120).await;
    let rb_all = received(&b) - b0;

    let mut per_event: BTreeMap<(String, u64), u32> = BTreeMap::new();
    for (source, seq) in alerts(&js).await {
        *per_event.entry((source, seq)).or_default() += 1;
    }
    let twice = per_event.values().filter(|n| **n > 1).count();
    let fault_sources: std::collections::BTreeSet<&String> = faults.iter().map(|f| &f.0).collect();
    println!(
        "cluster, partitioned scorers: {sent} events in {:.1} s at 2,000/s, leader {leader} killed \
         at 5 s, replica A at 12 s after A {ra} and B {rb} events; all {} stored once; B received \
         {rb_all} of the load in all; {} alerted events ({twice} alerted twice) on {} faulty sources",
        took.as_secs_f64(),
        stored.messages,
        per_event.len(),
        fault_sources.len()
    );
    assert_eq!(twice, 0, "an event alerted twice");
    let (share_a, share_b) = (ra / (ra + rb), rb / (ra + rb));
    assert!(share_a >= 0.3 && share_b >= 0.3, "unshared: {ra} {rb}");
    assert!(rb_all > rb, "B did not take over A's partitions");
    assert!(!per_event.is_empty(), "no fault alerted");
}

/// A partitioned scorer rides out a nats-server restart (same store): it
/// reconnects, takes its partitions again and scores what comes after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_scorer_rides_out_a_server_restart() {
    let nats = NatsServer::start();
    let url = nats.url.clone();
    let a = Proprio::start(&url, &["--roles", "scorer", "--partitions", "8"]);
    until(30, "the partitions held", || held(&a).len() == 8).await;
    let js = nats.bus().await.js().clone();
    publish_all(&js, burst("before", 25), 1000).await;
    scored_through(&js, last_telemetry_seq(&js).await, 60).await;

    let (store, port) = nats.terminate();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let nats = NatsServer::start_in(store, Some(port), &[]);
    let js = nats.bus().await.js().clone();
    let before = received(&a);
    let after = burst("after", 25);
    let n = after.len() as f64;
    publish_all(&js, after, 1000).await;
    scored_through(&js, last_telemetry_seq(&js).await, 90).await;
    let got = received(&a) - before;
    println!("partitioned scorer after a server restart: received {got} of {n}");
    assert!(got >= n, "received {got} of {n} after the restart");
}
