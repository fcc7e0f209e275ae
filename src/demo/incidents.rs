//! The demo's view of incidents (`proprio.incident.<id>`, proto/README.md):
//! printed as they open and resolve, counted in the summary with the same
//! rule as alerts. Nothing here needs an incident to arrive: with none, the
//! summary says so.
//!
//! The wire type itself (`contract::incident::Incident`), decoded as every
//! subscriber decodes it.

use super::tally::{tally, Sighting, Tally};
use crate::contract::incident::Incident;
use crate::sim::Fault;

/// Every incident's subject.
pub const SUBJECT: &str = crate::contract::SUBJECT_INCIDENTS_ALL;

/// One line: root cause and blast radius.
pub fn describe(i: &Incident) -> String {
    let root = match i.root() {
        Some(s) if s.what.is_empty() => s.source.clone(),
        Some(s) => format!("{} ({})", s.source, super::shorten(&s.what, 40)),
        None => "no suspect".into(),
    };
    format!(
        "{:<8} root {root}; blast radius {} source(s), {} alert(s)",
        i.state.as_str(),
        i.sources.len(),
        i.alerts
    )
}

/// Incidents against faults: the [`Tally`] of their (time, blast radius),
/// and per fault whether the incident that caught it names a source of the
/// fault as its root cause (None: not caught by an incident).
pub fn judge(
    incidents: &[(Incident, i64)],
    faults: &[Fault],
    grace_ms: i64,
) -> (Tally, Vec<Option<bool>>) {
    let seen: Vec<Sighting> = incidents
        .iter()
        .map(|(i, ts)| Sighting {
            ts: *ts,
            sources: i.sources.clone(),
        })
        .collect();
    let t = tally(&seen, faults, grace_ms);
    let root_hit = faults
        .iter()
        .zip(&t.first)
        .map(|(f, first)| {
            first.map(|j| {
                incidents[j]
                    .0
                    .root()
                    .is_some_and(|r| f.sources.contains(&r.source))
            })
        })
        .collect();
    (t, root_hit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::tally::tests::fault;

    #[test]
    fn decodes_the_wire_form_and_judges_root_causes() {
        // The wire type's JSON.
        let json = br#"{"id":"inc-1","state":"open","opened_ts":150000,"updated_ts":160000,
            "resolved_ts":null,"score":9.5,"alerts":3,
            "suspects":[{"source":"db","rank":0.9,"onset_ts":150000,"score":9.5,"alerts":3,"what":"state=crashed"}],
            "sources":["db","api"],"alert_ids":["a1"]}"#;
        let i = Incident::decode(json).unwrap();
        assert_eq!(i.root().unwrap().source, "db");
        assert_eq!(i.state, crate::contract::incident::IncidentState::Open);
        assert!(describe(&i).contains("root db (state=crashed); blast radius 2"));
        let mp =
            rmp_serde::to_vec_named(&serde_json::from_slice::<serde_json::Value>(json).unwrap())
                .unwrap();
        assert_eq!(Incident::decode(&mp).ok(), Some(i.clone()));
        assert!(Incident::decode(b"\xc1 not an incident").is_err());

        let mut wrong_root = i.clone();
        wrong_root.suspects[0].source = "api".into();
        let faults = [
            fault("f", 100_000, 200_000, &["db"]),
            fault("f", 100_000, 200_000, &["api"]),
        ];
        let (t, hits) = judge(&[(i.clone(), 150_000)], &faults, 60_000);
        assert_eq!((t.caught(), t.false_count()), (2, 0));
        assert_eq!(hits, [Some(true), Some(false)]);
        let (t, hits) = judge(&[(wrong_root, 900_000)], &faults, 60_000);
        assert_eq!((t.caught(), t.false_count()), (0, 1));
        assert_eq!(hits, [None, None]);
    }
}
