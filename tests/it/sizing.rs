//! The measurements behind the README's sizing guide (`make sizing`; not
//! part of `make test`): a nats-server and `proprio run` processes, one role
//! each, draining a backlog of the load test's telemetry (203 sources, a
//! pulse, a log line and a heartbeat each round). Printed per role:
//! events per CPU-second (the process's user + system time, so "events/s
//! per core"), wall time, and the memory a thousand more keys take.
//!
//! PROPRIO_SIZING_EVENTS sets the backlog (default 200,000).

use crate::load::{normal_event, rss_mb};
use crate::support::{self, proc};
use proc::{now_ms, publish_all, Proprio};
use proprio::contract::{CONSUMER_HARVESTER, CONSUMER_SCORER, SUBJECT_TICK_TRAIN};
use std::time::Duration;
use support::NatsServer;

/// CPU seconds (user + system) a process has used.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are
    // the 12th and 13th of them, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// `n` normal events from `first` on, as JetStream messages with ids.
fn backlog(first: u64, n: u64, tag: &str) -> Vec<(String, Vec<u8>, String)> {
    let ts = now_ms();
    (first..first + n)
        .map(|i| {
            let (s, b) = normal_event(i, ts);
            (s, b.into_bytes(), format!("{tag}-{i}"))
        })
        .collect()
}

/// Log lines from `keys` sources never seen before (three each), so each
/// is a new key for the role.
fn new_keys(from: usize, keys: usize) -> Vec<(String, Vec<u8>, String)> {
    let ts = now_ms();
    (0..keys * 3)
        .map(|k| {
            let s = from + k % keys;
            (
                format!("os.log.key{s:06}"),
                format!(
                    r#"{{"ts":{},"level":"info","message":"GET /health 200 in 3ms"}}"#,
                    ts + k as i64
                )
                .into_bytes(),
                format!("key-{s}-{k}"),
            )
        })
        .collect()
}

struct Drain {
    events: f64,
    scored: f64,
    wall: Duration,
    cpu: f64,
}

/// Starts `args` on a backlog already in the stream and waits until its
/// consumer has settled it; what it took, start-up included (small beside
/// the backlog).
async fn drain(url: &str, args: &[&str], consumer: &str, role: &str) -> (Proprio, Drain) {
    let t0 = std::time::Instant::now();
    let p = Proprio::start(url, args);
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    proc::wait_settled(&js, &[consumer], 1800).await;
    let wall = t0.elapsed();
    let events = p.metric(&format!(
        r#"proprio_events_received_total{{role="{role}"}}"#
    ));
    let scored = p.metric("proprio_events_scored_total");
    let cpu = cpu_s(p.pid().unwrap());
    (
        p,
        Drain {
            events,
            scored,
            wall,
            cpu,
        },
    )
}

/// RSS growth (MB) per 1,000 new keys: after 1,000 keys and after 10,000
/// more, each settled. Keys from `from` on, never seen by any role.
async fn mb_per_1000_keys(
    p: &Proprio,
    js: &async_nats::jetstream::Context,
    consumer: &str,
    from: usize,
) -> f64 {
    let pid = p.pid().unwrap();
    publish_all(js, new_keys(from, 1000), 1000).await;
    proc::wait_settled(js, &[consumer], 600).await;
    let before = rss_mb(pid);
    publish_all(js, new_keys(from + 1000, 10_000), 1000).await;
    proc::wait_settled(js, &[consumer], 600).await;
    let after = rss_mb(pid);
    println!(
        "sizing: {consumer}: RSS {before:.1} MB after 1,000 new keys, {after:.1} MB after 11,000"
    );
    (after - before) / 10.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, several minutes: make sizing"]
async fn sizing() {
    let n: u64 = std::env::var("PROPRIO_SIZING_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let nats = NatsServer::start();
    let bus = nats.bus().await;
    bus.ensure().await.unwrap();
    let js = bus.js().clone();

    // A first model, as the scorer would have it.
    let trainer = Proprio::start(&nats.url, &proc::roles_args("harvester,trainer", &[]));
    publish_all(&js, backlog(0, 30 * 3 * 203, "warm"), 1000).await;
    proc::wait_settled(&js, &[CONSUMER_HARVESTER], 120).await;
    bus.client()
        .publish(SUBJECT_TICK_TRAIN, "{}".into())
        .await
        .unwrap();
    trainer
        .wait_metric(r#"proprio_growth_cycles_total{outcome="ok"}"#, 1.0, 300)
        .await;
    drop(trainer);

    publish_all(&js, backlog(1_000_000, n, "load"), 1000).await;
    let registry = proc::registry();
    let (h, harvest) = drain(
        &nats.url,
        &["--roles", "harvester", "--registry", registry],
        CONSUMER_HARVESTER,
        "harvester",
    )
    .await;
    let h_mem = mb_per_1000_keys(&h, &js, CONSUMER_HARVESTER, 0).await;
    drop(h);
    // One model thread: events per core. No shedding: the backlog is the
    // point. The consumer is new, so it reads the stream from its start
    // (the warm-up and the harvester's new keys too).
    let (s, score) = drain(
        &nats.url,
        &["--roles", "scorer", "--threads", "1", "--max-lag", "0"],
        CONSUMER_SCORER,
        "scorer",
    )
    .await;
    let s_mem = mb_per_1000_keys(&s, &js, CONSUMER_SCORER, 100_000).await;

    println!("sizing: role | events | wall s | CPU s | events per CPU-second | MB per 1,000 keys");
    for (role, d, mem) in [("harvester", &harvest, h_mem), ("scorer", &score, s_mem)] {
        println!(
            "sizing: {role} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1}",
            d.events,
            d.wall.as_secs_f64(),
            d.cpu,
            d.events / d.cpu.max(0.01),
            mem
        );
    }
    println!(
        "sizing: the scorer scored {:.0} of the {:.0} events it received (the rest are repeated pulses, acked unscored)",
        score.scored, score.events
    );
    let t = proc::telemetry_state(&js).await;
    println!(
        "sizing: the telemetry stream holds {} events in {} bytes, {:.0} bytes each",
        t.messages,
        t.bytes,
        t.bytes as f64 / t.messages.max(1) as f64
    );
    assert!(harvest.events >= n as f64 && score.events >= n as f64);
    assert!(h_mem.is_finite() && s_mem.is_finite());
}
