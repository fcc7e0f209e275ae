//! The engine on hand-made topologies.

use super::*;
use crate::contract::alert::{AlertBaseline, AlertReason, BaselineOf, Span};
use crate::event::Kind;

const MIN: i64 = 60_000;
const T: i64 = 1_767_225_600_000;

fn alert(id: &str, source: &str, ts: i64, score: f32) -> Alert {
    Alert {
        id: id.into(),
        ts,
        source: source.into(),
        key: source.into(),
        kind: Kind::Pulse,
        score,
        loss: 2.0,
        baseline: AlertBaseline {
            median: 1.0,
            scale: 0.5,
            of: BaselineOf::Key,
        },
        rendered: String::new(),
        span: Span {
            text: "latency_p99_ms=2.9k".into(),
            ..Default::default()
        },
        diagnosis: None,
        model: None,
        reason: AlertReason::Surprise,
        previous_epoch: false,
    }
}

fn silence(source: &str, ts: i64) -> Alert {
    Alert {
        id: Alert::id_for_silence(source, ts - 30_000),
        reason: AlertReason::Silence,
        span: Span::default(),
        score: 10.0,
        ..alert("", source, ts, 0.0)
    }
}

/// A → B → C (A depends on B, B on C), and D, E unconnected to them.
fn chain() -> Topology {
    let mut t = Topology::new(100);
    t.observe("A", "B");
    t.observe("B", "C");
    t
}

/// Every incident told at once: these tests are about grouping and ranks;
/// the confirmation rule has its own below.
fn told_at_once() -> EngineConfig {
    EngineConfig {
        confirm_alerts: 1,
        ..Default::default()
    }
}

fn engine(topo: Topology) -> Engine {
    Engine::new(told_at_once(), topo)
}

#[test]
fn a_chain_is_one_incident_rooted_where_it_started() {
    let mut e = engine(chain());
    let v = e.observe(&alert("1", "C", T, 4.0));
    let Verdict::Opened(id) = v else {
        panic!("{v:?}")
    };
    assert_eq!(
        e.observe(&alert("2", "B", T + MIN, 5.0)),
        Verdict::Joined(id.clone())
    );
    assert_eq!(
        e.observe(&alert("3", "A", T + 2 * MIN, 6.0)),
        Verdict::Joined(id.clone())
    );
    let incs = e.open_incidents();
    assert_eq!(incs.len(), 1);
    let inc = &incs[0];
    assert_eq!(inc.id, id);
    assert_eq!(inc.alerts, 3);
    assert_eq!(inc.sources, ["C", "B", "A"]);
    assert_eq!(inc.root().unwrap().source, "C");
    assert_eq!(inc.score, 6.0);
    assert_eq!((inc.opened_ts, inc.updated_ts), (T, T + 2 * MIN));
    assert_eq!(inc.alert_ids, ["1", "2", "3"]);
}

#[test]
fn the_depended_on_source_is_root_even_when_noticed_later() {
    let mut e = engine(chain());
    e.observe(&alert("1", "A", T, 6.0));
    e.observe(&alert("2", "B", T + 10_000, 4.0));
    e.observe(&alert("3", "C", T + 20_000, 4.0));
    let inc = &e.open_incidents()[0];
    assert_eq!(inc.root().unwrap().source, "C", "{:?}", inc.suspects);
}

#[test]
fn unconnected_simultaneous_alerts_are_two_incidents() {
    let mut e = engine(chain());
    let a = e.observe(&alert("1", "C", T, 4.0));
    let b = e.observe(&alert("2", "D", T, 4.0));
    assert!(matches!((&a, &b), (Verdict::Opened(x), Verdict::Opened(y)) if x != y));
    assert_eq!(e.open_count(), 2);
    // Beyond max_hops: a long chain's ends are not one incident.
    let mut t = Topology::new(100);
    for (a, b) in [("P", "Q"), ("Q", "R"), ("R", "S")] {
        t.observe(a, b);
    }
    let mut e = engine(t);
    e.observe(&alert("1", "P", T, 4.0));
    assert!(matches!(
        e.observe(&alert("2", "S", T, 4.0)),
        Verdict::Opened(_)
    ));
    assert!(matches!(
        e.observe(&alert("3", "R", T, 4.0)),
        Verdict::Joined(_)
    ));
}

#[test]
fn outside_the_join_window_is_a_new_incident() {
    let mut e = engine(chain());
    e.observe(&alert("1", "C", T, 4.0));
    assert!(matches!(
        e.observe(&alert("2", "B", T + 6 * MIN, 4.0)),
        Verdict::Opened(_)
    ));
    assert_eq!(e.open_count(), 2);
}

#[test]
fn an_alert_connecting_two_incidents_joins_the_older() {
    let mut e = engine(chain());
    let Verdict::Opened(older) = e.observe(&alert("1", "A", T, 4.0)) else {
        panic!()
    };
    // C is 2 hops from A, and D is made a neighbour of C below.
    e.topology_mut().observe("D", "C");
    // D is 3 hops from A: its own incident.
    let Verdict::Opened(newer) = e.observe(&alert("2", "D", T + 1000, 4.0)) else {
        panic!()
    };
    assert_ne!(older, newer);
    // C is near both: it joins the older one; the newer stays as it was.
    assert_eq!(
        e.observe(&alert("3", "C", T + 2000, 4.0)),
        Verdict::Joined(older.clone())
    );
    let incs = e.open_incidents();
    assert_eq!(incs.len(), 2);
    assert_eq!(incs[0].sources, ["A", "C"]);
    assert_eq!(incs[1].sources, ["D"]);
}

#[test]
fn resolves_after_the_quiet_period_and_reopens_fresh() {
    let mut e = engine(chain());
    let Verdict::Opened(id) = e.observe(&alert("1", "C", T, 4.0)) else {
        panic!()
    };
    e.observe(&alert("2", "B", T + MIN, 4.0));
    assert_eq!(e.advance(T + MIN + 10 * MIN - 1), 0);
    assert_eq!(e.open_count(), 1);
    assert_eq!(e.advance(T + 11 * MIN), 1);
    assert_eq!(e.open_count(), 0);
    let changed = e.changed();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].id, id);
    assert_eq!(changed[0].state, IncidentState::Resolved);
    assert_eq!(changed[0].resolved_ts, Some(T + 11 * MIN));
    // A later alert of the same sources is a new incident, and a resolved
    // incident's alert redelivered is not counted again.
    assert_eq!(
        e.observe(&alert("2", "B", T + MIN, 4.0)),
        Verdict::Duplicate
    );
    let Verdict::Opened(id2) = e.observe(&alert("3", "C", T + 20 * MIN, 4.0)) else {
        panic!()
    };
    assert_ne!(id, id2);
    // Event time resolves too: an alert 10 min after the last one.
    e.observe(&alert("4", "D", T + 31 * MIN, 4.0));
    assert_eq!(e.open_count(), 1);
    assert_eq!(e.counts.resolved, 2);
}

#[test]
fn silence_alerts_take_part() {
    let mut e = engine(chain());
    let Verdict::Opened(id) = e.observe(&silence("C", T)) else {
        panic!()
    };
    assert_eq!(
        e.observe(&alert("2", "B", T + 5000, 4.0)),
        Verdict::Joined(id)
    );
    let inc = &e.open_incidents()[0];
    assert_eq!(inc.root().unwrap().source, "C");
    assert_eq!(inc.root().unwrap().what, "silence");
    assert_eq!(inc.suspects[1].what, "latency_p99_ms=2.9k");
}

#[test]
fn redeliveries_are_not_counted_twice() {
    let mut e = engine(chain());
    e.observe(&alert("1", "C", T, 4.0));
    e.observe(&alert("2", "B", T + 1000, 4.0));
    assert_eq!(
        e.observe(&alert("2", "B", T + 1000, 4.0)),
        Verdict::Duplicate
    );
    assert_eq!(e.open_incidents()[0].alerts, 2);
    assert_eq!(e.counts.duplicates, 1);
}

#[test]
fn bounds_are_enforced() {
    // max_open: a third incident resolves the one quiet longest.
    let cfg = EngineConfig {
        max_open: 2,
        ..told_at_once()
    };
    let mut e = Engine::new(cfg, Topology::new(10));
    let Verdict::Opened(first) = e.observe(&alert("1", "X", T, 4.0)) else {
        panic!()
    };
    e.observe(&alert("2", "Y", T + 1000, 4.0));
    e.observe(&alert("3", "Z", T + 2000, 4.0));
    assert_eq!(e.open_count(), 2);
    assert_eq!(e.counts.evicted, 1);
    let resolved: Vec<_> = e
        .changed()
        .into_iter()
        .filter(|i| i.state == IncidentState::Resolved)
        .collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].id, first);

    // Sources per incident and alert ids per incident: a star around a hub.
    let mut t = Topology::new(1000);
    for i in 0..100 {
        t.observe(&format!("s{i}"), "hub");
    }
    let mut e = engine(t);
    for i in 0..300 {
        e.observe(&alert(
            &format!("a{i}"),
            &format!("s{}", i % 100),
            T + i,
            4.0,
        ));
    }
    let incs = e.open_incidents();
    assert_eq!(incs.len(), 1);
    assert_eq!(incs[0].alerts, 300);
    assert_eq!(incs[0].sources.len(), Incident::MAX_SOURCES);
    assert_eq!(incs[0].suspects.len(), Incident::MAX_SOURCES);
    assert_eq!(incs[0].alert_ids.len(), Incident::MAX_ALERT_IDS);
    assert_eq!(incs[0].alert_ids.last().unwrap(), "a299");
    // Resolved alert ids remembered: bounded too.
    e.advance(T + 60 * MIN);
    let mut t = Topology::new(10);
    t.observe("a", "b");
    let mut e2 = engine(t);
    for i in 0..(MAX_RESOLVED_IDS as i64 + 500) {
        e2.observe(&alert(&format!("r{i}"), "solo", T + i * 11 * MIN, 4.0));
    }
    assert!(e2.resolved_ids.len() <= MAX_RESOLVED_IDS);
    assert_eq!(e2.resolved_ids.len(), e2.resolved_set.len());
}

#[test]
fn ids_are_stable_and_survive_a_restore() {
    let alerts = [
        alert("PROPRIO_TELEMETRY:7", "C", T, 4.0),
        alert("PROPRIO_TELEMETRY:9", "B", T + 2000, 5.0),
    ];
    let mut a = engine(chain());
    let mut b = engine(chain());
    for x in &alerts {
        a.observe(x);
        b.observe(x);
    }
    let (ia, ib) = (a.open_incidents(), b.open_incidents());
    assert_eq!(ia, ib);
    assert_eq!(ia[0].id, incident_id(&alerts[0]));
    assert!(ia[0].id.starts_with("inc-1767225600000-"), "{}", ia[0].id);
    assert_eq!(ia[0].id.len(), "inc-1767225600000-".len() + 8);

    // Persisted, then a new engine restored from it carries on identically.
    for i in a.changed() {
        a.persisted(&i);
    }
    assert!(a.changed().is_empty());
    let mut r = engine(chain());
    r.restore(ia.clone());
    assert_eq!(r.open_incidents(), ia);
    assert_eq!(r.observe(&alerts[1]), Verdict::Duplicate);
    let third = alert("PROPRIO_TELEMETRY:11", "A", T + 3000, 3.0);
    assert_eq!(r.observe(&third), a.observe(&third));
    assert_eq!(r.open_incidents(), a.open_incidents());
}

#[test]
fn persisted_clears_only_the_state_that_was_stored() {
    let mut e = engine(chain());
    e.observe(&alert("1", "C", T, 4.0));
    let before = e.changed();
    e.observe(&alert("2", "B", T + 1000, 4.0));
    e.persisted(&before[0]);
    assert_eq!(e.changed().len(), 1, "changed again since: still to store");
    let now = e.changed();
    e.persisted(&now[0]);
    assert!(e.changed().is_empty());
}

#[test]
fn bad_numbers_from_the_wire_do_not_poison_ranks() {
    let mut e = engine(chain());
    e.observe(&alert("1", "C", T, f32::NAN));
    e.observe(&alert("2", "B", T + 1, f32::INFINITY));
    let inc = &e.open_incidents()[0];
    assert!(inc.score.is_finite());
    assert!(inc.suspects.iter().all(|s| s.rank.is_finite()));
}

fn confirming() -> Engine {
    Engine::new(
        EngineConfig {
            confirm_span_ms: 30_000,
            confirm_alerts: 3,
            confirm_score: 12.0,
            ..Default::default()
        },
        chain(),
    )
}

#[test]
fn an_incident_is_told_only_once_confirmed() {
    // By count: pending through two alerts, told at the third.
    let mut e = confirming();
    e.observe(&alert("1", "C", T, 6.0));
    e.observe(&alert("2", "B", T + 1000, 6.0));
    let c = e.changed();
    assert_eq!(
        (c.len(), c[0].state, e.open_count()),
        (1, IncidentState::Pending, 0)
    );
    assert_eq!(c[0].confirmed_ts, None);
    e.observe(&alert("3", "A", T + 2000, 6.0));
    let c = e.changed();
    assert_eq!(
        (c[0].state, c[0].confirmed_ts),
        (IncidentState::Open, Some(T + 2000))
    );
    assert_eq!(
        (e.open_count(), e.counts.opened, e.counts.pending),
        (1, 1, 1)
    );
    assert_eq!(c[0].opened_ts, T, "the onset stays the first alert's");

    // By span: two alerts 30 s apart.
    let mut e = confirming();
    e.observe(&alert("1", "C", T, 6.0));
    e.observe(&alert("2", "C", T + 29_999, 6.0));
    assert_eq!(e.open_count(), 0);
    e.observe(&alert("3", "C", T + 30_000, 6.0));
    assert_eq!(e.changed()[0].confirmed_ts, Some(T + 30_000));

    // By score: one extreme alert is told alone.
    let mut e = confirming();
    e.observe(&alert("1", "C", T, 12.0));
    assert_eq!(e.changed()[0].state, IncidentState::Open);

    // A silence alert has lasted already, a diagnosis names a known
    // failure: each told alone.
    let mut e = confirming();
    e.observe(&silence("C", T));
    assert_eq!(e.changed()[0].state, IncidentState::Open);
    let mut e = confirming();
    let oom = Alert {
        diagnosis: Some("OOM killed".into()),
        ..alert("1", "C", T, 6.0)
    };
    e.observe(&oom);
    assert_eq!(e.changed()[0].state, IncidentState::Open);

    // A diagnosis that reads a metric's level (a load burst's p99 reads
    // as a latency spike) must last like any surprise.
    for reading in [
        "latency spike",
        "GPU VRAM pressure",
        "metric far from its usual",
    ] {
        let mut e = confirming();
        let a = Alert {
            diagnosis: Some(reading.into()),
            ..alert("1", "C", T, 6.0)
        };
        e.observe(&a);
        assert_eq!(e.changed()[0].state, IncidentState::Pending, "{reading}");
    }
}

#[test]
fn a_pending_incident_that_goes_quiet_is_forgotten() {
    let mut e = confirming();
    e.observe(&alert("1", "C", T, 6.0));
    let stored = e.changed();
    e.persisted(&stored[0]);
    assert_eq!(e.advance(T + 10 * MIN), 1);
    assert!(e.changed().is_empty(), "never told, so nothing to tell");
    let id = stored[0].id.clone();
    assert_eq!(e.dropped(), [id.clone()], "its stored pending state goes");
    e.forgotten(&id);
    assert!(e.dropped().is_empty());
    assert_eq!((e.counts.unconfirmed, e.counts.resolved), (1, 0));
    // Its alert, redelivered, is not counted again.
    assert_eq!(e.observe(&alert("1", "C", T, 6.0)), Verdict::Duplicate);
}

#[test]
fn a_pending_incident_survives_a_restore() {
    let mut a = confirming();
    a.observe(&alert("1", "C", T, 6.0));
    a.observe(&alert("2", "B", T + 1000, 6.0));
    let mut r = confirming();
    r.restore(a.changed());
    assert_eq!(r.open_count(), 0);
    let third = alert("3", "A", T + 2000, 6.0);
    assert_eq!(r.observe(&third), a.observe(&third));
    assert_eq!(r.changed(), a.changed());
    assert_eq!(r.changed()[0].state, IncidentState::Open);
    assert_eq!(r.changed()[0].alerts, 3);
}
