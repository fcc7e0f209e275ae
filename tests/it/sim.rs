//! The simulated OS: its registry, determinism, coverage of the six kinds,
//! fault labels, and live mode agreeing with file mode on a real nats-server.
//! The faults' tests are in `faults`; the runs and helpers they share are here.

use crate::support;

mod faults;

use futures::StreamExt;
use proprio::event::{read_jsonl, Body, Event, Kind, Limits, Phase};
use proprio::registry::Registry;
use proprio::sim::{self, Fault, FaultSpec, SimConfig, DEFAULT_START_MS};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn repo_registry() -> Registry {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/services.yaml");
    Registry::load(&p).unwrap()
}

fn simulate(args: &[&str]) -> std::process::Output {
    let out = Command::new(support::proprio_bin())
        .arg("simulate")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "proprio simulate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn faults_of(out: &Path) -> Vec<Fault> {
    let text = std::fs::read_to_string(sim::sidecar(out, ".faults.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Events of an in-process run, with its faults.
fn run(
    hours: f64,
    seed: u64,
    faults: FaultSpec,
    services: Option<usize>,
) -> (Vec<Event>, Vec<Fault>, sim::Simulation) {
    let mut cfg = SimConfig::new(repo_registry());
    cfg.hours = hours;
    cfg.seed = seed;
    cfg.faults = faults;
    cfg.services = services;
    let s = sim::generate(&cfg).unwrap();
    let faults = s.faults().to_vec();
    let s2 = sim::generate(&cfg).unwrap();
    let events: Vec<Event> = s.collect();
    (events, faults, s2)
}

/// The registry's dependencies as (service, dependency) edges.
fn registry_edges(reg: &Registry) -> BTreeSet<(String, String)> {
    reg.services
        .iter()
        .flat_map(|s| s.depends_on.iter().map(|d| (s.name.clone(), d.clone())))
        .collect()
}

/// The (src, dst) edges of the ServiceGraph events among `events`.
fn service_edges<'a>(events: impl Iterator<Item = &'a Event>) -> Vec<(String, String)> {
    events
        .filter_map(|e| match &e.body {
            Body::Graph {
                graph, src, dst, ..
            } if graph == "ServiceGraph" => Some((src.clone(), dst.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn committed_registry_is_the_generators_output() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/services.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        sim::default_registry().to_yaml(),
        "deploy/services.yaml differs from the generator: run `proprio simulate --write-registry deploy/services.yaml`"
    );
}

#[test]
fn registry_shape() {
    let r = repo_registry();
    assert!(r.services.len() >= 200, "{} services", r.services.len());
    assert_eq!(r.services.len(), 203);
    let layers: BTreeSet<u8> = r.services.iter().map(|s| s.layer).collect();
    assert_eq!(layers, (0..12).collect());
    // Dependencies point strictly downward, so the graph is acyclic; ports are unique.
    sim::check_layered(&r).unwrap();
    for role in ["orchestrator", "memory", "gpu_worker", "dashboard"] {
        assert!(r.services.iter().any(|s| s.role == role), "no {role}");
    }
    assert!(r.services.iter().filter(|s| s.role == "gpu_worker").count() >= 3);
    for n in [
        "AitherMind",
        "AitherFlux",
        "AitherChronicle",
        "AitherPulse",
        "Orchestrator",
        "AitherDashboard",
    ] {
        assert!(r.get(n).is_some(), "{n} missing");
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = dirs[0].path().join("run.jsonl");
    let b = dirs[1].path().join("run.jsonl");
    let c = dirs[2].path().join("run.jsonl");
    let common = ["--hours", "1", "--faults", "all", "--services", "80"];
    for (p, seed) in [(&a, "7"), (&b, "7"), (&c, "8")] {
        let mut args = vec!["--out", p.to_str().unwrap(), "--seed", seed];
        args.extend(common);
        simulate(&args);
    }
    let read = |p: &Path| std::fs::read(p).unwrap();
    assert_eq!(read(&a), read(&b));
    assert_eq!(
        read(&sim::sidecar(&a, ".faults.json")),
        read(&sim::sidecar(&b, ".faults.json"))
    );
    assert_ne!(read(&a), read(&c));
    // The file is what the library yields.
    let file = read_jsonl(&a).unwrap();
    let (events, _, _) = run(1.0, 7, FaultSpec::All, Some(80));
    assert_eq!(file, events);
}

#[test]
fn all_six_kinds_with_their_rhythms() {
    let (events, _, s) = run(1.0, 3, FaultSpec::None, None);
    let reg = s.registry().clone();
    let mut by_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut prev = i64::MIN;
    for e in &events {
        assert!(e.ts >= prev, "not time-ordered");
        prev = e.ts;
        assert!(e.ts >= DEFAULT_START_MS && e.ts < DEFAULT_START_MS + 3_600_000);
        assert_eq!(e.key, e.source);
        *by_kind.entry(e.kind()).or_default() += 1;
    }
    for k in Kind::ALL {
        assert!(by_kind.get(&k).copied().unwrap_or(0) > 0, "no {k} events");
    }
    let n = events.len();
    assert!((25_000..=70_000).contains(&n), "{n} events in an hour");

    // Pulses carry the six metrics; GPU workers also VRAM.
    let gpu: BTreeSet<&str> = reg
        .services
        .iter()
        .filter(|s| s.role == "gpu_worker")
        .map(|s| s.name.as_str())
        .collect();
    let mut pulses_per_source: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &events {
        if let Body::Pulse { metrics } = &e.body {
            for m in [
                "cpu",
                "mem_mb",
                "req_rate",
                "latency_p50_ms",
                "latency_p99_ms",
                "error_rate",
            ] {
                assert!(metrics.contains_key(m), "{m} missing in {e:?}");
            }
            assert_eq!(
                metrics.contains_key("vram_pct"),
                gpu.contains(e.source.as_str())
            );
            *pulses_per_source.entry(&e.source).or_default() += 1;
        }
    }
    assert_eq!(
        pulses_per_source.len(),
        reg.services.len(),
        "every service pulses"
    );
    // Intervals of 10-60 s: between 60 and 360 pulses an hour (less the boot).
    assert!(pulses_per_source.values().all(|&c| (50..=360).contains(&c)));

    // Every service boots in the fixed order, after its dependencies are healthy.
    let mut seq: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut healthy_at: BTreeMap<&str, i64> = BTreeMap::new();
    let mut starting_at: BTreeMap<&str, i64> = BTreeMap::new();
    for e in &events {
        if let Body::Flux { event, .. } = &e.body {
            if e.ts < DEFAULT_START_MS + 5 * 60_000
                && event != "heartbeat"
                && event != "job_completed"
                && event != "consolidated"
                && event != "job_dispatched"
            {
                seq.entry(&e.source).or_default().push(event);
            }
            if event == "healthy" {
                healthy_at.entry(&e.source).or_insert(e.ts);
            }
            if event == "starting" {
                starting_at.entry(&e.source).or_insert(e.ts);
            }
        }
    }
    for s in &reg.services {
        assert_eq!(
            &seq[s.name.as_str()][..5],
            [
                "starting",
                "config_loaded",
                "deps_ready",
                "listening",
                "healthy"
            ],
            "{}",
            s.name
        );
        for d in &s.depends_on {
            assert!(
                healthy_at[d.as_str()] < starting_at[s.name.as_str()],
                "{} started before {d}",
                s.name
            );
        }
    }

    // Reasoning traces go through the six phases in order, per request.
    let mut phases: BTreeMap<&str, Vec<Phase>> = BTreeMap::new();
    for e in &events {
        if let Body::Trace {
            phase,
            request,
            duration_ms,
            ..
        } = &e.body
        {
            assert!(duration_ms.is_some_and(|d| d > 0.0));
            phases.entry(request).or_default().push(*phase);
        }
    }
    assert!(phases.len() > 50);
    for p in phases.values().filter(|p| p.len() == 6) {
        assert_eq!(p, &Phase::ALL.to_vec());
    }
    assert!(phases.values().filter(|p| p.len() == 6).count() > 50);

    // Several graphs, the ServiceGraph being the registry's dependencies.
    let graphs: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| match &e.body {
            Body::Graph { graph, .. } => {
                assert_eq!(&e.source, graph);
                Some(graph.as_str())
            }
            _ => None,
        })
        .collect();
    for g in ["ServiceGraph", "CodeGraph", "ConfigGraph", "InfraGraph"] {
        assert!(graphs.contains(g), "{g} missing");
    }
    let deps = registry_edges(&reg);
    let edges: BTreeSet<_> = service_edges(events.iter()).into_iter().collect();
    assert_eq!(edges, deps);

    // Logs carry volatile parts; chronicle entries are complete.
    let logs: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.body {
            Body::Log { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert!(logs.iter().any(|m| m.contains("req_id=")));
    assert!(logs.iter().any(|m| m.contains("request_id=")));
    assert!(logs.iter().any(|m| m.contains("10.")));
    assert!(events
        .iter()
        .any(|e| matches!(&e.body, Body::Chronicle { action, .. } if action == "login")));
}

/// A run that continues another (the demo's phases) starts with the OS up:
/// no boot sequence, and every service on its rhythm from the first
/// instant, so none is silent for the minute the last ones take to boot.
#[test]
fn a_running_os_does_not_boot() {
    let mut cfg = SimConfig::new(repo_registry());
    cfg.hours = 0.1;
    cfg.seed = 4;
    cfg.faults = FaultSpec::None;
    cfg.running = true;
    let events: Vec<Event> = sim::generate(&cfg).unwrap().collect();
    let t0 = cfg.start_ms;
    // Deploys (the first restarts) come five minutes in at the earliest.
    let starting = events
        .iter()
        .filter(|e| e.ts < t0 + 5 * 60_000)
        .filter(|e| matches!(&e.body, Body::Flux { event, .. } if event == "starting"))
        .count();
    assert_eq!(starting, 0, "a running OS boots nothing");
    let mut first: BTreeMap<&str, i64> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind() != Kind::Graph) {
        first.entry(e.source.as_str()).or_insert(e.ts);
    }
    assert_eq!(first.len(), repo_registry().services.len());
    let late = first
        .iter()
        .filter(|(_, &t)| t > t0 + 61_000)
        .collect::<Vec<_>>();
    assert!(late.is_empty(), "silent past a pulse: {late:?}");
    // The same seed booting: its last services are first heard later.
    cfg.running = false;
    let booting: Vec<Event> = sim::generate(&cfg).unwrap().collect();
    assert!(booting
        .iter()
        .any(|e| matches!(&e.body, Body::Flux { event, .. } if event == "starting")));
}

#[test]
fn nightly_cron_is_loud_but_normal() {
    let (events, faults, _) = run(3.0, 5, FaultSpec::None, None);
    assert!(faults.is_empty());
    assert!(events.iter().all(|e| e.label.is_none()));
    let cpu = |from_h: f64, to_h: f64| -> Vec<f64> {
        events
            .iter()
            .filter(|e| e.source == "AitherPostgres")
            .filter(|e| {
                let h = (e.ts - DEFAULT_START_MS) as f64 / 3_600_000.0;
                h >= from_h && h < to_h
            })
            .filter_map(|e| match &e.body {
                Body::Pulse { metrics } => metrics.get("cpu").copied(),
                _ => None,
            })
            .collect()
    };
    let during = cpu(2.02, 2.3);
    let before = cpu(1.5, 1.95);
    assert!(!during.is_empty() && !before.is_empty());
    assert!(during.iter().all(|&c| c > 60.0), "{during:?}");
    assert!(before.iter().all(|&c| c < 50.0), "{before:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mode_publishes_what_file_mode_writes() {
    let server = support::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("live.jsonl");
    let start = DEFAULT_START_MS.to_string();
    let common = [
        "--services",
        "20",
        "--hours",
        "0.1",
        "--seed",
        "9",
        "--faults",
        "all",
        "--start-ms",
        &start,
    ];
    let mut args = vec!["--out", out.to_str().unwrap()];
    args.extend(common);
    simulate(&args);
    let expected: Vec<Event> = read_jsonl(&out)
        .unwrap()
        .into_iter()
        .map(|mut e| {
            e.label = None;
            e
        })
        .collect();
    assert!(expected.len() > 500, "{} events", expected.len());

    let client = async_nats::connect(&server.url).await.unwrap();
    let mut sub = client.subscribe("os.>").await.unwrap();
    client.flush().await.unwrap();

    let url = server.url.clone();
    let common: Vec<String> = common.iter().map(|s| s.to_string()).collect();
    let publisher = tokio::task::spawn_blocking(move || {
        let mut args = vec!["--nats".to_string(), url, "--speed".into(), "1e9".into()];
        args.extend(common);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        simulate(&a)
    });

    let limits = Limits::default();
    let mut got: Vec<Event> = Vec::with_capacity(expected.len());
    while got.len() < expected.len() {
        let msg = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .unwrap_or_else(|_| {
                panic!("timed out after {} of {} events", got.len(), expected.len())
            })
            .expect("subscription ended");
        let e = Event::decode(
            &msg.payload,
            Some(("os", msg.subject.as_str())),
            &limits,
            None,
        )
        .unwrap_or_else(|r| panic!("{} did not decode: {r}", msg.subject));
        assert_eq!(msg.subject.as_str(), e.subject("os"));
        assert!(e.label.is_none());
        got.push(e);
    }
    publisher.await.unwrap();
    // Nothing more arrives.
    let extra = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
    assert!(extra.is_err(), "more events than the file holds");
    for (i, (g, x)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, x, "event {i} differs");
    }
}
