//! The wire contract (proto/README.md) in code: every subject, JetStream
//! name, header and payload type that crosses the bus, each defined once.
//!
//! Roles and tools name things through here rather than spelling strings,
//! so a rename is one edit and the README has one place to be checked
//! against. This module depends on nothing in the crate but the event's
//! subject-token rule, so anything may depend on it.

pub mod alert;
pub mod digest;
pub mod incident;

use crate::event::subject_token;
use serde::{Deserialize, Serialize};

/// Telemetry root when none is configured: `os.flux.<source>.<event>`, ...
pub const DEFAULT_ROOT: &str = "os";

pub const STREAM_TELEMETRY: &str = "PROPRIO_TELEMETRY";
pub const STREAM_CURRICULUM: &str = "PROPRIO_CURRICULUM";
pub const STREAM_ALERTS: &str = "PROPRIO_ALERTS";
pub const STREAM_DLQ: &str = "PROPRIO_DLQ";
pub const STREAM_INCIDENTS: &str = "PROPRIO_INCIDENTS";
/// The telemetry partitioned by source for scorer replicas
/// (`scorer.partitions` of 2 or more), on `proprio.score.<p>.<subject>`.
pub const STREAM_SCORING: &str = "PROPRIO_SCORING";
pub const SUBJECT_SCORING_PREFIX: &str = "proprio.score";

pub const BUCKET_STATE: &str = "proprio-state";
pub const BUCKET_MODELS: &str = "proprio-models";
/// Incidents by id (their current state), so a restart loses none.
pub const BUCKET_INCIDENTS: &str = "proprio-incidents";
/// Live partitioned scorer replicas, a key each, expiring unless renewed.
pub const BUCKET_SCORERS: &str = "proprio-scorers";

pub const KEY_DIGEST: &str = "digest";
pub const KEY_DIGEST_JSON: &str = "digest.json";
pub const KEY_MODEL: &str = "model";
pub const KEY_TRAINER_LOCK: &str = "trainer.lock";
/// The fingerprint epoch the trainer sees now ([`EpochNotice`]).
pub const KEY_EPOCH: &str = "epoch";
pub const KEY_MUTE_PREFIX: &str = "mute.";

pub const CONSUMER_HARVESTER: &str = "proprio-harvester";
pub const CONSUMER_SCORER: &str = "proprio-scorer";
pub const CONSUMER_INCIDENTS: &str = "proprio-incidents";

/// Subscribers read alerts on `proprio.alert.<source>`.
pub const SUBJECT_ALERT_PREFIX: &str = "proprio.alert";
pub const SUBJECT_ALERTS_ALL: &str = "proprio.alert.>";
/// Where roles publish an alert: the alerts stream stores it (deduplicated
/// by its id) and only then republishes it on `proprio.alert.<source>`, so a
/// subscriber sees an alert once even when a redelivered event or a second
/// replica raises it again. The stream's messages carry these subjects.
pub const SUBJECT_RAISE_PREFIX: &str = "proprio.raise";
pub const SUBJECT_RAISE_ALL: &str = "proprio.raise.>";
/// Incidents on `proprio.incident.<id>`, each open, update and resolve.
pub const SUBJECT_INCIDENT_PREFIX: &str = "proprio.incident";
pub const SUBJECT_INCIDENTS_ALL: &str = "proprio.incident.>";
/// The digest's text form.
pub const SUBJECT_DIGEST: &str = "proprio.digest";
pub const SUBJECT_TICK_TRAIN: &str = "proprio.tick.train";
pub const SUBJECT_DLQ_PREFIX: &str = "proprio.dlq";
pub const SUBJECT_DLQ_ALL: &str = "proprio.dlq.>";
pub const SUBJECT_MODEL_PUBLISHED: &str = "proprio.model.published";
pub const SUBJECT_CURRICULUM_PREFIX: &str = "proprio.curriculum";
pub const SUBJECT_CURRICULUM_ALL: &str = "proprio.curriculum.>";

/// Headers of a dead-lettered message (its payload is the original bytes).
pub const HEADER_REASON: &str = "Proprio-Reason";
pub const HEADER_DETAIL: &str = "Proprio-Detail";
pub const HEADER_SUBJECT: &str = "Proprio-Subject";
/// Set when a dead letter's payload was cut: the original length in bytes.
pub const HEADER_TRUNCATED: &str = "Proprio-Truncated";
/// Most payload bytes kept in a dead letter.
pub const DLQ_MAX_PAYLOAD: usize = 256 * 1024;

/// `proprio.alert.<source>`, the source made one safe subject token.
pub fn alert_subject(source: &str) -> String {
    format!("{SUBJECT_ALERT_PREFIX}.{}", subject_token(source))
}

/// `proprio.raise.<source>`: where an alert is published to be stored once.
pub fn raise_subject(source: &str) -> String {
    format!("{SUBJECT_RAISE_PREFIX}.{}", subject_token(source))
}

/// `proprio.incident.<id>` (ids are already safe subject tokens).
pub fn incident_subject(id: &str) -> String {
    format!("{SUBJECT_INCIDENT_PREFIX}.{}", subject_token(id))
}

pub fn dlq_subject(reason: &str) -> String {
    format!("{SUBJECT_DLQ_PREFIX}.{}", subject_token(reason))
}

/// `proprio.curriculum.<curriculum>`, from the curriculum's name.
pub fn curriculum_subject(curriculum: &str) -> String {
    format!("{SUBJECT_CURRICULUM_PREFIX}.{curriculum}")
}

/// KV keys allow only `[-/_=.a-zA-Z0-9]`; anything else in a source name is
/// replaced so that every source can be muted, at the cost of two exotic
/// names sharing a mute.
pub fn mute_key(source: &str) -> String {
    let safe: String = source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=' | '/') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{KEY_MUTE_PREFIX}{safe}")
}

/// What the trainer publishes about a model: JSON in KV `model` and on
/// `proprio.model.published`, where scorers act on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelNotice {
    pub version: String,
    /// Object name in `proprio-models`.
    pub object: String,
    /// SHA-256 of the checkpoint bytes.
    pub sha256: String,
    pub fingerprint: String,
    pub step: u64,
    pub train_loss: f32,
    pub val_loss: f32,
    pub created_at_ms: i64,
    pub cold_start: bool,
}

/// The fingerprint epoch of the system as the trainer last read its key
/// files: JSON in KV `epoch`. A scorer whose model was trained under another
/// one marks its alerts as from the previous epoch until a model of this one
/// is published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochNotice {
    pub fingerprint: String,
    /// When the trainer first saw it, unix ms: new-epoch telemetry is
    /// harvested from about then.
    pub since_ms: i64,
}

/// A payload that is not an alert (or digest) in either wire form.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("MessagePack: {0}")]
    Msgpack(#[from] rmp_serde::decode::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Decodes either wire form of `T`: a JSON object (first non-blank byte `{`)
/// or a MessagePack map.
fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    let json = payload.iter().copied().find(|b| !b.is_ascii_whitespace()) == Some(b'{');
    if json {
        Ok(serde_json::from_slice(payload)?)
    } else {
        Ok(rmp_serde::from_slice(payload)?)
    }
}

/// MessagePack map with named fields (the bus form).
fn to_msgpack<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("serializing a wire type to a Vec cannot fail")
}

/// One JSON object.
fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializing a wire type cannot fail")
}
