//! How events are rendered, as configured (`[render]`): the metric format
//! and the masks. Part of a checkpoint, so a model is always read the way it
//! was trained.

use super::Renderer;
use serde::{Deserialize, Serialize};

/// How metric values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricFormat {
    /// Two significant digits with an SI suffix: 0.042, 4.2, 42, 420, 4.2k, 42M.
    Digits,
    /// A half-octave magnitude bucket: `b` and the bucket number (2*log2 x, rounded).
    Buckets,
    /// A pulse's values as spreads from their own series' recent level
    /// (`+3`, [`super::Scaler`]); other numbers, and a series too new to
    /// know, as buckets.
    Scaled,
}

impl std::str::FromStr for MetricFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<MetricFormat, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "buckets" => Ok(MetricFormat::Buckets),
            "digits" => Ok(MetricFormat::Digits),
            "scaled" => Ok(MetricFormat::Scaled),
            other => Err(format!("{other:?} is not scaled, buckets or digits")),
        }
    }
}

impl MetricFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricFormat::Buckets => "buckets",
            MetricFormat::Digits => "digits",
            MetricFormat::Scaled => "scaled",
        }
    }
}

/// A volatile-text mask: matches of `pattern` become `token`, except matches
/// that start with one of `keep` (e.g. loopback addresses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskSpec {
    pub pattern: String,
    pub token: String,
    #[serde(default)]
    pub keep: Vec<String>,
    /// Only mask matches holding both a digit and a letter (hex ids, not words or numbers).
    #[serde(default)]
    pub mixed: bool,
}

/// Rendering settings (part of the configuration file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RenderConfig {
    pub metric_format: MetricFormat,
    /// `scaled`: event time after which a series' sustained new level reads
    /// as usual at the latest ([`super::Scaler`]), ms.
    pub adapt_ms: i64,
    /// Applied in order.
    pub masks: Vec<MaskSpec>,
    /// What `scaled` writes: 1, the value words; 2, also `flat` for a
    /// stuck series ([`super::Scaler::flat`]); 3, also a pulse carries its
    /// source's latest flux event of the last minutes ([`super::Said`]);
    /// 4, also a slow series' value read against the line through its
    /// last values (`+1!+3`, `!0` near it; [`super::Scaler::SLOW`]);
    /// 5, also `~` after a slow series' word once it has stayed off its
    /// usual on one side for its last values (`+2~!0`, [`super::Scaler::HELD_RUN`]).
    /// A checkpoint without the field was trained on 1 and is read so.
    #[serde(default = "RenderConfig::first_scheme")]
    pub scheme: u32,
}

impl Default for RenderConfig {
    fn default() -> Self {
        let m = |pattern: &str, token: &str, keep: &[&str]| MaskSpec {
            pattern: pattern.into(),
            token: token.into(),
            keep: keep.iter().map(|s| s.to_string()).collect(),
            mixed: false,
        };
        RenderConfig {
            // Scaled by measurement (docs/EVAL.md, "Scaled values and risk
            // 1e-4 by default"): a latency spike reads `+7` on any service, so the
            // mixed day's 30 faults are all caught (27 with buckets), with
            // no false incident on a fault-free day at risk 1e-4.
            metric_format: MetricFormat::Scaled,
            adapt_ms: super::Scaler::DEFAULT_ADAPT_MS,
            scheme: Self::SCHEME,
            masks: vec![
                m(
                    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
                    "<|UUID|>",
                    &[],
                ),
                m(
                    r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b",
                    "<|IP|>",
                    &["127.", "0.0.0.0"],
                ),
                m(
                    r"\b(?:req|trace|span|txn|session|sess|job|task|id)[-_:=][A-Za-z0-9]+\b",
                    "<|ID|>",
                    &[],
                ),
                m(r"\b0x[0-9a-fA-F]+\b", "<|HEX|>", &[]),
                MaskSpec {
                    mixed: true,
                    ..m(r"\b[0-9a-fA-F]{6,}\b", "<|HEX|>", &[])
                },
                m(r"(?:/[\w.-]+){2,}", "<|PATH|>", &[]),
                m(r"-?\d{5,}", "<|NUM|>", &[]),
            ],
        }
    }
}

/// The masks file `render.masks` names: `[[mask]]` tables with `pattern`,
/// `token` and optionally `keep` and `mixed`, applied in file order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MasksFile {
    mask: Vec<MaskSpec>,
}

impl RenderConfig {
    /// The rendering scheme new models are trained with.
    pub const SCHEME: u32 = 5;

    fn first_scheme() -> u32 {
        1
    }

    /// The configured rendering: `masks` replaces the built-in list when
    /// given. Every pattern is compiled and every token checked here, so a
    /// bad masks file stops start-up with its reason.
    pub fn load(
        metric_format: MetricFormat,
        adapt: std::time::Duration,
        masks: Option<&std::path::Path>,
    ) -> anyhow::Result<RenderConfig> {
        let mut cfg = RenderConfig {
            metric_format,
            adapt_ms: adapt.as_millis().min(i64::MAX as u128) as i64,
            ..RenderConfig::default()
        };
        if let Some(path) = masks {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading the masks file {}: {e}", path.display()))?;
            let file: MasksFile = toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("masks file {}: {e}", path.display()))?;
            cfg.masks = file.mask;
        }
        Renderer::new(&cfg).map_err(|e| match masks {
            Some(p) => e.context(format!("masks file {}", p.display())),
            None => e,
        })?;
        Ok(cfg)
    }

    /// What the freshness fingerprint adds for this rendering: the whole
    /// settings, so that documents rendered one way are never trained on by
    /// a trainer that scores another way; nothing for the rendering
    /// fingerprints were first computed without (the built-in one with
    /// buckets, the default until session 11), so a deployment rendering so
    /// keeps its fingerprint. Hence the change of default to scaled is a new
    /// epoch (a cold start, the model in service marked previous epoch until
    /// it), not buckets and scaled documents mixed in one curriculum.
    pub fn fingerprint_text(&self) -> String {
        let unmarked = RenderConfig {
            metric_format: MetricFormat::Buckets,
            ..RenderConfig::default()
        };
        if *self == unmarked {
            String::new()
        } else {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}
