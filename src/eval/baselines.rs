//! The baselines the language model has to beat, fitted on the same training
//! events and thresholded by the same rule:
//!
//! - [`TemplateFreq`], the rare-template detector: every event becomes a
//!   template (its kind and fields, the source left out, volatile parts
//!   masked as the renderer masks them and then every remaining run of
//!   digits replaced by `#`); the training events give each template's
//!   count; an event scores `-ln((count + 1) / (N + 1))`, so a template never
//!   seen scores `ln(N + 1)`, the highest possible.
//! - [`MetricZ`], the per-metric robust z-score: each pulse metric (and each
//!   trace phase's duration) gets the median and MAD of its training values
//!   per source (per metric name across sources while a source has fewer
//!   than [`MetricZ::MIN_COUNT`] values); an event scores the largest
//!   `|x - median| / scale` over its metrics, scale = max(1.4826 MAD, 1 % of
//!   |median|, 1e-6). Events without metrics score 0.

use crate::baseline::median;
use crate::curriculum::Renderer;
use crate::event::{Body, Event};
use regex::Regex;
use std::collections::HashMap;
use std::sync::OnceLock;

fn digits() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"[0-9]+(?:[.,:][0-9]+)*").expect("valid regex"))
}

/// Rare-template detector.
#[derive(Debug, Clone, Default)]
pub struct TemplateFreq {
    counts: HashMap<String, u64>,
    total: u64,
}

impl TemplateFreq {
    /// Volatile parts masked like the renderer does, then digits as `#`.
    pub fn mask(r: &Renderer, text: &str) -> String {
        digits().replace_all(&r.mask(text), "#").into_owned()
    }

    /// The template of an event: kind and fields, without the source.
    pub fn template(r: &Renderer, ev: &Event) -> String {
        let m = |s: &str| Self::mask(r, s);
        match &ev.body {
            Body::Flux {
                event,
                state,
                attrs,
            } => {
                let mut t = format!("flux|{event}|{}", state.as_deref().unwrap_or(""));
                for (k, v) in attrs {
                    t.push('|');
                    t.push_str(k);
                    t.push('=');
                    t.push_str(&m(&v.to_string()));
                }
                t
            }
            Body::Pulse { metrics } => {
                let names: Vec<&str> = metrics.keys().map(String::as_str).collect();
                format!("pulse|{}", names.join(","))
            }
            Body::Log { message, level } => format!(
                "log|{}|{}",
                level.as_deref().unwrap_or("").to_ascii_uppercase(),
                m(message)
            ),
            Body::Chronicle {
                actor,
                action,
                target,
                outcome,
            } => format!(
                "chronicle|{}|{}|{}|{}",
                m(actor),
                m(action),
                m(target),
                m(outcome)
            ),
            Body::Trace { phase, summary, .. } => {
                format!("trace|{}|{}", phase.as_str(), m(summary))
            }
            Body::Graph {
                graph,
                src,
                rel,
                dst,
            } => format!("graph|{graph}|{src}|{rel}|{dst}"),
        }
    }

    pub fn fit(r: &Renderer, events: &[Event]) -> TemplateFreq {
        let mut t = TemplateFreq::default();
        for ev in events {
            *t.counts.entry(Self::template(r, ev)).or_insert(0) += 1;
            t.total += 1;
        }
        t
    }

    /// Distinct templates seen in training.
    pub fn templates(&self) -> usize {
        self.counts.len()
    }

    pub fn score_one(&self, r: &Renderer, ev: &Event) -> f32 {
        let c = self
            .counts
            .get(&Self::template(r, ev))
            .copied()
            .unwrap_or(0);
        -(((c + 1) as f64) / ((self.total + 1) as f64)).ln() as f32
    }

    pub fn score(&self, r: &Renderer, events: &[Event]) -> Vec<f32> {
        events.iter().map(|e| self.score_one(r, e)).collect()
    }
}

/// Median and robust scale of one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Robust {
    pub median: f64,
    pub scale: f64,
    pub n: usize,
}

impl Robust {
    pub fn of(values: &mut [f64]) -> Option<Robust> {
        if values.is_empty() {
            return None;
        }
        let med = median(values);
        let mut dev: Vec<f64> = values.iter().map(|v| (v - med).abs()).collect();
        let mad = median(&mut dev);
        Some(Robust {
            median: med,
            scale: (1.4826 * mad).max(0.01 * med.abs()).max(1e-6),
            n: values.len(),
        })
    }

    pub fn z(&self, x: f64) -> f64 {
        ((x - self.median).abs() / self.scale).min(1e6)
    }
}

/// Per-metric robust z-score detector.
#[derive(Debug, Clone, Default)]
pub struct MetricZ {
    by_source: HashMap<(String, String), Robust>,
    by_name: HashMap<String, Robust>,
}

impl MetricZ {
    /// Values a (source, metric) needs to stand on its own statistics.
    pub const MIN_COUNT: usize = 5;

    /// The (metric name, value) pairs an event carries.
    pub fn values(ev: &Event) -> Vec<(String, f64)> {
        match &ev.body {
            Body::Pulse { metrics } => metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Body::Trace {
                phase,
                duration_ms: Some(d),
                ..
            } => vec![(format!("duration_ms.{}", phase.as_str()), *d)],
            _ => Vec::new(),
        }
    }

    pub fn fit(events: &[Event]) -> MetricZ {
        let mut per: HashMap<(String, String), Vec<f64>> = HashMap::new();
        let mut per_name: HashMap<String, Vec<f64>> = HashMap::new();
        for ev in events {
            for (k, v) in Self::values(ev) {
                if !v.is_finite() {
                    continue;
                }
                per.entry((ev.source.clone(), k.clone()))
                    .or_default()
                    .push(v);
                per_name.entry(k).or_default().push(v);
            }
        }
        MetricZ {
            by_source: per
                .into_iter()
                .filter(|(_, v)| v.len() >= Self::MIN_COUNT)
                .filter_map(|(k, mut v)| Robust::of(&mut v).map(|r| (k, r)))
                .collect(),
            by_name: per_name
                .into_iter()
                .filter_map(|(k, mut v)| Robust::of(&mut v).map(|r| (k, r)))
                .collect(),
        }
    }

    /// Metrics with their own per-source statistics.
    pub fn series(&self) -> usize {
        self.by_source.len()
    }

    pub fn score_one(&self, ev: &Event) -> f32 {
        let mut best = 0.0f64;
        for (k, v) in Self::values(ev) {
            let stat = self
                .by_source
                .get(&(ev.source.clone(), k.clone()))
                .or_else(|| self.by_name.get(&k));
            if let Some(s) = stat {
                best = best.max(s.z(v));
            }
        }
        best as f32
    }

    pub fn score(&self, events: &[Event]) -> Vec<f32> {
        events.iter().map(|e| self.score_one(e)).collect()
    }
}
