//! The incident: alerts close in time and connected in the topology, made
//! one story with a ranked root cause and a blast radius. Published on
//! `proprio.incident.<id>` each time it opens, grows or resolves (the last
//! message per id is its current state), and kept in the incidents KV so a
//! restart loses none (proto/README.md). Field names are the wire format.

use super::WireError;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum IncidentState {
    Open,
    Resolved,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Resolved => "resolved",
        }
    }
}

/// A root-cause candidate of an incident.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Suspect {
    pub source: String,
    /// Rank score in [0, 1]; suspects are ordered by it, highest first.
    pub rank: f32,
    /// Its first alert in the incident, unix ms.
    pub onset_ts: i64,
    /// Its strongest alert's score.
    pub score: f32,
    /// What it said: a diagnosis label, else the surprising span, else the
    /// alert reason (`silence`).
    pub what: String,
}

/// One incident. `suspects[0]` is the root cause.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Incident {
    /// Stable for the incident's whole life (derived from its first alert).
    pub id: String,
    pub state: IncidentState,
    /// First alert's time, unix ms.
    pub opened_ts: i64,
    /// Latest alert's time, unix ms.
    pub updated_ts: i64,
    /// When the quiet period after the last alert ran out; None while open.
    pub resolved_ts: Option<i64>,
    /// Highest alert score in the incident.
    pub score: f32,
    /// Alerts that joined it.
    pub alerts: u32,
    /// Ranked root-cause candidates, at most [`Incident::MAX_SUSPECTS`].
    pub suspects: Vec<Suspect>,
    /// Blast radius: every source that alerted in it, in onset order,
    /// at most [`Incident::MAX_SOURCES`] (`alerts` still counts all).
    pub sources: Vec<String>,
}

impl Incident {
    pub const MAX_SUSPECTS: usize = 5;
    pub const MAX_SOURCES: usize = 64;

    /// The root cause: the first suspect.
    pub fn root(&self) -> Option<&Suspect> {
        self.suspects.first()
    }

    /// `proprio.incident.<id>`.
    pub fn subject(&self) -> String {
        super::incident_subject(&self.id)
    }

    pub fn to_msgpack(&self) -> Vec<u8> {
        super::to_msgpack(self)
    }

    pub fn to_json(&self) -> String {
        super::to_json(self)
    }

    /// Either form: a JSON object or MessagePack.
    pub fn decode(payload: &[u8]) -> Result<Incident, WireError> {
        super::decode(payload)
    }
}
