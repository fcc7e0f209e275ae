//! The digest: the system's health in about 50 tokens, ready to be pasted into
//! an agent's prompt (the article's form):
//!
//! ```text
//! [OS BASELINE]
//! baseline: trained (loss=0.82), 3 anomalies in 24h
//! recent: AitherMind latency spike (score=3.4), GPU VRAM 95% (score=2.8)
//! [/OS BASELINE]
//! ```
//!
//! At most [`MAX_CHARS`] characters between the markers (4 characters a token).
//! Pure data and formatting: the text form is the wire form on
//! `proprio.digest`, so it lives with the contract. Schema: proto/README.md §4.

use super::WireError;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

pub const BEGIN: &str = "[OS BASELINE]";
pub const END: &str = "[/OS BASELINE]";
/// Most characters between the markers (the two lines and the newline between).
pub const MAX_CHARS: usize = 200;

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DigestState {
    /// No model yet.
    Warming,
    Trained,
    /// The model in service was trained before the fingerprint changed; the
    /// new epoch's cold start waits for enough of its telemetry.
    #[serde(rename = "previous_epoch")]
    PreviousEpoch,
}

/// One recent problem, in words.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Problem {
    /// The service; empty for a system-wide problem.
    pub source: String,
    /// What is wrong: the diagnosis, or what surprised the model.
    pub what: String,
    pub score: f32,
}

impl Problem {
    /// `source what`, or just `what` when it already names the source (or
    /// there is none); one line, without the digest's markers.
    pub fn describe(&self) -> String {
        let s = if self.source.is_empty() || self.what.contains(&self.source) {
            self.what.clone()
        } else if self.what.is_empty() {
            self.source.clone()
        } else {
            format!("{} {}", self.source, self.what)
        };
        clean(&s)
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Digest {
    pub state: DigestState,
    /// Validation loss of the model in service, in nats per token.
    pub loss: Option<f32>,
    /// Anomalies in the last 24 hours: incidents (alerts grouped by time
    /// and topology), not raw alerts.
    pub anomalies_24h: u64,
    /// The most important recent incidents (open ones first), each as its
    /// root cause, what it said and its blast radius.
    pub recent: Vec<Problem>,
    /// Version of the model in service.
    pub model: Option<String>,
    /// When the digest was made, unix ms.
    pub ts: i64,
}

impl Digest {
    /// The digest before the first model.
    pub fn warming(ts: i64) -> Digest {
        Digest {
            state: DigestState::Warming,
            loss: None,
            anomalies_24h: 0,
            recent: Vec::new(),
            model: None,
            ts,
        }
    }

    /// The full text form, markers included.
    pub fn text(&self) -> String {
        format!("{BEGIN}\n{}\n{END}", self.body())
    }

    /// The text between the markers: at most [`MAX_CHARS`] characters. Past
    /// it, problems are dropped from the lowest score, then the last one left
    /// is shortened.
    pub fn body(&self) -> String {
        let head = self.headline();
        let mut problems: Vec<(String, f32)> = Vec::new();
        let mut sorted: Vec<&Problem> = self.recent.iter().collect();
        sorted.sort_by(|a, b| by_score_desc(a.score, b.score));
        for p in sorted {
            let d = p.describe();
            if !d.is_empty() && !problems.iter().any(|(q, _)| *q == d) {
                problems.push((d, p.score));
            }
        }
        if problems.is_empty() {
            return fit(format!("{head}\nrecent: none"));
        }
        for k in (1..=problems.len()).rev() {
            let items: Vec<String> = problems[..k]
                .iter()
                .map(|(d, s)| format!("{d} (score={})", fmt_score(*s)))
                .collect();
            let body = format!("{head}\nrecent: {}", items.join(", "));
            if chars(&body) <= MAX_CHARS {
                return body;
            }
        }
        // One problem, still too long: shorten its description.
        let (d, s) = &problems[0];
        let prefix = format!("{head}\nrecent: ");
        let suffix = format!(" (score={})", fmt_score(*s));
        let room = MAX_CHARS.saturating_sub(chars(&prefix) + chars(&suffix));
        const ELLIPSIS: &str = "...";
        if room > ELLIPSIS.len() {
            let short: String = d.chars().take(room - ELLIPSIS.len()).collect();
            return fit(format!("{prefix}{}{ELLIPSIS}{suffix}", short.trim_end()));
        }
        fit(format!("{head}\nrecent: {} problems", problems.len()))
    }

    fn headline(&self) -> String {
        let n = self.anomalies_24h;
        let count = format!(
            "{n} {} in 24h",
            if n == 1 { "anomaly" } else { "anomalies" }
        );
        match (self.state, self.loss) {
            (DigestState::Warming, _) if n == 0 => "baseline: warming (no model yet)".to_string(),
            (DigestState::Warming, _) => format!("baseline: warming (no model yet), {count}"),
            (DigestState::Trained, Some(l)) => format!("baseline: trained (loss={l:.2}), {count}"),
            (DigestState::Trained, None) => format!("baseline: trained, {count}"),
            (DigestState::PreviousEpoch, _) => {
                format!("baseline: previous epoch (topology changed, retraining), {count}")
            }
        }
    }

    /// MessagePack map with named fields.
    pub fn to_msgpack(&self) -> Vec<u8> {
        super::to_msgpack(self)
    }

    pub fn from_msgpack(payload: &[u8]) -> Result<Digest, rmp_serde::decode::Error> {
        rmp_serde::from_slice(payload)
    }

    /// One JSON object (KV `proprio-state` key `digest.json`).
    pub fn to_json(&self) -> String {
        super::to_json(self)
    }

    pub fn from_json(payload: &[u8]) -> Result<Digest, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// Either form: a JSON object (first non-blank byte `{`) or MessagePack.
    pub fn decode(payload: &[u8]) -> Result<Digest, WireError> {
        super::decode(payload)
    }
}

fn by_score_desc(a: f32, b: f32) -> Ordering {
    // NaN sorts last.
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => b.total_cmp(&a),
    }
}

fn fmt_score(s: f32) -> String {
    if s.is_finite() && s.abs() < 1e6 {
        format!("{s:.1}")
    } else if s.is_finite() {
        format!("{s:.1e}")
    } else {
        format!("{s}")
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// One line, no control characters, no square brackets (so telemetry text can
/// neither break the line nor forge a marker), runs of spaces collapsed.
fn clean(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| match c {
            '[' => '(',
            ']' => ')',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    mapped.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Last resort (only reachable with absurd numbers): cut to the limit.
fn fit(body: String) -> String {
    if chars(&body) <= MAX_CHARS {
        body
    } else {
        body.chars().take(MAX_CHARS).collect()
    }
}
