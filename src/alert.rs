//! The alert side, beyond the wire type ([`crate::contract::alert::Alert`]):
//! the [`Diagnoser`] that names known failure patterns in an alerting event,
//! and [`mute`], the maintenance windows that hold a source's alerts back.

pub mod mute;

use crate::event::{Body, Event};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

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

const VRAM_PRESSURE: &str = "GPU VRAM pressure";
const LATENCY_SPIKE: &str = "latency spike";
const METRIC_FAR: &str = "metric far from its usual";
const METRIC_STUCK: &str = "metric stuck";
/// Readings of one metric, labelled with its name so that their signature
/// floors are counted per metric: a counter that jumps all day does not
/// make a steady gauge's jump common, nor a noisy series' small moves its
/// large ones. Off the line through the series' last values (rendering
/// scheme 4, [`crate::curriculum::Scaler::SLOW`]): 16 spreads or more, 8
/// to 16, 5.7 to 8.
const METRIC_LEAPT: &str = "metric leapt: ${metric}";
const METRIC_JUMPED: &str = "metric jumped: ${metric}";
const METRIC_MOVED: &str = "metric moved: ${metric}";
/// A slow series' window word 8 to 64 spreads off (`+3!0`: off the hours'
/// level, on the last minutes' line: a shift that held). Slow series only:
/// labelled for every series, the simulated OS's 10-second pulses (load
/// bursts, `req_rate=+4`) gave 12 false incidents on the mixed day against
/// 3 (training seed 2; docs/EVAL.md).
const METRIC_OFF: &str = "metric off its usual: ${metric}";
/// A slow series off its usual on one side for its last few values
/// (`+2~!0`, `0~!0`, rendering scheme 5): a level shift or a drift of a
/// size the day's excursions reach once, but do not hold.
const METRIC_HELD: &str = "metric held off its usual: ${metric}";

/// Whether a diagnosis reads a metric's level (VRAM at 95 %, a p99 of two
/// seconds, a value far from its usual) rather than names a failure that
/// happened (an OOM kill, a crash, a port conflict). A reading says how
/// things are at one sample: a load burst's p99 passes a second as a
/// latency fault's does. So a reading, like any surprise, must last to
/// confirm an incident (`incident::EngineConfig`), while a failure is sure
/// at once.
pub fn is_reading(diagnosis: &str) -> bool {
    [VRAM_PRESSURE, LATENCY_SPIKE, METRIC_FAR, METRIC_STUCK].contains(&diagnosis)
        || [
            METRIC_LEAPT,
            METRIC_JUMPED,
            METRIC_MOVED,
            METRIC_OFF,
            METRIC_HELD,
        ]
        .iter()
        .any(|l| diagnosis.starts_with(&l[..l.find('$').unwrap_or(0)]))
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
            // A process that died abnormally: a non-zero exit status, a fatal
            // signal, a C++ abort, a Rust panic, a Python traceback (exit 137
            // is the OOM kill, above).
            Pattern::new(
                concat!(
                    r"(?i)\bexit[_ ]?(?:code|status)\s*[=:]?\s*[1-9]\d{0,2}\b",
                    r"|\bexited with (?:code|status) [1-9]\d{0,2}\b",
                    r"|segmentation fault|core dumped|\bSIG(?:SEGV|ABRT|BUS|ILL|FPE)\b",
                    r"|terminate called after throwing|\bpanicked at\b|Traceback \(most recent call last\)",
                ),
                "process crashed",
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
                concat!(
                    r"(?i)vram(?:[_ ]?(?:pct|percent|util(?:ization)?|usage|used))*\s*(?:[=:]|\bat\b|\bis\b)?\s*(?P<pct>9\d|100)(?:\.\d+)?\s*%?(?:[^\d.]|$)",
                    // "CUDA memory pressure: allocated 15.1GiB / 16.0GiB (94%)",
                    // "GPU memory usage 97%": a share of 90 % or more on the line.
                    r"|\b(?:CUDA|GPU) memory\b[^\n%]{0,80}?[\s(](?P<gpct>9\d|100)(?:\.\d+)?\s*%",
                ),
                VRAM_PRESSURE,
            ),
            Pattern::new(
                concat!(
                    // latency_p99_ms=2950, the rendered form latency_p99_ms=2.9k,
                    // "latency 3200 ms", "latency of 3.2s"
                    r"(?i)latency\w*_ms\s*[=:]?\s*(?:[1-9]\d{3,}(?:\.\d+)?|\d+(?:\.\d+)?(?-i:[kMGT]))(?:[^\w.]|$)",
                    r"|latency\w*\s*(?:[=:]|\bof\b|\bis\b)?\s*(?:[1-9]\d{3,}(?:\.\d+)?\s*ms|[1-9]\d*(?:\.\d+)?\s*s)\b",
                ),
                LATENCY_SPIKE,
            ),
            Pattern::new(r"(?i)no space left on device|\bdisk full\b", "disk full"),
            Pattern::new(
                r"(?i)connection refused|\bECONNREFUSED\b",
                "dependency unreachable",
            ),
            // Per metric (`mem_mb=0!+3`: see METRIC_LEAPT), the farthest
            // first; a line's first match is its diagnosis. A leap is read
            // per metric before the fleet's reading of a far value: a
            // replica count that doubles (`replicas=+7!+9`) is no more
            // common because other metrics' mostly-zero counts read `+7`
            // all day.
            Pattern::new(
                r"(?:^|[\s>])(?P<metric>[A-Za-z_][\w.]*)=(?:0|[+-]\d)~?![+-][5-9](?:[\s<]|$)",
                METRIC_LEAPT,
            ),
            // A scaled pulse value 64 or more of its series' spreads from
            // its usual level (`latency_p50_ms=+7`,
            // [`crate::curriculum::Scaler`]); buckets never read so.
            Pattern::new(
                r"(?:^|[\s>])[A-Za-z_][\w.]*=[+-][67]~?(?:![+-]\d)?(?:[\s<]|$)",
                METRIC_FAR,
            ),
            // A varying series stuck on one value (`queue_depth=flat`,
            // rendering scheme 2): a frozen exporter or gauge.
            Pattern::new(r"(?:^|[\s>])[A-Za-z_][\w.]*=flat(?:[\s<]|$)", METRIC_STUCK),
            Pattern::new(
                r"(?:^|[\s>])(?P<metric>[A-Za-z_][\w.]*)=(?:0|[+-]\d)~?![+-][34](?:[\s<]|$)",
                METRIC_JUMPED,
            ),
            Pattern::new(
                r"(?:^|[\s>])(?P<metric>[A-Za-z_][\w.]*)=(?:0|[+-][1-7])~(?:!(?:0|[+-]\d))?(?:[\s<]|$)",
                METRIC_HELD,
            ),
            Pattern::new(
                r"(?:^|[\s>])(?P<metric>[A-Za-z_][\w.]*)=[+-][345]!(?:0|[+-]\d)(?:[\s<]|$)",
                METRIC_OFF,
            ),
            Pattern::new(
                r"(?:^|[\s>])(?P<metric>[A-Za-z_][\w.]*)=(?:0|[+-]\d)~?![+-]2(?:[\s<]|$)",
                METRIC_MOVED,
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
        // Both are four words: who did what to whom with which outcome, or an edge.
        Body::Chronicle {
            actor: a,
            action: b,
            target: c,
            outcome: d,
        }
        | Body::Graph {
            graph: a,
            src: b,
            rel: c,
            dst: d,
        } => {
            let _ = write!(s, "{a} {b} {c} {d}");
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
    }
    s
}
