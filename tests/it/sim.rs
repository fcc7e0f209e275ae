//! The simulated OS: its registry, determinism, coverage of the six kinds,
//! fault labels, and live mode agreeing with file mode on a real nats-server.

use crate::support;

use futures::StreamExt;
use proprio::event::{read_jsonl, Body, Event, Kind, Limits, Phase, Scalar};
use proprio::registry::Registry;
use proprio::sim::{self, Fault, FaultKind, FaultSpec, SimConfig, DEFAULT_START_MS};
use sha2::{Digest, Sha256};
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
    let deps: BTreeSet<(String, String)> = reg
        .services
        .iter()
        .flat_map(|s| s.depends_on.iter().map(|d| (s.name.clone(), d.clone())))
        .collect();
    let edges: BTreeSet<(String, String)> = events
        .iter()
        .filter_map(|e| match &e.body {
            Body::Graph {
                graph, src, dst, ..
            } if graph == "ServiceGraph" => Some((src.clone(), dst.clone())),
            _ => None,
        })
        .collect();
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

fn metric(e: &Event, m: &str) -> Option<f64> {
    match &e.body {
        Body::Pulse { metrics } => metrics.get(m).copied(),
        _ => None,
    }
}

fn flux_event(e: &Event) -> Option<&str> {
    match &e.body {
        Body::Flux { event, .. } => Some(event.as_str()),
        _ => None,
    }
}

fn message(e: &Event) -> Option<&str> {
    match &e.body {
        Body::Log { message, .. } => Some(message.as_str()),
        _ => None,
    }
}

#[test]
fn every_fault_is_placed_and_labelled_precisely() {
    let hours = 3.0;
    let seed = 11;
    let (events, faults, s) = run(hours, seed, FaultSpec::All, None);
    let reg = s.registry().clone();
    let start = DEFAULT_START_MS;
    let end = start + (hours * 3_600_000.0) as i64;
    let kinds: BTreeSet<FaultKind> = faults.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, FaultKind::ALL.into_iter().collect());
    let by_id: BTreeMap<&str, &Fault> = faults.iter().map(|f| (f.id.as_str(), f)).collect();
    for f in &faults {
        assert_eq!(FaultKind::of_id(&f.id), Some(f.kind), "{}", f.id);
        assert!(f.id.starts_with(&format!("{}-", f.kind)));
        assert!(
            f.start_ms >= start + (end - start) / 10,
            "{} in the first 10%",
            f.id
        );
        assert!(f.start_ms <= f.end_ms && f.end_ms <= end);
    }
    let mut labelled: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in &events {
        if let Some(l) = &e.label {
            let f = by_id
                .get(l.as_str())
                .unwrap_or_else(|| panic!("label {l} not in the faults file"));
            assert!(
                f.start_ms <= e.ts && e.ts <= f.end_ms,
                "{l} event outside its window: {e:?}"
            );
            assert!(
                f.sources.contains(&e.source),
                "{l} event from {} not in {:?}",
                e.source,
                f.sources
            );
            labelled.entry(l).or_default().push(e);
        }
    }
    let unlabelled = events.iter().filter(|e| e.label.is_none()).count();
    let total_labelled: usize = labelled.values().map(Vec::len).sum();
    assert!(
        total_labelled * 20 < unlabelled,
        "labels should be rare: {total_labelled}"
    );

    let of = |k: FaultKind| -> (&Fault, &Vec<&Event>) {
        let f = faults.iter().find(|f| f.kind == k).unwrap();
        let ev = labelled
            .get(f.id.as_str())
            .unwrap_or_else(|| panic!("{} has no labelled events", f.id));
        (f, ev)
    };
    for f in &faults {
        assert!(
            labelled.contains_key(f.id.as_str()),
            "{} has no labelled events",
            f.id
        );
    }

    // latency_spike: AitherMind from ~200 ms to ~3 s, slow-request logs.
    let (f, ev) = of(FaultKind::LatencySpike);
    assert!(f.sources.contains(&"AitherMind".to_string()));
    let spiked: Vec<f64> = ev
        .iter()
        .filter_map(|e| metric(e, "latency_p50_ms"))
        .collect();
    // A window shorter than a couple of pulse intervals may hold no pulse.
    let long = f.end_ms - f.start_ms > 3 * 60_000;
    assert!(
        (!long || !spiked.is_empty()) && spiked.iter().all(|&p| p > 2000.0),
        "{spiked:?}"
    );
    let normal: Vec<f64> = events
        .iter()
        .filter(|e| e.source == "AitherMind" && e.label.is_none())
        .filter_map(|e| metric(e, "latency_p50_ms"))
        .collect();
    assert!(normal.iter().all(|&p| p < 400.0), "{normal:?}");
    assert!(ev
        .iter()
        .filter_map(|e| message(e))
        .any(|m| m.contains("slow request")));

    // oom_death: an OOMKilled line, a killed flux, then silence until the restart.
    let (f, ev) = of(FaultKind::OomDeath);
    let kill = ev
        .iter()
        .find(|e| message(e).is_some_and(|m| m.contains("OOMKilled")))
        .expect("OOMKilled log");
    assert!(ev.iter().any(|e| flux_event(e) == Some("killed")));
    let victim = kill.source.clone();
    let back = events
        .iter()
        .find(|e| e.source == victim && e.ts > kill.ts && flux_event(e) == Some("starting"))
        .map(|e| e.ts)
        .unwrap_or(end);
    let chatter: Vec<&Event> = events
        .iter()
        .filter(|e| {
            e.source == victim && e.ts > kill.ts && e.ts < back && flux_event(e) != Some("killed")
        })
        .collect();
    assert!(chatter.is_empty(), "{victim} spoke while dead: {chatter:?}");
    assert!(
        back - kill.ts > (f.end_ms - f.start_ms) / 3,
        "silence too short"
    );
    assert!(back <= f.end_ms);

    // oom_cascade: the root dies, dependents degrade in turn.
    let (f, ev) = of(FaultKind::OomCascade);
    let killed: BTreeSet<&str> = ev
        .iter()
        .filter(|e| flux_event(e) == Some("killed"))
        .map(|e| e.source.as_str())
        .collect();
    let degraded: BTreeSet<&str> = ev
        .iter()
        .filter(|e| flux_event(e) == Some("degraded"))
        .map(|e| e.source.as_str())
        .collect();
    assert!(
        !killed.is_empty() && degraded.len() >= 2,
        "{killed:?} {degraded:?} of {:?}",
        f.sources
    );
    let first_kill = ev.iter().find(|e| flux_event(e) == Some("killed")).unwrap();
    let root = reg.get(&first_kill.source).unwrap();
    for d in &degraded {
        let svc = reg.get(d).unwrap();
        assert!(
            svc.depends_on.iter().any(|x| killed.contains(x.as_str())),
            "{d} degraded without a dead upstream (root {})",
            root.name
        );
    }

    // port_conflict: bind fails, flux failed, then a clean start.
    let (_, ev) = of(FaultKind::PortConflict);
    assert!(ev
        .iter()
        .filter_map(|e| message(e))
        .any(|m| m.contains("bind: address already in use")));
    assert!(
        ev.iter()
            .filter(|e| flux_event(e) == Some("failed"))
            .count()
            >= 2
    );

    // localhost_trap: connection refused to 127.0.0.1:<the dependency's port>.
    let (_, ev) = of(FaultKind::LocalhostTrap);
    let refused: Vec<&str> = ev
        .iter()
        .filter_map(|e| message(e))
        .filter(|m| m.contains("dial tcp 127.0.0.1:") && m.contains("connection refused"))
        .collect();
    assert!(!refused.is_empty());
    let caller = ev
        .iter()
        .find(|e| message(e).is_some_and(|m| m.contains("127.0.0.1")))
        .unwrap();
    let ports: Vec<String> = reg
        .get(&caller.source)
        .unwrap()
        .depends_on
        .iter()
        .map(|d| format!("127.0.0.1:{}:", reg.get(d).unwrap().port))
        .collect();
    assert!(refused
        .iter()
        .all(|m| ports.iter().any(|p| m.contains(p.as_str()))));

    // crash_loop: repeated starting -> crashed with an exit code.
    let (_, ev) = of(FaultKind::CrashLoop);
    let crashes: Vec<&Event> = ev
        .iter()
        .copied()
        .filter(|e| flux_event(e) == Some("crashed"))
        .collect();
    assert!(crashes.len() >= 3);
    for c in crashes {
        let Body::Flux { attrs, .. } = &c.body else {
            unreachable!()
        };
        assert!(matches!(attrs.get("exit_code"), Some(Scalar::Int(x)) if *x != 0));
    }

    // vram_pressure: a GPU worker at ~95 %.
    let (f, ev) = of(FaultKind::VramPressure);
    let vram: Vec<f64> = ev.iter().filter_map(|e| metric(e, "vram_pct")).collect();
    for e in ev.iter().filter(|e| metric(e, "vram_pct").is_some()) {
        assert!(f.sources.contains(&e.source));
        assert_eq!(
            reg.get(&e.source).map(|s| s.role.as_str()),
            Some("gpu_worker")
        );
    }
    let long = f.end_ms - f.start_ms > 3 * 60_000;
    assert!(
        (!long || !vram.is_empty()) && vram.iter().all(|&v| v > 90.0),
        "{vram:?}"
    );
    let normal_max = events
        .iter()
        .filter(|e| e.label.is_none())
        .filter_map(|e| metric(e, "vram_pct"))
        .fold(0.0, f64::max);
    assert!(normal_max < 90.0, "normal VRAM reached {normal_max}");
    assert!(ev
        .iter()
        .filter_map(|e| message(e))
        .any(|m| m.contains("CUDA")));

    // startup_order: the service starts while its dependency is down.
    let (_, ev) = of(FaultKind::StartupOrder);
    let seq: Vec<&str> = ev.iter().filter_map(|e| flux_event(e)).collect();
    assert!(
        seq.contains(&"dependency_unavailable") && !seq.contains(&"deps_ready"),
        "{seq:?}"
    );
    assert_eq!(seq.first(), Some(&"starting"));

    // new_dependency: an edge the registry does not have.
    let (_, ev) = of(FaultKind::NewDependency);
    let deps: BTreeSet<(String, String)> = reg
        .services
        .iter()
        .flat_map(|s| s.depends_on.iter().map(|d| (s.name.clone(), d.clone())))
        .collect();
    let new_edges: Vec<(String, String)> = ev
        .iter()
        .filter_map(|e| match &e.body {
            Body::Graph {
                graph, src, dst, ..
            } if graph == "ServiceGraph" => Some((src.clone(), dst.clone())),
            _ => None,
        })
        .collect();
    assert!(!new_edges.is_empty());
    assert!(new_edges.iter().all(|e| !deps.contains(e)));
    // Everyday ServiceGraph edges are exactly the registry's.
    for e in events.iter().filter(|e| e.label.is_none()) {
        if let Body::Graph {
            graph, src, dst, ..
        } = &e.body
        {
            if graph == "ServiceGraph" {
                assert!(
                    deps.contains(&(src.clone(), dst.clone())),
                    "unlabelled foreign edge {src}->{dst}"
                );
            }
        }
    }

    // arch_change: a service split in two; the new one exists only after t.
    let (f, ev) = of(FaultKind::ArchChange);
    let after = s.registry_after().expect("registry after the change");
    assert_eq!(after.services.len(), reg.services.len() + 1);
    after.check().unwrap();
    sim::check_acyclic(after).unwrap();
    let new: Vec<&str> = after
        .services
        .iter()
        .filter(|s| reg.get(&s.name).is_none())
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(new.len(), 1);
    assert!(events
        .iter()
        .filter(|e| e.source == new[0])
        .all(|e| e.ts >= f.start_ms && e.label.as_deref() == Some(f.id.as_str())));
    assert!(ev
        .iter()
        .any(|e| e.source == new[0] && metric(e, "cpu").is_some()));
}

#[test]
fn fault_list_and_none() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.jsonl");
    let o = out.to_str().unwrap();
    simulate(&[
        "--out",
        o,
        "--hours",
        "1",
        "--seed",
        "2",
        "--faults",
        "crash_loop,latency_spike,crash_loop",
    ]);
    let faults = faults_of(&out);
    let ids: Vec<&str> = faults.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["crash_loop-0", "latency_spike-0", "crash_loop-1"]);
    let labels: BTreeSet<String> = read_jsonl(&out)
        .unwrap()
        .into_iter()
        .filter_map(|e| e.label)
        .collect();
    assert_eq!(labels, ids.iter().map(|s| s.to_string()).collect());

    simulate(&[
        "--out", o, "--hours", "1", "--seed", "2", "--faults", "none",
    ]);
    assert!(faults_of(&out).is_empty());
    assert!(read_jsonl(&out).unwrap().iter().all(|e| e.label.is_none()));

    let bad = Command::new(support::proprio_bin())
        .args(["simulate", "--out", o, "--faults", "meteor_strike"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown fault kind"));
}

#[test]
fn arch_change_writes_a_registry_the_fingerprint_sees() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("arch.jsonl");
    simulate(&[
        "--out",
        out.to_str().unwrap(),
        "--hours",
        "0.5",
        "--faults",
        "arch_change",
    ]);
    let faults = faults_of(&out);
    assert_eq!(faults.len(), 1);
    let name = faults[0]
        .registry_after
        .as_ref()
        .expect("names its registry file");
    let after = out.parent().unwrap().join(name);
    let before = sim::sidecar(&out, ".registry.yaml");
    let hash = |p: &Path| hex::encode(Sha256::digest(std::fs::read(p).unwrap()));
    assert_ne!(hash(&before), hash(&after));
    assert_eq!(Registry::load(&before).unwrap(), repo_registry());
    let a = Registry::load(&after).unwrap();
    assert_eq!(a.services.len(), 204);
}

#[test]
fn small_subsets_are_dependency_closed_and_still_fault_everything() {
    let (events, faults, s) = run(0.5, 4, FaultSpec::All, Some(20));
    let reg = s.registry();
    assert_eq!(reg.services.len(), 20);
    reg.check().unwrap();
    let kinds: BTreeSet<FaultKind> = faults.iter().map(|f| f.kind).collect();
    assert_eq!(kinds.len(), FaultKind::ALL.len(), "{:?}", s.warnings());
    let names: BTreeSet<&str> = reg.services.iter().map(|s| s.name.as_str()).collect();
    let kinds_seen: BTreeSet<Kind> = events.iter().map(|e| e.kind()).collect();
    assert_eq!(kinds_seen.len(), 6);
    for e in &events {
        if !matches!(e.body, Body::Graph { .. }) && e.label.is_none() {
            assert!(
                names.contains(e.source.as_str()),
                "{} not in the subset",
                e.source
            );
        }
    }
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
