//! The alert: what the scorer publishes on `proprio.alert.<source>` when an
//! event surprises the model (or a source falls silent), and the [`Diagnoser`]
//! that names known failure patterns in it. The schema is proto/README.md's.

use crate::baseline::BaselineOf;
use crate::event::{subject_token, Body, Event, Kind};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Alerts are published on `proprio.alert.<source>`.
pub const SUBJECT_PREFIX: &str = "proprio.alert";

/// Why an alert was raised.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum AlertReason {
    /// The model found the event surprising: its score passed the threshold.
    Surprise,
    /// The source stopped publishing for longer than its usual interval allows.
    Silence,
}

impl AlertReason {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertReason::Surprise => "surprise",
            AlertReason::Silence => "silence",
        }
    }
}

/// The baseline the loss was scored against.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AlertBaseline {
    pub median: f32,
    pub scale: f32,
    pub of: BaselineOf,
}

/// The most surprising stretch of the event.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
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
    /// Robust z-score of `loss` against `baseline`.
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
}

/// A payload that is not an alert (or digest) in either wire form.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("MessagePack: {0}")]
    Msgpack(#[from] rmp_serde::decode::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Alert {
    /// `proprio.alert.<source>`, the source made one safe subject token.
    pub fn subject(&self) -> String {
        format!("{SUBJECT_PREFIX}.{}", subject_token(&self.source))
    }

    /// MessagePack map with named fields (the bus form).
    pub fn to_msgpack(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("serializing an Alert to a Vec cannot fail")
    }

    pub fn from_msgpack(payload: &[u8]) -> Result<Alert, rmp_serde::decode::Error> {
        rmp_serde::from_slice(payload)
    }

    /// One JSON object (what `proprio alerts` prints and files hold).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("serializing an Alert cannot fail")
    }

    pub fn from_json(payload: &[u8]) -> Result<Alert, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// Either form: a JSON object (first non-blank byte `{`) or MessagePack.
    pub fn decode(payload: &[u8]) -> Result<Alert, WireError> {
        if is_json(payload) {
            Ok(Alert::from_json(payload)?)
        } else {
            Ok(Alert::from_msgpack(payload)?)
        }
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
}

/// True when the payload is a JSON object (first non-blank byte `{`).
pub(crate) fn is_json(payload: &[u8]) -> bool {
    payload.iter().copied().find(|b| !b.is_ascii_whitespace()) == Some(b'{')
}

/// One diagnosis rule: a regex over the event's text, and the label it gives.
/// The label may use the regex's captures (`$1`, `$name`, `${name}`; `$$` is a
/// literal `$`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub pattern: String,
    pub label: String,
}

impl Pattern {
    pub fn new(pattern: impl Into<String>, label: impl Into<String>) -> Pattern {
        Pattern {
            pattern: pattern.into(),
            label: label.into(),
        }
    }
}

/// A pattern that cannot be used, named by its position in the list.
#[derive(Debug, thiserror::Error)]
pub enum DiagnoserError {
    #[error("diagnosis pattern #{index} {pattern:?} is not a valid regex: {source}")]
    BadRegex {
        index: usize,
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error("diagnosis pattern #{index} {pattern:?} has an empty label")]
    EmptyLabel { index: usize, pattern: String },
    #[error("diagnosis pattern #{index} {pattern:?}: label {label:?} refers to capture group `{group}`, which the regex does not have")]
    UnknownGroup {
        index: usize,
        pattern: String,
        label: String,
        group: String,
    },
}

/// Names known failure patterns: the first rule whose regex matches gives the
/// diagnosis. [`Diagnoser::default`] holds [`Diagnoser::default_patterns`].
#[derive(Debug, Clone)]
pub struct Diagnoser {
    rules: Vec<(Regex, Pattern)>,
}

impl Default for Diagnoser {
    fn default() -> Self {
        Diagnoser::new(&Diagnoser::default_patterns()).expect("the default patterns are valid")
    }
}

impl Diagnoser {
    /// The built-in rules, most specific first.
    pub fn default_patterns() -> Vec<Pattern> {
        vec![
            Pattern::new(
                r"(?i)\bOOM[-_ ]?kill(?:ed|er)?\b|\bout of memory\b|exit code 137\b",
                "OOM killed",
            ),
            Pattern::new(
                r"(?i)address already in use|\bEADDRINUSE\b|\bport \d+ (?:is )?already (?:in use|allocated)",
                "port conflict",
            ),
            Pattern::new(
                r"(?i)(?:connection refused|ECONNREFUSED|connect: refused)[^\n]{0,160}?(?:\blocalhost\b|\b127\.0\.0\.1\b|\[::1\])|(?:\blocalhost\b|\b127\.0\.0\.1\b|\[::1\])[^\n]{0,160}?(?:connection refused|ECONNREFUSED)",
                "localhost trap",
            ),
            Pattern::new(
                r"(?i)crash ?loop|back-?off restarting|restart(?:ed|ing)? too (?:often|quickly)|restart loop",
                "crash loop",
            ),
            Pattern::new(
                r"(?i)vram(?:[_ ]?(?:pct|percent|util(?:ization)?|usage|used))*\s*(?:[=:]|\bat\b|\bis\b)?\s*(?P<pct>9\d|100)(?:\.\d+)?\s*%?(?:[^\d.]|$)",
                "GPU VRAM pressure",
            ),
            Pattern::new(
                concat!(
                    // latency_p99_ms=2950, the rendered form latency_p99_ms=2.9k,
                    // "latency 3200 ms", "latency of 3.2s"
                    r"(?i)latency\w*_ms\s*[=:]?\s*(?:[1-9]\d{3,}(?:\.\d+)?|\d+(?:\.\d+)?(?-i:[kMGT]))(?:[^\w.]|$)",
                    r"|latency\w*\s*(?:[=:]|\bof\b|\bis\b)?\s*(?:[1-9]\d{3,}(?:\.\d+)?\s*ms|[1-9]\d*(?:\.\d+)?\s*s)\b",
                ),
                "latency spike",
            ),
            Pattern::new(r"(?i)no space left on device|\bdisk full\b", "disk full"),
            Pattern::new(
                r"(?i)connection refused|\bECONNREFUSED\b",
                "dependency unreachable",
            ),
        ]
    }

    /// Compiles `patterns` in order; a bad regex, an empty label or a label
    /// naming a capture group the regex lacks is an error naming the pattern.
    pub fn new(patterns: &[Pattern]) -> Result<Diagnoser, DiagnoserError> {
        let mut rules = Vec::with_capacity(patterns.len());
        for (index, p) in patterns.iter().enumerate() {
            let re = Regex::new(&p.pattern).map_err(|source| DiagnoserError::BadRegex {
                index,
                pattern: p.pattern.clone(),
                source,
            })?;
            if p.label.trim().is_empty() {
                return Err(DiagnoserError::EmptyLabel {
                    index,
                    pattern: p.pattern.clone(),
                });
            }
            for group in label_groups(&p.label) {
                let known = match group.parse::<usize>() {
                    Ok(i) => i < re.captures_len(),
                    Err(_) => re.capture_names().flatten().any(|n| n == group),
                };
                if !known {
                    return Err(DiagnoserError::UnknownGroup {
                        index,
                        pattern: p.pattern.clone(),
                        label: p.label.clone(),
                        group,
                    });
                }
            }
            rules.push((re, p.clone()));
        }
        Ok(Diagnoser { rules })
    }

    /// `extra` rules first (so they win), then the defaults.
    pub fn with_defaults(extra: &[Pattern]) -> Result<Diagnoser, DiagnoserError> {
        let mut all = extra.to_vec();
        all.extend(Diagnoser::default_patterns());
        Diagnoser::new(&all)
    }

    pub fn patterns(&self) -> impl Iterator<Item = &Pattern> {
        self.rules.iter().map(|(_, p)| p)
    }

    /// The label of the first rule matching `text`, captures expanded.
    pub fn diagnose(&self, text: &str) -> Option<String> {
        self.rules.iter().find_map(|(re, p)| {
            re.captures(text).map(|caps| {
                let mut out = String::new();
                caps.expand(&p.label, &mut out);
                out
            })
        })
    }

    /// Diagnoses an event from its plain text ([`event_text`]), which keeps the
    /// numbers a rendered line may have replaced by tokens.
    pub fn diagnose_event(&self, ev: &Event) -> Option<String> {
        self.diagnose(&event_text(ev))
    }
}

/// The capture groups a label refers to, as `regex::Captures::expand` reads them.
fn label_groups(label: &str) -> Vec<String> {
    let b = label.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => i += 2,
            Some(b'{') => match label[i + 2..].find('}') {
                Some(end) => {
                    out.push(label[i + 2..i + 2 + end].to_string());
                    i += 2 + end + 1;
                }
                None => i += 1,
            },
            _ => {
                let name: String = label[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                i += 1 + name.len();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// An event as plain, one-line text for pattern matching: the values as sent
/// (`name=value` for metrics and attributes), no special tokens.
pub fn event_text(ev: &Event) -> String {
    let mut s = String::new();
    match &ev.body {
        Body::Flux {
            event,
            state,
            attrs,
        } => {
            s.push_str(event);
            if let Some(st) = state {
                let _ = write!(s, " state={st}");
            }
            for (k, v) in attrs {
                let _ = write!(s, " {k}={v}");
            }
        }
        Body::Pulse { metrics } => {
            for (i, (k, v)) in metrics.iter().enumerate() {
                let sep = if i == 0 { "" } else { " " };
                let _ = write!(s, "{sep}{k}={v}");
            }
        }
        Body::Log { message, level } => {
            if let Some(l) = level {
                let _ = write!(s, "{l}: ");
            }
            s.push_str(message);
        }
        Body::Chronicle {
            actor,
            action,
            target,
            outcome,
        } => {
            let _ = write!(s, "{actor} {action} {target} {outcome}");
        }
        Body::Trace {
            phase,
            request,
            summary,
            duration_ms,
        } => {
            let _ = write!(s, "{} {request} {summary}", phase.as_str());
            if let Some(d) = duration_ms {
                let _ = write!(s, " duration_ms={d}");
            }
        }
        Body::Graph {
            graph,
            src,
            rel,
            dst,
        } => {
            let _ = write!(s, "{graph} {src} {rel} {dst}");
        }
    }
    s
}
