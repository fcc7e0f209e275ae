//! The alert: what proprio publishes on `proprio.alert.<source>` when an
//! event surprises the model or a source falls silent (proto/README.md §3).
//! Field names and order are the wire format.

use super::WireError;
use crate::event::Kind;
use serde::{Deserialize, Serialize};

/// Why an alert was raised.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum AlertReason {
    /// The model found the event surprising: its score passed the threshold.
    Surprise,
    /// The source stopped publishing for longer than its usual interval allows.
    Silence,
    /// The topology check: a known service depends on a known service it
    /// was never seen to (`incident::novelty`); the diagnosis names the edge.
    Topology,
}

impl AlertReason {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertReason::Surprise => "surprise",
            AlertReason::Silence => "silence",
            AlertReason::Topology => "topology",
        }
    }
}

/// Where a score's baseline came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaselineOf {
    Key,
    Kind,
    Global,
    None,
}

/// Its kind's surprisal on normal events, against whose tail the
/// score was read (the baseline module's `Surprise`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AlertBaseline {
    /// Median surprisal of the kind's normal events, in nats.
    pub median: f32,
    /// Their scaled MAD, in nats.
    pub scale: f32,
    /// Whose tail: the event's kind, or every kind pooled (`global`).
    pub of: BaselineOf,
}

/// The most surprising stretch of an event: what the scorer finds and the
/// alert carries, one type for both.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Span {
    /// The span's text, as rendered (special tokens as `<|NAME|>`).
    pub text: String,
    /// First token of the span, counted from the event's first token.
    pub start: usize,
    /// One past the span's last token (half-open: `start..end`).
    pub end: usize,
    /// Mean loss over the span's tokens, in nats.
    pub loss: f32,
}

/// One alert. Field names are the contract (proto/README.md).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Alert {
    /// Dedup id, stable for the same telemetry message so a redelivery never
    /// alerts twice; published as `Nats-Msg-Id`. See [`Alert::id_for_message`]
    /// and [`Alert::id_for_silence`].
    pub id: String,
    /// The event's timestamp (a silence alert: when the silence was noticed), unix ms.
    pub ts: i64,
    pub source: String,
    pub key: String,
    pub kind: Kind,
    /// Calibrated surprise: `-log10` of the share of normal events of its
    /// kind that surprise the model as much (5 = one in 100,000), from the
    /// tail in `baseline`. A silence alert: how many usual intervals passed.
    pub score: f32,
    /// Mean loss per token of the event, in nats.
    pub loss: f32,
    pub baseline: AlertBaseline,
    /// The event as the model saw it (one rendered line).
    pub rendered: String,
    pub span: Span,
    /// A known failure pattern's label, when one matched.
    pub diagnosis: Option<String>,
    /// Version of the model that scored the event.
    pub model: Option<String>,
    pub reason: AlertReason,
    /// The model was trained before the system's fingerprint changed (the
    /// topology or a key file): it still scores while the new epoch's model
    /// is trained, and its alerts say so. On the wire only when true, so
    /// alerts of before the field decode, and encode, as they were.
    #[serde(default, skip_serializing_if = "is_false")]
    pub previous_epoch: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Alert {
    /// `proprio.alert.<source>`, the source made one safe subject token.
    pub fn subject(&self) -> String {
        super::alert_subject(&self.source)
    }

    /// MessagePack map with named fields (the bus form).
    pub fn to_msgpack(&self) -> Vec<u8> {
        super::to_msgpack(self)
    }

    pub fn from_msgpack(payload: &[u8]) -> Result<Alert, rmp_serde::decode::Error> {
        rmp_serde::from_slice(payload)
    }

    /// One JSON object (what `proprio alerts` prints and files hold).
    pub fn to_json(&self) -> String {
        super::to_json(self)
    }

    pub fn from_json(payload: &[u8]) -> Result<Alert, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// Either form: a JSON object (first non-blank byte `{`) or MessagePack.
    pub fn decode(payload: &[u8]) -> Result<Alert, WireError> {
        super::decode(payload)
    }

    /// Dedup id of a surprise alert: the telemetry message's stream and stream
    /// sequence, which JetStream keeps across redeliveries.
    pub fn id_for_message(stream: &str, stream_seq: u64) -> String {
        format!("{stream}:{stream_seq}")
    }

    /// Dedup id of a silence alert: one per source per silence (a silence is
    /// named by the last time the source was heard from).
    pub fn id_for_silence(source: &str, last_seen_ms: i64) -> String {
        format!("silence:{source}:{last_seen_ms}")
    }

    /// The alert in words: its diagnosis, or what surprised the model (the
    /// span without special tokens); what a person reads in a digest or an
    /// incident.
    pub fn in_words(&self) -> String {
        let a = self;
        if let Some(d) = &a.diagnosis {
            return d.clone();
        }
        let span: String = strip_specials(&a.span.text);
        let span = span.trim();
        if span.is_empty() {
            format!("unusual {}", a.kind)
        } else {
            format!("unusual {} '{}'", a.kind, span)
        }
    }
}

/// Text without the tokenizer's special tokens (`<|NAME|>`), spaces collapsed.
pub fn strip_specials(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("<|") {
        out.push_str(&rest[..i]);
        match rest[i..].find("|>") {
            Some(j) => {
                out.push(' ');
                rest = &rest[i + j + 2..];
            }
            None => {
                rest = &rest[i..];
                break;
            }
        }
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}
