//! The demo's view of incidents (`proprio.incident.<id>`, proto/README.md):
//! printed as they open and resolve, counted in the summary with the same
//! rule as alerts. Nothing here needs an incident to arrive: with none, the
//! summary says so.
//!
//! A tolerant reader: only the fields the demo prints, so it decodes every
//! version of the wire type (`contract::incident::Incident`) that has them.

use super::tally::{tally, Sighting, Tally};
use crate::sim::Fault;
use serde::Deserialize;

/// Every incident's subject.
pub const SUBJECT: &str = crate::contract::SUBJECT_INCIDENTS_ALL;

#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Suspect {
    pub source: String,
    #[serde(default)]
    pub what: String,
}

/// The fields of an incident the demo reads.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct IncidentView {
    pub id: String,
    /// `open` or `resolved`.
    pub state: String,
    /// Its first alert's time, unix ms.
    pub opened_ts: i64,
    #[serde(default)]
    pub alerts: u32,
    /// Ranked root-cause candidates: the first is the root cause.
    #[serde(default)]
    pub suspects: Vec<Suspect>,
    /// Blast radius: every source that alerted in it.
    #[serde(default)]
    pub sources: Vec<String>,
}

impl IncidentView {
    /// JSON or MessagePack (a map with named fields), as every contract type.
    pub fn decode(payload: &[u8]) -> Option<IncidentView> {
        let first = payload.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'{') {
            serde_json::from_slice(payload).ok()
        } else {
            rmp_serde::from_slice(payload).ok()
        }
    }

    pub fn root(&self) -> Option<&Suspect> {
        self.suspects.first()
    }

    pub fn resolved(&self) -> bool {
        self.state == "resolved"
    }

    /// One line: root cause and blast radius.
    pub fn describe(&self) -> String {
        let root = match self.root() {
            Some(s) if s.what.is_empty() => s.source.clone(),
            Some(s) => format!("{} ({})", s.source, super::shorten(&s.what, 40)),
            None => "no suspect".into(),
        };
        format!(
            "{:<8} root {root}; blast radius {} source(s), {} alert(s)",
            self.state,
            self.sources.len(),
            self.alerts
        )
    }
}

/// Incidents against faults: the [`Tally`] of their (time, blast radius),
/// and per fault whether the incident that caught it names a source of the
/// fault as its root cause (None: not caught by an incident).
pub fn judge(
    incidents: &[(IncidentView, i64)],
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
    use crate::sim::FaultKind;

    fn fault(start: i64, end: i64, sources: &[&str]) -> Fault {
        Fault {
            id: "f".into(),
            kind: FaultKind::ALL[0],
            start_ms: start,
            end_ms: end,
            sources: sources.iter().map(|s| s.to_string()).collect(),
            root: sources.first().map(|s| s.to_string()),
            registry_after: None,
        }
    }

    #[test]
    fn decodes_the_wire_form_and_judges_root_causes() {
        // The wire type's JSON, with fields the view does not read.
        let json = br#"{"id":"inc-1","state":"open","opened_ts":150000,"updated_ts":160000,
            "resolved_ts":null,"score":9.5,"alerts":3,
            "suspects":[{"source":"db","rank":0.9,"onset_ts":150000,"score":9.5,"what":"state=crashed"}],
            "sources":["db","api"]}"#;
        let i = IncidentView::decode(json).unwrap();
        assert_eq!(i.root().unwrap().source, "db");
        assert!(!i.resolved());
        assert!(i
            .describe()
            .contains("root db (state=crashed); blast radius 2"));
        let mp =
            rmp_serde::to_vec_named(&serde_json::from_slice::<serde_json::Value>(json).unwrap())
                .unwrap();
        assert_eq!(IncidentView::decode(&mp), Some(i.clone()));
        assert_eq!(IncidentView::decode(b"\xc1 not an incident"), None);

        let mut wrong_root = i.clone();
        wrong_root.suspects[0].source = "api".into();
        let faults = [
            fault(100_000, 200_000, &["db"]),
            fault(100_000, 200_000, &["api"]),
        ];
        let (t, hits) = judge(&[(i.clone(), 150_000)], &faults, 60_000);
        assert_eq!((t.caught(), t.false_count()), (2, 0));
        assert_eq!(hits, [Some(true), Some(false)]);
        let (t, hits) = judge(&[(wrong_root, 900_000)], &faults, 60_000);
        assert_eq!((t.caught(), t.false_count()), (0, 1));
        assert_eq!(hits, [None, None]);
    }
}
