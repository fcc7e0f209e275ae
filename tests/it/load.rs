//! Bounded load on loopback, end to end through real processes: a
//! nats-server, `proprio run` (every role) as a child process, and this test
//! publishing hand-built JSON telemetry (the wire contract, not the crate's
//! types) from 203 sources at a fixed rate, with one OOM-killed log line a
//! second from a different source. It prints what an operator would ask:
//! events published, harvested, scored and shed, lost (must be 0), alerts
//! for the injected events, publish-to-alert latency (p50, p99), consumer
//! lag, and the process's memory in the first and last ten seconds.
//!
//! Rate and duration: PROPRIO_LOAD_RATE (events/s, default 5000) and
//! PROPRIO_LOAD_SECS (default 60). Figures are printed, not asserted: the
//! machine is shared and noisy. Asserted: nothing lost, every event scored or
//! counted as shed, every injected fault alerted once, memory flat.

use crate::support::{self, proc};

use futures::StreamExt;
use proc::{http_get, now_ms, scrape};
use proprio::contract::alert::Alert;
use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{free_port, proprio_bin, NatsServer};

pub(crate) const SOURCES: usize = 203;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sum of every sample of `name` whose labels contain `label` ("" for
/// any).
pub(crate) fn sum(m: &BTreeMap<String, f64>, name: &str, label: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.split('{').next() == Some(name) && k.contains(label))
        .map(|(_, v)| v)
        .sum()
}

pub(crate) fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The `i`-th normal event of the round-robin: a pulse, a log line or a
/// heartbeat of source `i / 3 % SOURCES`, stamped `ts`.
pub(crate) fn normal_event(i: u64, ts: i64) -> (String, String) {
    let s = (i / 3) as usize % SOURCES;
    let round = i / (3 * SOURCES as u64);
    match i % 3 {
        0 => {
            let cpu = 20 + (round * 7 + s as u64 * 3) % 5;
            (
                format!("os.pulse.svc{s:03}"),
                format!(r#"{{"ts":{ts},"metrics":{{"cpu":{cpu},"mem_mb":512,"req_rate":40}}}}"#),
            )
        }
        1 => (
            format!("os.log.svc{s:03}"),
            format!(
                r#"{{"ts":{ts},"level":"info","message":"GET /health 200 in {}ms req-{:x}"}}"#,
                3 + round % 4,
                round * 7919 + s as u64
            ),
        ),
        _ => (
            format!("os.flux.svc{s:03}.heartbeat"),
            format!(r#"{{"ts":{ts},"state":"healthy"}}"#),
        ),
    }
}

fn fault_event(k: u64, ts: i64) -> (String, String) {
    let s = (k as usize * 7) % SOURCES;
    (
        format!("os.log.svc{s:03}"),
        format!(
            r#"{{"ts":{ts},"level":"error","message":"Memory cgroup out of memory: Killed process {} (java) total-vm:8812340kB, OOMKilled"}}"#,
            4000 + k
        ),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `proprio run` (every role) as a child process, once it is ready: its
/// streams exist, so nothing published after this is lost. (/metrics
/// answers before NATS is reached; events published then had no stream.)
async fn start_proprio(url: &str, metrics: &str, dir: &std::path::Path, extra: &[&str]) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("proprio.log"))
        .unwrap();
    let registry = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/services.yaml");
    let child = Command::new(proprio_bin())
        .args(["run", "--nats", url, "--metrics-addr", metrics])
        .args(["--registry", registry, "--cold-steps", "200"])
        .args(["--threads", "2", "--cooldown", "0s"])
        .args(extra)
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting proprio run");
    let p = Proc(child);
    let m = metrics.to_string();
    wait_for("proprio's /readyz", 60, || http_get(&m, "/readyz").0 == 200).await;
    p
}

/// 30 rounds of every source, a training tick, the first model in the
/// scorer. Returns the events published.
async fn warm_up(client: &async_nats::Client, metrics: &str) -> u64 {
    let warm = 30 * 3 * SOURCES as u64;
    let t0 = now_ms() - 120_000;
    for i in 0..warm {
        let (subj, body) = normal_event(i, t0 + (i as i64 * 120_000) / warm as i64);
        client.publish(subj, body.into()).await.unwrap();
    }
    client.flush().await.unwrap();
    let m = metrics.to_string();
    wait_for("the warm-up harvested", 120, || {
        sum(&scrape(&m), "proprio_events_received_total", "harvester") >= warm as f64
    })
    .await;
    client
        .publish("proprio.tick.train", "{}".into())
        .await
        .unwrap();
    wait_for("the first model in the scorer", 300, || {
        sum(&scrape(&m), "proprio_model_swaps_total", "") >= 1.0
    })
    .await;
    warm
}

/// Back-pressure: a scorer that comes back to a backlog older than its
/// max lag sheds it (acknowledged, counted) and scores what is new; the
/// harvester still takes every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_backlog_is_shed_and_counted() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let args = ["--max-lag", "3s"];
    let proc = start_proprio(&nats.url, &metrics, dir.path(), &args).await;
    let client = async_nats::connect(&nats.url).await.unwrap();
    let warm = warm_up(&client, &metrics).await;
    let m = metrics.clone();
    wait_for("the scorer through the warm-up", 60, || {
        sum(&scrape(&m), "proprio_events_received_total", "scorer") >= warm as f64
    })
    .await;
    drop(proc);

    // While proprio is down: a backlog that will be stale when it is back.
    let backlog = 3 * SOURCES as u64 * 5;
    let ts = now_ms();
    for i in 0..backlog {
        let (subj, body) = normal_event(warm + i, ts);
        client.publish(subj, body.into()).await.unwrap();
    }
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _proc = start_proprio(&nats.url, &metrics, dir.path(), &args).await;
    let m = metrics.clone();
    wait_for("the model reloaded", 60, || {
        sum(&scrape(&m), "proprio_model_swaps_total", "") >= 1.0
    })
    .await;
    // Fresh events after the restart are scored.
    let fresh = 3 * SOURCES as u64;
    let ts = now_ms();
    for i in 0..fresh {
        let (subj, body) = normal_event(warm + backlog + i, ts);
        client.publish(subj, body.into()).await.unwrap();
    }
    client.flush().await.unwrap();
    let total = warm + backlog + fresh;
    wait_for("both consumers to account for every event", 120, || {
        let s = scrape(&m);
        let h = sum(&s, "proprio_events_harvested_total", "")
            + sum(&s, "proprio_events_dropped_total", "")
            + sum(&s, "proprio_events_rejected_total", "");
        // Counters restarted with the process: what it took since.
        h >= (backlog + fresh) as f64
            && sum(&s, "proprio_events_received_total", "scorer") >= (backlog + fresh) as f64
    })
    .await;
    let s = scrape(&metrics);
    let shed = sum(&s, "proprio_events_unscored_total", "shed");
    let scored = sum(&s, "proprio_events_scored_total", "");
    println!(
        "shed: published {total} ({warm} warm-up, {backlog} while down, {fresh} after); \
         after the restart: shed {shed:.0}, scored {scored:.0}, lag gauge {:.1} s",
        sum(&s, "proprio_scorer_lag_seconds", "")
    );
    assert_eq!(shed, backlog as f64, "exactly the stale backlog is shed");
    assert_eq!(scored, fresh as f64, "what came after is scored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_load_loses_nothing_and_reports_latency() {
    let rate = env_num("PROPRIO_LOAD_RATE", 5000);
    let secs = env_num("PROPRIO_LOAD_SECS", 60);
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let proc = start_proprio(&nats.url, &metrics, dir.path(), &[]).await;
    let pid = proc.0.id();
    let client = async_nats::connect(&nats.url).await.unwrap();

    // Alerts as they arrive, with their arrival time.
    let arrivals: Arc<Mutex<Vec<(Alert, Instant)>>> = Arc::default();
    let mut sub = client.subscribe("proprio.alert.>").await.unwrap();
    let a2 = arrivals.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Ok(a) = Alert::decode(&msg.payload) {
                a2.lock().unwrap().push((a, Instant::now()));
            }
        }
    });

    let mut published = warm_up(&client, &metrics).await;
    let warm = published;

    // Load: `rate` events/s in 10 ms ticks; one fault a second.
    let mut faults: HashMap<(String, i64), Instant> = HashMap::new();
    let mut rss = Vec::new();
    let mut max_pending = 0f64;
    let mut max_lag_s = 0f64;
    let start = Instant::now();
    let mut i = warm;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut next_sample = Duration::ZERO;
    let total = rate * secs;
    let mut sent = 0u64;
    while sent < total {
        tick.tick().await;
        let el = start.elapsed();
        let due = ((el.as_secs_f64() * rate as f64) as u64).min(total);
        let ts = now_ms();
        while sent < due {
            let (subj, body) = normal_event(i, ts);
            client.publish(subj, body.into()).await.unwrap();
            i += 1;
            sent += 1;
        }
        if el >= next_sample {
            let k = next_sample.as_secs();
            let (subj, body) = fault_event(k, ts);
            let source = subj.trim_start_matches("os.log.").to_string();
            client.publish(subj, body.into()).await.unwrap();
            faults.insert((source, ts), Instant::now());
            let s = scrape(&metrics);
            max_pending = max_pending.max(sum(
                &s,
                "proprio_consumer_pending_messages",
                "proprio-scorer",
            ));
            max_lag_s = max_lag_s.max(sum(&s, "proprio_scorer_lag_seconds", ""));
            rss.push(rss_mb(pid));
            next_sample += Duration::from_secs(1);
        }
    }
    client.flush().await.unwrap();
    let load_s = start.elapsed().as_secs_f64();
    published += sent + faults.len() as u64;

    // Drain: the harvester and the scorer account for every event.
    let m = metrics.clone();
    let drained = Instant::now();
    wait_for("both consumers to account for every event", 600, || {
        let s = scrape(&m);
        let harvested = sum(&s, "proprio_events_harvested_total", "")
            + sum(&s, "proprio_events_dropped_total", "")
            + sum(&s, "proprio_events_rejected_total", "");
        let scored = sum(&s, "proprio_events_received_total", "scorer");
        harvested >= published as f64 && scored >= published as f64
    })
    .await;
    let drain_s = drained.elapsed().as_secs_f64();
    let n_faults = faults.len();
    // Alerts follow the scores; give the last ones a moment, then report
    // (the assertions come after the figures).
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let all = {
            let a = arrivals.lock().unwrap();
            faults.keys().all(|(src, ts)| {
                a.iter().any(|(x, _)| {
                    &x.source == src && x.ts == *ts && x.rendered.contains("OOMKilled")
                })
            })
        };
        if all {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let s = scrape(&metrics);
    let harvested = sum(&s, "proprio_events_harvested_total", "");
    let dropped = sum(&s, "proprio_events_dropped_total", "");
    let rejected = sum(&s, "proprio_events_rejected_total", "");
    let received_h = sum(&s, "proprio_events_received_total", "harvester");
    let scored = sum(&s, "proprio_events_scored_total", "");
    let warming = sum(&s, "proprio_events_unscored_total", "warming");
    let shed = sum(&s, "proprio_events_unscored_total", "shed");
    let received_s = sum(&s, "proprio_events_received_total", "scorer");
    let a = arrivals.lock().unwrap();
    let mut lat: Vec<f64> = Vec::new();
    let mut per_fault: HashMap<&(String, i64), usize> = HashMap::new();
    for (x, at) in a.iter() {
        // The fault's own line (another event of the source may share its
        // millisecond, and may be surprising after it).
        if !x.rendered.contains("OOMKilled") {
            continue;
        }
        if let Some((k, sent_at)) = faults.get_key_value(&(x.source.clone(), x.ts)) {
            *per_fault.entry(k).or_default() += 1;
            lat.push(at.duration_since(*sent_at).as_secs_f64() * 1000.0);
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let first: f64 = rss.iter().take(10).sum::<f64>() / rss.len().min(10) as f64;
    let last: f64 = rss.iter().rev().take(10).sum::<f64>() / rss.len().min(10) as f64;
    let lost = published as f64 - (harvested + dropped + rejected);
    println!(
        "load: {rate} events/s offered for {secs} s from {SOURCES} sources (+1 fault/s), sent in {load_s:.1} s; \
         drained {drain_s:.1} s after the last publish"
    );
    println!(
        "load: published {published}, harvester received {received_h:.0} (harvested {harvested:.0}, dropped on purpose {dropped:.0}, rejected {rejected:.0}), \
         lost {lost:.0}; scorer received {received_s:.0} (scored {scored:.0}, warming {warming:.0}, shed {shed:.0})"
    );
    println!(
        "load: faults {n_faults}, alerted {}, duplicate alerts {}; publish-to-alert p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        per_fault.len(),
        per_fault.values().filter(|&&n| n > 1).count(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
    );
    let batches = sum(&s, "proprio_scoring_batch_size_count", "");
    println!(
        "load: alerts published {:.0} in all (cooldown 0 s: every event past the threshold)",
        sum(&s, "proprio_alerts_published_total", "")
    );
    println!(
        "load: scorer {batches:.0} batches of {:.1} events on average, {:.1} s in forward passes",
        sum(&s, "proprio_scoring_batch_size_sum", "") / batches.max(1.0),
        sum(&s, "proprio_scoring_duration_seconds_sum", "")
    );
    println!(
        "load: scorer lag max {max_pending:.0} messages, {max_lag_s:.1} s; RSS first 10 s {first:.1} MB, last 10 s {last:.1} MB, max {:.1} MB",
        rss.iter().copied().fold(0.0, f64::max)
    );
    assert_eq!(lost, 0.0, "every published event is harvested or counted");
    assert!(
        received_s >= published as f64,
        "the scorer took every event"
    );
    assert_eq!(per_fault.len(), n_faults, "every injected fault alerted");
    assert!(
        per_fault.values().all(|&n| n == 1),
        "no fault alerted twice"
    );
    assert!(
        last <= first * 1.10 + 16.0,
        "memory flat under steady load: {first:.1} MB -> {last:.1} MB"
    );
}
