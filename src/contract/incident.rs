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
    /// Not yet confirmed (see `incident::EngineConfig`): kept in the
    /// incidents KV so a restart resumes it, never published.
    Pending,
    Open,
    Resolved,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Pending => "pending",
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
    /// Its alerts in the incident.
    pub alerts: u32,
    /// What it said: a diagnosis label, else the surprising span, else the
    /// alert reason (`silence`).
    pub what: String,
}

/// One incident. `suspects[0]` is the root cause.
///
/// Self-contained on purpose: the incidents role rebuilds an open incident
/// from this alone after a restart (every member's evidence is in
/// `suspects`, the alerts already counted in `alert_ids`), so the KV value
/// is the whole state and there is no second, private form to keep in step.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Incident {
    /// Stable for the incident's whole life (derived from its first alert).
    pub id: String,
    pub state: IncidentState,
    /// First alert's time, unix ms.
    pub opened_ts: i64,
    /// Latest alert's time, unix ms.
    pub updated_ts: i64,
    /// When it met the confirmation rule and was first published, unix ms
    /// (time to detect runs to here); None while pending, and in states
    /// stored before confirmation existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_ts: Option<i64>,
    /// When the quiet period after the last alert ran out; None while open.
    pub resolved_ts: Option<i64>,
    /// Highest alert score in the incident.
    pub score: f32,
    /// Alerts that joined it.
    pub alerts: u32,
    /// Every member source as a root-cause candidate, ranked (highest
    /// first; see `incident::rank` for the formula), at most
    /// [`Incident::MAX_SOURCES`].
    pub suspects: Vec<Suspect>,
    /// Blast radius: every source that alerted in it, in onset order,
    /// at most [`Incident::MAX_SOURCES`] (`alerts` still counts all).
    pub sources: Vec<String>,
    /// Ids of its most recent alerts, oldest first, at most
    /// [`Incident::MAX_ALERT_IDS`]: where to find the alerts themselves,
    /// and how a redelivered alert is recognised and not counted twice.
    pub alert_ids: Vec<String>,
}

impl Incident {
    pub const MAX_SOURCES: usize = 64;
    pub const MAX_ALERT_IDS: usize = 256;

    /// The root cause: the first suspect.
    pub fn root(&self) -> Option<&Suspect> {
        self.suspects.first()
    }

    /// `proprio.incident.<id>`.
    pub fn subject(&self) -> String {
        super::incident_subject(&self.id)
    }

    /// `Nats-Msg-Id` of this state on the incidents stream,
    /// `<id>:<alerts>:<state>`: one message per state, however often a
    /// restarted role stores it again.
    pub fn msg_id(&self) -> String {
        format!("{}:{}:{}", self.id, self.alerts, self.state.as_str())
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
