//! The simulator's faults: each placed, labelled and visible in the events
//! it should touch; the fault list, arch_change's registry, and subsets.

use super::{faults_of, registry_edges, repo_registry, run, service_edges, simulate};
use crate::support;
use proprio::event::{read_jsonl, Body, Event, Kind, Scalar};
use proprio::registry::Registry;
use proprio::sim::{self, Fault, FaultKind, FaultSpec, DEFAULT_START_MS};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

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

/// Every fault names a root among its sources, and the root publishes the
/// fault's earliest labelled event, or a recorder does, announcing the change
/// that causes it: the exceptions `Fault::root` documents.
fn assert_roots(events: &[Event], faults: &[Fault]) {
    let mut first: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in events {
        let Some(l) = &e.label else { continue };
        let at = first.entry(l.as_str()).or_default();
        match at.first().map(|x| x.ts) {
            Some(ts) if ts < e.ts => {}
            Some(ts) if ts == e.ts => at.push(e),
            _ => *at = vec![e],
        }
    }
    for f in faults {
        let root = f
            .root
            .as_deref()
            .unwrap_or_else(|| panic!("{} has no root", f.id));
        assert!(
            f.sources.iter().any(|s| s == root),
            "{} root {root} not in {:?}",
            f.id,
            f.sources
        );
        let earliest = first
            .get(f.id.as_str())
            .unwrap_or_else(|| panic!("{} has no labelled events", f.id));
        let announced = |e: &Event| {
            let action = match f.kind {
                FaultKind::PortConflict | FaultKind::CrashLoop => "deploy",
                FaultKind::ArchChange => "architecture.change",
                FaultKind::LocalhostTrap => "config.update",
                _ => return false,
            };
            matches!(&e.body, Body::Chronicle { action: a, target, .. }
                if a == action && target.split(['@', '.', ' ', '+']).any(|w| w == root))
        };
        assert!(
            earliest.iter().any(|e| e.source == root || announced(e)),
            "{} root {root}, but its first labelled events are {earliest:?}",
            f.id
        );
    }
}

#[test]
fn every_fault_names_its_root() {
    let kinds: Vec<FaultKind> = FaultKind::ALL.into_iter().flat_map(|k| [k, k]).collect();
    for seed in [1, 2] {
        let (events, faults, s) = run(2.0, seed, FaultSpec::List(kinds.clone()), Some(100));
        assert_eq!(faults.len(), kinds.len(), "{:?}", s.warnings());
        assert_roots(&events, &faults);
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
    assert_roots(&events, &faults);
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
    let deps = registry_edges(&reg);
    let new_edges = service_edges(ev.iter().copied());
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
    assert_roots(&events, &faults);
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
