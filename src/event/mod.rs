//! The wire event: what services publish, as proto/README.md specifies.
//!
//! Two layers: [`WireEvent`] is the lenient, flat form that serde reads from
//! MessagePack or JSON (every field optional, so a missing field is *our*
//! clear error, not a serde one); [`Event`] is the validated form the rest of
//! proprio works with. Nothing that arrives over the wire can panic here:
//! every failure is a [`Reject`] with a reason that names its DLQ subject.

mod validate;

pub use validate::{decode_wire, Limits, Reason, Reject, SubjectHint};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The six kinds of telemetry, one per subject family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Flux,
    Pulse,
    Log,
    Chronicle,
    Trace,
    Graph,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Flux,
        Kind::Pulse,
        Kind::Log,
        Kind::Chronicle,
        Kind::Trace,
        Kind::Graph,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Flux => "flux",
            Kind::Pulse => "pulse",
            Kind::Log => "log",
            Kind::Chronicle => "chronicle",
            Kind::Trace => "trace",
            Kind::Graph => "graph",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The orchestrator's SixPillars reasoning phases, in cycle order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Perceive,
    Remember,
    Reason,
    Plan,
    Act,
    Learn,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Perceive,
        Phase::Remember,
        Phase::Reason,
        Phase::Plan,
        Phase::Act,
        Phase::Learn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Perceive => "perceive",
            Phase::Remember => "remember",
            Phase::Reason => "reason",
            Phase::Plan => "plan",
            Phase::Act => "act",
            Phase::Learn => "learn",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// An attribute value on a flux event: scalars only, so rendering stays one line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => f.write_str(s),
        }
    }
}

/// The flat wire form. Field names are the contract (proto/README.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WireEvent {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    // flux
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attrs: Option<BTreeMap<String, Scalar>>,
    // pulse
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<BTreeMap<String, f64>>,
    // log
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    // chronicle
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    // trace
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    // graph
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// Only in event files: absent or null = normal, otherwise a fault id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// What an event says, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Flux {
        event: String,
        state: Option<String>,
        attrs: BTreeMap<String, Scalar>,
    },
    Pulse {
        metrics: BTreeMap<String, f64>,
    },
    Log {
        message: String,
        level: Option<String>,
    },
    Chronicle {
        actor: String,
        action: String,
        target: String,
        outcome: String,
    },
    Trace {
        phase: Phase,
        request: String,
        summary: String,
        duration_ms: Option<f64>,
    },
    Graph {
        graph: String,
        src: String,
        rel: String,
        dst: String,
    },
}

/// A validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unix milliseconds.
    pub ts: i64,
    pub source: String,
    /// The context the event is scored in; defaults to `source`.
    pub key: String,
    pub body: Body,
    /// Fault id in labelled files; never reaches the model.
    pub label: Option<String>,
}

impl Event {
    pub fn kind(&self) -> Kind {
        match self.body {
            Body::Flux { .. } => Kind::Flux,
            Body::Pulse { .. } => Kind::Pulse,
            Body::Log { .. } => Kind::Log,
            Body::Chronicle { .. } => Kind::Chronicle,
            Body::Trace { .. } => Kind::Trace,
            Body::Graph { .. } => Kind::Graph,
        }
    }

    /// The flat wire form (what is written to files and published).
    pub fn to_wire(&self) -> WireEvent {
        let mut w = WireEvent {
            ts: Some(self.ts),
            source: Some(self.source.clone()),
            kind: Some(self.kind().as_str().to_string()),
            key: (self.key != self.source).then(|| self.key.clone()),
            label: self.label.clone(),
            ..Default::default()
        };
        match &self.body {
            Body::Flux {
                event,
                state,
                attrs,
            } => {
                w.event = Some(event.clone());
                w.state = state.clone();
                w.attrs = (!attrs.is_empty()).then(|| attrs.clone());
            }
            Body::Pulse { metrics } => w.metrics = Some(metrics.clone()),
            Body::Log { message, level } => {
                w.message = Some(message.clone());
                w.level = level.clone();
            }
            Body::Chronicle {
                actor,
                action,
                target,
                outcome,
            } => {
                w.actor = Some(actor.clone());
                w.action = Some(action.clone());
                w.target = Some(target.clone());
                w.outcome = Some(outcome.clone());
            }
            Body::Trace {
                phase,
                request,
                summary,
                duration_ms,
            } => {
                w.phase = Some(phase.as_str().to_string());
                w.request = Some(request.clone());
                w.summary = Some(summary.clone());
                w.duration_ms = *duration_ms;
            }
            Body::Graph {
                graph,
                src,
                rel,
                dst,
            } => {
                w.graph = Some(graph.clone());
                w.src = Some(src.clone());
                w.rel = Some(rel.clone());
                w.dst = Some(dst.clone());
            }
        }
        w
    }

    /// MessagePack map with named fields (the bus form). The label is not sent.
    pub fn to_msgpack(&self) -> Vec<u8> {
        let mut w = self.to_wire();
        w.label = None;
        rmp_serde::to_vec_named(&w).expect("serializing a WireEvent to a Vec cannot fail")
    }

    /// One JSON object (the file form, label included).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.to_wire()).expect("serializing a WireEvent cannot fail")
    }

    /// The subject this event is published on under `root`.
    pub fn subject(&self, root: &str) -> String {
        let s = subject_token(&self.source);
        match &self.body {
            Body::Flux { event, .. } => format!("{root}.flux.{s}.{}", subject_token(event)),
            Body::Pulse { .. } => format!("{root}.pulse.{s}"),
            Body::Log { .. } => format!("{root}.log.{s}"),
            Body::Chronicle { .. } => format!("{root}.chronicle.{s}"),
            Body::Trace { .. } => format!("{root}.trace.{s}"),
            Body::Graph { graph, .. } => format!("{root}.graph.{}", subject_token(graph)),
        }
    }
}

/// Makes a name safe as one subject token (no dots, spaces or wildcards).
pub fn subject_token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| match c {
            '.' | ' ' | '*' | '>' | '\t' | '\r' | '\n' => '_',
            c => c,
        })
        .collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

/// Reads a JSON-lines event file. Blank lines are skipped; a bad line is an
/// error naming its line number.
pub fn read_jsonl(path: &std::path::Path) -> anyhow::Result<Vec<Event>> {
    use anyhow::Context;
    use std::io::BufRead;
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let limits = Limits::default();
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let ev = Event::decode(line.as_bytes(), None, &limits, None)
            .with_context(|| format!("{}:{}", path.display(), i + 1))?;
        out.push(ev);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_fills_missing_fields() {
        let p = br#"{"ts": 5, "state": "healthy"}"#;
        let e = Event::decode(
            p,
            Some(("os", "os.flux.AitherMind.started")),
            &Limits::default(),
            None,
        )
        .unwrap();
        assert_eq!(e.source, "AitherMind");
        assert_eq!(e.key, "AitherMind");
        assert!(matches!(e.body, Body::Flux { ref event, .. } if event == "started"));
    }

    #[test]
    fn raw_log_line() {
        let e = Event::decode(
            b"OOMKilled\n",
            Some(("os", "os.log.a")),
            &Limits::default(),
            Some(9),
        )
        .unwrap();
        assert_eq!(e.ts, 9);
        assert!(matches!(e.body, Body::Log { ref message, .. } if message == "OOMKilled"));
    }
}
