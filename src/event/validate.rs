//! Validation: from bytes on a subject to an [`Event`], or a [`Reject`]
//! whose reason names the dead-letter subject. Kept apart from the event
//! types because every limit and refusal rule of the wire contract is here.

use super::{Body, Event, Kind, Phase, Scalar, WireEvent};
use serde::{Deserialize, Serialize};

/// Why an event was refused. The reason names its DLQ subject `proprio.dlq.<reason>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    TooLarge,
    Decode,
    InvalidUtf8,
    MissingField,
    UnknownKind,
    BadValue,
    TooLong,
    TooMany,
    BadTimestamp,
    BadSubject,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::TooLarge,
        Reason::Decode,
        Reason::InvalidUtf8,
        Reason::MissingField,
        Reason::UnknownKind,
        Reason::BadValue,
        Reason::TooLong,
        Reason::TooMany,
        Reason::BadTimestamp,
        Reason::BadSubject,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::Decode => "decode",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::MissingField => "missing_field",
            Reason::UnknownKind => "unknown_kind",
            Reason::BadValue => "bad_value",
            Reason::TooLong => "too_long",
            Reason::TooMany => "too_many",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::BadSubject => "bad_subject",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct Reject {
    pub reason: Reason,
    pub detail: String,
}

fn reject(reason: Reason, detail: impl Into<String>) -> Reject {
    Reject {
        reason,
        detail: detail.into(),
    }
}

/// Limits on what is accepted; past them an event is rejected, never truncated,
/// so that what the model sees is always what was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest payload accepted, in bytes.
    pub max_payload: usize,
    /// Longest identifier (source, key, event, state, names, ...), in bytes.
    pub max_name: usize,
    /// Longest free text (log message, trace summary, attribute value), in bytes.
    pub max_text: usize,
    /// Most entries in `attrs` or `metrics`.
    pub max_entries: usize,
    /// How far from the receiver's clock `ts` may be, in milliseconds (live only).
    pub max_skew_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload: 64 * 1024,
            max_name: 128,
            max_text: 4096,
            max_entries: 64,
            max_skew_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

impl Event {
    /// Decodes a payload received on `subject` (under the telemetry `root`).
    /// MessagePack map first, then a JSON object; on a log subject a payload
    /// that is neither is taken as a raw UTF-8 log line. `now_ms` enables the
    /// timestamp skew check (live traffic); files pass `None`.
    pub fn decode(
        payload: &[u8],
        subject: Option<(&str, &str)>,
        limits: &Limits,
        now_ms: Option<i64>,
    ) -> Result<Event, Reject> {
        if payload.len() > limits.max_payload {
            return Err(reject(
                Reason::TooLarge,
                format!(
                    "payload {} bytes > limit {}",
                    payload.len(),
                    limits.max_payload
                ),
            ));
        }
        let hint = match subject {
            Some((root, s)) => Some(SubjectHint::parse(root, s)?),
            None => None,
        };
        let structured = payload
            .iter()
            .copied()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| b == b'{')
            || matches!(payload.first(), Some(0x80..=0x8f | 0xde | 0xdf));
        let mut wire = match decode_wire(payload) {
            Ok(w) => w,
            // Only a payload that is not structured at all is a raw log line:
            // a malformed map is a decode error, not a message.
            Err(e) if structured => return Err(e),
            Err(e) => match &hint {
                Some(h) if h.kind == Kind::Log => {
                    let line = std::str::from_utf8(payload)
                        .map_err(|_| reject(Reason::InvalidUtf8, "log line is not valid UTF-8"))?;
                    WireEvent {
                        message: Some(line.trim_end_matches(['\r', '\n']).to_string()),
                        ts: now_ms,
                        ..Default::default()
                    }
                }
                _ => return Err(e),
            },
        };
        if hint.is_some() {
            // Labels belong to evaluation files, never to live traffic.
            wire.label = None;
        }
        Event::from_wire(wire, hint.as_ref(), limits, now_ms)
    }

    /// Validates a wire event, filling what the subject says where the payload is silent.
    pub fn from_wire(
        mut w: WireEvent,
        hint: Option<&SubjectHint>,
        limits: &Limits,
        now_ms: Option<i64>,
    ) -> Result<Event, Reject> {
        if let Some(h) = hint {
            match &w.kind {
                None => w.kind = Some(h.kind.as_str().to_string()),
                Some(k) if k != h.kind.as_str() => {
                    return Err(reject(
                        Reason::BadSubject,
                        format!("kind {k:?} published on a {} subject", h.kind),
                    ))
                }
                _ => {}
            }
            if w.source.is_none() {
                w.source = h.source.clone();
            }
            if h.kind == Kind::Flux && w.event.is_none() {
                w.event = h.event.clone();
            }
            if h.kind == Kind::Graph && w.graph.is_none() {
                w.graph = h.graph.clone();
            }
        }
        let kind_s = need(w.kind, "kind")?;
        let kind = Kind::parse(&kind_s)
            .ok_or_else(|| reject(Reason::UnknownKind, format!("unknown kind {kind_s:?}")))?;
        if kind == Kind::Graph && w.source.is_none() {
            w.source = w.graph.clone();
        }
        let ts = need(w.ts, "ts")?;
        if ts < 0 {
            return Err(reject(Reason::BadTimestamp, format!("ts {ts} is negative")));
        }
        if let Some(now) = now_ms {
            if ts.abs_diff(now) > limits.max_skew_ms as u64 {
                return Err(reject(
                    Reason::BadTimestamp,
                    format!("ts {ts} is {} ms from now", ts - now),
                ));
            }
        }
        let source = name(need(w.source, "source")?, "source", limits)?;
        let key = match w.key {
            Some(k) => name(k, "key", limits)?,
            None => source.clone(),
        };
        let body = match kind {
            Kind::Flux => {
                let attrs = w.attrs.unwrap_or_default();
                if attrs.len() > limits.max_entries {
                    return Err(too_many("attrs", attrs.len(), limits));
                }
                for (k, v) in &attrs {
                    check_len(k, "attrs key", limits.max_name)?;
                    match v {
                        Scalar::Str(s) => check_len(s, "attrs value", limits.max_text)?,
                        Scalar::Float(x) if !x.is_finite() => {
                            return Err(reject(Reason::BadValue, format!("attrs.{k} is {x}")))
                        }
                        _ => {}
                    }
                }
                Body::Flux {
                    event: name(need(w.event, "event")?, "event", limits)?,
                    state: w.state.map(|s| name(s, "state", limits)).transpose()?,
                    attrs,
                }
            }
            Kind::Pulse => {
                let metrics = need(w.metrics, "metrics")?;
                if metrics.is_empty() {
                    return Err(reject(Reason::MissingField, "metrics is empty"));
                }
                if metrics.len() > limits.max_entries {
                    return Err(too_many("metrics", metrics.len(), limits));
                }
                for (k, v) in &metrics {
                    check_len(k, "metric name", limits.max_name)?;
                    if !v.is_finite() {
                        return Err(reject(Reason::BadValue, format!("metric {k} is {v}")));
                    }
                }
                Body::Pulse { metrics }
            }
            Kind::Log => Body::Log {
                message: text(need(w.message, "message")?, "message", limits)?,
                level: w.level.map(|s| name(s, "level", limits)).transpose()?,
            },
            Kind::Chronicle => Body::Chronicle {
                actor: name(need(w.actor, "actor")?, "actor", limits)?,
                action: name(need(w.action, "action")?, "action", limits)?,
                target: name(need(w.target, "target")?, "target", limits)?,
                outcome: name(need(w.outcome, "outcome")?, "outcome", limits)?,
            },
            Kind::Trace => {
                let p = need(w.phase, "phase")?;
                let phase = Phase::parse(&p)
                    .ok_or_else(|| reject(Reason::BadValue, format!("unknown phase {p:?}")))?;
                if let Some(d) = w.duration_ms {
                    if !d.is_finite() || d < 0.0 {
                        return Err(reject(Reason::BadValue, format!("duration_ms is {d}")));
                    }
                }
                Body::Trace {
                    phase,
                    request: name(need(w.request, "request")?, "request", limits)?,
                    summary: text(need(w.summary, "summary")?, "summary", limits)?,
                    duration_ms: w.duration_ms,
                }
            }
            Kind::Graph => Body::Graph {
                graph: name(need(w.graph, "graph")?, "graph", limits)?,
                src: name(need(w.src, "src")?, "src", limits)?,
                rel: name(need(w.rel, "rel")?, "rel", limits)?,
                dst: name(need(w.dst, "dst")?, "dst", limits)?,
            },
        };
        Ok(Event {
            ts,
            source,
            key,
            body,
            label: w.label,
        })
    }
}

/// Decodes a MessagePack map or a JSON object into the flat wire form.
pub fn decode_wire(payload: &[u8]) -> Result<WireEvent, Reject> {
    let first = payload.iter().copied().find(|b| !b.is_ascii_whitespace());
    if first == Some(b'{') {
        return serde_json::from_slice::<WireEvent>(payload)
            .map_err(|e| reject(Reason::Decode, format!("JSON: {e}")));
    }
    let is_map = matches!(payload.first(), Some(0x80..=0x8f | 0xde | 0xdf));
    if !is_map {
        return Err(reject(
            Reason::Decode,
            "payload is neither a MessagePack map nor a JSON object",
        ));
    }
    rmp_serde::from_slice::<WireEvent>(payload).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("utf-8") || msg.contains("UTF-8") || msg.contains("Utf8") {
            reject(Reason::InvalidUtf8, format!("MessagePack: {msg}"))
        } else {
            reject(Reason::Decode, format!("MessagePack: {msg}"))
        }
    })
}

/// What a telemetry subject says about its event.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectHint {
    pub kind: Kind,
    pub source: Option<String>,
    pub event: Option<String>,
    pub graph: Option<String>,
}

impl SubjectHint {
    /// Parses `<root>.<kind>.<name>[.<event>]`.
    pub fn parse(root: &str, subject: &str) -> Result<SubjectHint, Reject> {
        let bad = || {
            reject(
                Reason::BadSubject,
                format!("{subject:?} is not a telemetry subject under {root:?}"),
            )
        };
        let rest = subject
            .strip_prefix(root)
            .and_then(|r| r.strip_prefix('.'))
            .ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('.').collect();
        let kind = Kind::parse(parts[0]).ok_or_else(bad)?;
        let name = parts.get(1).map(|s| s.to_string());
        let hint = match (kind, parts.len()) {
            (Kind::Flux, 3) => SubjectHint {
                kind,
                source: name,
                event: Some(parts[2].to_string()),
                graph: None,
            },
            (Kind::Graph, 2) => SubjectHint {
                kind,
                source: None,
                event: None,
                graph: name,
            },
            (Kind::Flux, _) | (Kind::Graph, _) => return Err(bad()),
            (_, 2) => SubjectHint {
                kind,
                source: name,
                event: None,
                graph: None,
            },
            _ => return Err(bad()),
        };
        Ok(hint)
    }
}

fn need<T>(v: Option<T>, field: &str) -> Result<T, Reject> {
    v.ok_or_else(|| reject(Reason::MissingField, format!("missing field `{field}`")))
}

fn check_len(s: &str, field: &str, max: usize) -> Result<(), Reject> {
    if s.len() > max {
        return Err(reject(
            Reason::TooLong,
            format!("{field} is {} bytes > limit {max}", s.len()),
        ));
    }
    Ok(())
}

fn name(s: String, field: &str, limits: &Limits) -> Result<String, Reject> {
    if s.is_empty() {
        return Err(reject(Reason::MissingField, format!("`{field}` is empty")));
    }
    check_len(&s, field, limits.max_name)?;
    Ok(s)
}

fn text(s: String, field: &str, limits: &Limits) -> Result<String, Reject> {
    check_len(&s, field, limits.max_text)?;
    Ok(s)
}

fn too_many(field: &str, n: usize, limits: &Limits) -> Reject {
    reject(
        Reason::TooMany,
        format!("{field} has {n} entries > limit {}", limits.max_entries),
    )
}
