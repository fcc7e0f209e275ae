//! The renderer: an event or the registry as curriculum lines, masking
//! volatile text and writing metric values compactly.

use super::{MetricFormat, RenderConfig, Scaler};
use crate::event::{Body, Event, Phase};
use crate::registry::Registry;
use regex::Regex;
use std::fmt::Write;

struct Mask {
    re: Regex,
    token: String,
    keep: Vec<String>,
    mixed: bool,
}

/// Renders events and the registry as curriculum lines.
pub struct Renderer {
    masks: Vec<Mask>,
    metric_format: MetricFormat,
    adapt_ms: i64,
    scheme: u32,
}

impl Default for Renderer {
    fn default() -> Self {
        Renderer::new(&RenderConfig::default()).expect("default masks compile")
    }
}

impl Renderer {
    /// A bad pattern is an error naming it.
    pub fn new(cfg: &RenderConfig) -> anyhow::Result<Renderer> {
        let mut masks = Vec::new();
        for (i, m) in cfg.masks.iter().enumerate() {
            let re = Regex::new(&m.pattern)
                .map_err(|e| anyhow::anyhow!("render.masks[{i}].pattern {:?}: {e}", m.pattern))?;
            let tok = crate::tokenizer::tokenizer();
            anyhow::ensure!(
                tok.specials().contains(&m.token.as_str()),
                "render.masks[{i}].token {:?} is not a special token of proto/tokens.txt",
                m.token
            );
            masks.push(Mask {
                re,
                token: m.token.clone(),
                keep: m.keep.clone(),
                mixed: m.mixed,
            });
        }
        Ok(Renderer {
            masks,
            metric_format: cfg.metric_format,
            adapt_ms: cfg.adapt_ms,
            scheme: cfg.scheme,
        })
    }

    pub fn metric_format(&self) -> MetricFormat {
        self.metric_format
    }

    /// A fresh walk's per-series state, as this rendering adapts.
    pub fn scaler(&self) -> Scaler {
        Scaler::new(self.adapt_ms)
            .flat(self.scheme >= 2)
            .carrying(self.scheme >= 3)
            .sudden(self.scheme >= 4)
            .held(self.scheme >= 5)
    }

    /// Masks the volatile parts of free text.
    pub fn mask(&self, text: &str) -> String {
        let mut s = escape(text);
        for m in &self.masks {
            if !m.re.is_match(&s) {
                continue;
            }
            s =
                m.re.replace_all(&s, |c: &regex::Captures| {
                    let hit = &c[0];
                    let unmixed = m.mixed
                        && !(hit.bytes().any(|b| b.is_ascii_digit())
                            && hit.bytes().any(|b| b.is_ascii_alphabetic()));
                    if unmixed || m.keep.iter().any(|k| hit.starts_with(k.as_str())) {
                        hit.to_string()
                    } else {
                        m.token.clone()
                    }
                })
                .into_owned();
        }
        s
    }

    /// One event as one line; `scaler` is the walk's per-series state
    /// (read and updated by a pulse when the format is `scaled`), so events
    /// are rendered once each, in order.
    pub fn render(&self, ev: &Event, scaler: &mut Scaler) -> String {
        let mut s = String::with_capacity(96);
        s.push_str("<|BOE|>");
        match &ev.body {
            Body::Flux {
                event,
                state,
                attrs,
            } => {
                scaler.note_flux(&ev.source, event, ev.ts);
                svc(&mut s, "<|FLUX|>", &ev.source);
                s.push_str("<|EVENT|>");
                s.push_str(&escape(event));
                if let Some(st) = state {
                    s.push_str("<|STATE|>");
                    s.push_str(&escape(st));
                }
                for (k, v) in attrs {
                    s.push_str("<|ATTR|>");
                    s.push_str(&escape(k));
                    s.push('=');
                    match v {
                        // Small integers are codes (exit 137, port 8080): exact.
                        crate::event::Scalar::Int(i) if i.abs() < 100_000 => {
                            let _ = write!(s, "{i}");
                        }
                        crate::event::Scalar::Int(i) => self.number(&mut s, *i as f64),
                        crate::event::Scalar::Float(x) => self.number(&mut s, *x),
                        other => s.push_str(&self.mask(&other.to_string())),
                    }
                }
            }
            Body::Pulse { metrics } => {
                scaler.start_event();
                svc(&mut s, "<|PULSE|>", &ev.source);
                if let Some(said) = scaler.carried(&ev.source, ev.ts) {
                    s.push_str("<|EVENT|>");
                    s.push_str(&escape(said));
                }
                for (k, v) in metrics {
                    s.push_str("<|METRIC|>");
                    s.push_str(&escape(k));
                    s.push('=');
                    if self.metric_format == MetricFormat::Scaled {
                        scaler.word(&ev.source, k, ev.ts, *v).write(&mut s);
                    } else {
                        self.number(&mut s, *v);
                    }
                }
            }
            Body::Log { message, level } => {
                svc(&mut s, "<|LOG|>", &ev.source);
                if let Some(l) = level {
                    s.push_str("<|LEVEL|>");
                    s.push_str(&escape(&l.to_ascii_uppercase()));
                }
                s.push_str("<|MSG|>");
                s.push_str(&self.mask(message));
            }
            Body::Chronicle {
                actor,
                action,
                target,
                outcome,
            } => {
                svc(&mut s, "<|CHRONICLE|>", &ev.source);
                for (tok, v) in [
                    ("<|ACTOR|>", actor),
                    ("<|ACTION|>", action),
                    ("<|TARGET|>", target),
                    ("<|OUTCOME|>", outcome),
                ] {
                    s.push_str(tok);
                    s.push_str(&self.mask(v));
                }
            }
            Body::Trace {
                phase,
                summary,
                duration_ms,
                ..
            } => {
                // The request id is random by nature: leaving it out keeps the
                // model's attention on the phase order, timing and content.
                svc(&mut s, "<|TRACE|>", &ev.source);
                s.push_str(phase_token(*phase));
                if let Some(d) = duration_ms {
                    s.push_str("<|DUR|>");
                    self.number(&mut s, *d);
                }
                s.push_str("<|MSG|>");
                s.push_str(&self.mask(summary));
            }
            Body::Graph {
                graph,
                src,
                rel,
                dst,
            } => edge(&mut s, graph, src, rel, dst),
        }
        s.push_str("<|EOE|>");
        s
    }

    /// The axiomatic curriculum: one line per service.
    pub fn axiomatic(&self, reg: &Registry) -> Vec<String> {
        reg.services
            .iter()
            .map(|sv| {
                let mut s = String::from("<|BOE|><|AXIOMATIC|>");
                s.push_str("<|SVC|>");
                s.push_str(&escape(&sv.name));
                let _ = write!(s, "<|L{}|>", sv.layer.min(crate::registry::LAYERS - 1));
                s.push_str("<|ROLE|>");
                s.push_str(&escape(&sv.role));
                let _ = write!(s, "<|PORT|>{}", sv.port);
                for d in &sv.depends_on {
                    s.push_str("<|DEPENDS|>");
                    s.push_str(&escape(d));
                }
                s.push_str("<|EOE|>");
                s
            })
            .collect()
    }

    /// The registry's part of the topology curriculum: each dependency as a
    /// ServiceGraph edge, in the same form as a graph event.
    pub fn topology(&self, reg: &Registry) -> Vec<String> {
        let mut out = Vec::new();
        for sv in &reg.services {
            for d in &sv.depends_on {
                let mut s = String::from("<|BOE|><|TOPOLOGY|>");
                edge(&mut s, "ServiceGraph", &sv.name, "depends_on", d);
                s.push_str("<|EOE|>");
                out.push(s);
            }
        }
        out
    }

    fn number(&self, s: &mut String, x: f64) {
        match self.metric_format {
            MetricFormat::Digits => compact(s, x),
            MetricFormat::Buckets | MetricFormat::Scaled => bucket(s, x),
        }
    }
}

fn svc(s: &mut String, kind_tok: &str, source: &str) {
    s.push_str(kind_tok);
    s.push_str("<|SVC|>");
    s.push_str(&escape(source));
}

fn edge(s: &mut String, graph: &str, src: &str, rel: &str, dst: &str) {
    s.push_str("<|GRAPH|>");
    s.push_str(&escape(graph));
    s.push_str("<|SRC|>");
    s.push_str(&escape(src));
    s.push_str("<|REL|>");
    s.push_str(&escape(rel));
    s.push_str("<|DST|>");
    s.push_str(&escape(dst));
}

fn phase_token(p: Phase) -> &'static str {
    match p {
        Phase::Perceive => "<|PERCEIVE|>",
        Phase::Remember => "<|REMEMBER|>",
        Phase::Reason => "<|REASON|>",
        Phase::Plan => "<|PLAN|>",
        Phase::Act => "<|ACT|>",
        Phase::Learn => "<|LEARN|>",
    }
}

/// User text can never forge a special token: `<|` loses its bar, until
/// none is left (one pass turns `<<||BOE|>` into a real `<|BOE|>`). Line
/// breaks become spaces, so an event stays one line whatever its text (a
/// multi-line log message, a raw log line with an inner `\n`). Both found
/// by tests/it/fuzz.rs.
pub fn escape(s: &str) -> String {
    let mut s = s.to_string();
    while s.contains("<|") {
        s = s.replace("<|", "<");
    }
    if s.contains(['\n', '\r']) {
        s.replace(['\n', '\r'], " ")
    } else {
        s
    }
}

/// Two significant digits with an SI suffix (k, M, G, T), trailing zeros dropped.
fn compact(s: &mut String, x: f64) {
    if !x.is_finite() {
        s.push_str("nan");
        return;
    }
    if x == 0.0 {
        s.push('0');
        return;
    }
    if x < 0.0 {
        s.push('-');
    }
    let a = x.abs();
    let (v, suffix) = match a {
        a if a >= 1e12 => (a / 1e12, "T"),
        a if a >= 1e9 => (a / 1e9, "G"),
        a if a >= 1e6 => (a / 1e6, "M"),
        a if a >= 1e3 => (a / 1e3, "k"),
        a => (a, ""),
    };
    // Round to 2 significant digits.
    let mag = v.log10().floor() as i32;
    let decimals = (1 - mag).max(0) as usize;
    let scale = 10f64.powi(1 - mag);
    let r = (v * scale).round() / scale;
    let mut t = format!("{r:.decimals$}");
    if t.contains('.') {
        while t.ends_with('0') {
            t.pop();
        }
        if t.ends_with('.') {
            t.pop();
        }
    }
    s.push_str(&t);
    s.push_str(suffix);
}

/// Half-octave bucket: `b<n>` with n = round(2*log2|x|); `b0` for 1, `z` for 0.
fn bucket(s: &mut String, x: f64) {
    if x == 0.0 || !x.is_finite() {
        s.push('z');
        return;
    }
    if x < 0.0 {
        s.push('-');
    }
    let n = (2.0 * x.abs().log2()).round() as i64;
    let _ = write!(s, "b{n}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(x: f64) -> String {
        let mut s = String::new();
        compact(&mut s, x);
        s
    }

    #[test]
    fn compact_numbers() {
        assert_eq!(c(0.0), "0");
        assert_eq!(c(0.042), "0.042");
        assert_eq!(c(4.24), "4.2");
        assert_eq!(c(42.4), "42");
        assert_eq!(c(424.0), "420");
        assert_eq!(c(4240.0), "4.2k");
        assert_eq!(c(3000.0), "3k");
        assert_eq!(c(99.96), "100");
        assert_eq!(c(1.5e7), "15M");
        assert_eq!(c(-12.0), "-12");
    }

    #[test]
    fn masks_keep_loopback() {
        let r = Renderer::default();
        assert_eq!(
            r.mask("GET /api/v1/users req-8f3a2c from 10.1.2.3:5544 took 12ms id 550e8400-e29b-41d4-a716-446655440000"),
            "GET <|PATH|> <|ID|> from <|IP|> took 12ms id <|UUID|>"
        );
        assert_eq!(
            r.mask("connect to 127.0.0.1:8105 refused"),
            "connect to 127.0.0.1:8105 refused"
        );
        assert_eq!(
            r.mask("block blk_-1608999687919862906 at 0xdeadbeef"),
            "block blk_<|NUM|> at <|HEX|>"
        );
        assert_eq!(r.mask("forged <|FLUX|>"), "forged <FLUX|>");
    }
}

#[cfg(test)]
mod render_tests {
    use super::*;
    use crate::curriculum::{MaskSpec, Said};
    use crate::event::{Body, Event, Phase, Scalar};
    use std::collections::BTreeMap;

    fn ev(body: Body) -> Event {
        Event {
            ts: 1,
            source: "AitherMind".into(),
            key: "AitherMind".into(),
            body,
            label: None,
        }
    }

    fn renderer(metric_format: MetricFormat) -> Renderer {
        Renderer::new(&RenderConfig {
            metric_format,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn every_kind_renders_one_line_of_known_tokens() {
        let r = renderer(MetricFormat::Digits);
        let mut attrs = BTreeMap::new();
        attrs.insert("exit_code".to_string(), Scalar::Int(137));
        attrs.insert("pod".to_string(), Scalar::Str("mind-7f9c2d1e".into()));
        let mut metrics = BTreeMap::new();
        metrics.insert("cpu".to_string(), 0.424);
        metrics.insert("latency_p99_ms".to_string(), 3120.0);
        let cases = [
            (
                ev(Body::Flux { event: "crashed".into(), state: Some("degraded".into()), attrs }),
                "<|BOE|><|FLUX|><|SVC|>AitherMind<|EVENT|>crashed<|STATE|>degraded<|ATTR|>exit_code=137<|ATTR|>pod=mind-<|HEX|><|EOE|>",
            ),
            (
                ev(Body::Pulse { metrics }),
                "<|BOE|><|PULSE|><|SVC|>AitherMind<|METRIC|>cpu=0.42<|METRIC|>latency_p99_ms=3.1k<|EOE|>",
            ),
            (
                ev(Body::Log { message: "conn from 10.0.0.7:4411 refused".into(), level: Some("warn".into()) }),
                "<|BOE|><|LOG|><|SVC|>AitherMind<|LEVEL|>WARN<|MSG|>conn from <|IP|> refused<|EOE|>",
            ),
            (
                ev(Body::Chronicle { actor: "admin".into(), action: "restart".into(), target: "AitherFlux".into(), outcome: "ok".into() }),
                "<|BOE|><|CHRONICLE|><|SVC|>AitherMind<|ACTOR|>admin<|ACTION|>restart<|TARGET|>AitherFlux<|OUTCOME|>ok<|EOE|>",
            ),
            (
                ev(Body::Trace { phase: Phase::Plan, request: "req-123".into(), summary: "route to GPU".into(), duration_ms: Some(42.0) }),
                "<|BOE|><|TRACE|><|SVC|>AitherMind<|PLAN|><|DUR|>42<|MSG|>route to GPU<|EOE|>",
            ),
            (
                ev(Body::Graph { graph: "ServiceGraph".into(), src: "a".into(), rel: "calls".into(), dst: "b".into() }),
                "<|BOE|><|GRAPH|>ServiceGraph<|SRC|>a<|REL|>calls<|DST|>b<|EOE|>",
            ),
        ];
        let tok = crate::vocab::Vocab::bytes();
        for (e, want) in cases {
            let got = r.render(&e, &mut r.scaler());
            assert_eq!(got, want);
            assert!(!got.contains('\n'));
            // Every <|...|> in the line is a real special token.
            let ids = tok.encode(&got);
            assert_eq!(tok.decode(&ids), got);
            assert_eq!(
                ids.iter()
                    .filter(|&&i| crate::tokenizer::Tokenizer::is_special(i))
                    .count(),
                got.matches("<|").count()
            );
        }
    }

    #[test]
    fn buckets_are_an_alternative() {
        let r = renderer(MetricFormat::Buckets);
        assert_eq!(RenderConfig::default().metric_format, MetricFormat::Scaled);
        let mut metrics = BTreeMap::new();
        metrics.insert("cpu".to_string(), 4.0);
        assert!(r
            .render(&ev(Body::Pulse { metrics }), &mut r.scaler())
            .contains("cpu=b4"));
    }

    #[test]
    fn scaled_pulses_read_against_their_series_other_numbers_as_buckets() {
        let r = renderer(MetricFormat::Scaled);
        let mut sc = r.scaler();
        let pulse = |ts: i64, lat: f64| Event {
            ts,
            body: Body::Pulse {
                metrics: BTreeMap::from([("latency_p50_ms".to_string(), lat)]),
            },
            ..ev(Body::Pulse {
                metrics: BTreeMap::new(),
            })
        };
        // Cold: as usual; warm: the usual reads 0, a spike the top bin.
        let first = r.render(&pulse(0, 120.0), &mut sc);
        assert!(first.contains("latency_p50_ms=0<|EOE|>"), "{first}");
        for i in 1..20 {
            r.render(&pulse(i * 15_000, 120.0), &mut sc);
        }
        assert!(r
            .render(&pulse(300_000, 121.0), &mut sc)
            .contains("latency_p50_ms=0<|EOE|>"));
        // Far from the window's level; a series heard every 15 s has no
        // second word (scheme 4 reads slow series only, `Scaler::SLOW`).
        assert!(r
            .render(&pulse(315_000, 3_000.0), &mut sc)
            .contains("latency_p50_ms=+7<|EOE|>"));
        // Heard every 5 minutes, it has.
        let mut sc = r.scaler();
        for i in 0..20 {
            r.render(&pulse(i * 300_000, 120.0), &mut sc);
        }
        assert!(r
            .render(&pulse(20 * 300_000, 3_000.0), &mut sc)
            .contains("latency_p50_ms=+7!+9<|EOE|>"));
        let mut attrs = BTreeMap::new();
        attrs.insert("mem_mb".to_string(), Scalar::Float(4096.0));
        let flux = ev(Body::Flux {
            event: "x".into(),
            state: None,
            attrs,
        });
        assert!(r.render(&flux, &mut sc).contains("mem_mb=b24"));
    }

    #[test]
    fn a_pulse_carries_its_sources_latest_flux_event_from_scheme_3() {
        let at = |ts: i64, body: Body| Event { ts, ..ev(body) };
        let burst = || Body::Flux {
            event: "request_burst".into(),
            state: Some("healthy".into()),
            attrs: BTreeMap::new(),
        };
        let pulse = || Body::Pulse {
            metrics: BTreeMap::from([("cpu".to_string(), 0.5)]),
        };
        let r = renderer(MetricFormat::Scaled);
        assert!(RenderConfig::SCHEME >= 3);
        let mut sc = r.scaler();
        r.render(&at(0, burst()), &mut sc);
        assert_eq!(
            r.render(&at(60_000, pulse()), &mut sc),
            "<|BOE|><|PULSE|><|SVC|>AitherMind<|EVENT|>request_burst<|METRIC|>cpu=0<|EOE|>"
        );
        // Ten minutes on, the pulse is read alone again.
        let late = r.render(&at(Said::CARRY_MS + 1, pulse()), &mut sc);
        assert!(!late.contains("<|EVENT|>"), "{late}");
        // Another source's pulse carries nothing.
        let other = Event {
            source: "AitherFlux".into(),
            ..at(60_000, pulse())
        };
        r.render(&at(70_000, burst()), &mut sc);
        assert!(!r.render(&other, &mut sc).contains("<|EVENT|>"));
        // A checkpoint of scheme 2 is read as it was trained.
        let old = Renderer::new(&RenderConfig {
            scheme: 2,
            ..Default::default()
        })
        .unwrap();
        let mut sc = old.scaler();
        old.render(&at(0, burst()), &mut sc);
        assert!(!old.render(&at(1, pulse()), &mut sc).contains("<|EVENT|>"));
    }

    #[test]
    fn bad_mask_is_a_clear_error() {
        let mut cfg = RenderConfig::default();
        cfg.masks.push(MaskSpec {
            pattern: "(".into(),
            token: "<|ID|>".into(),
            keep: vec![],
            mixed: false,
        });
        let e = Renderer::new(&cfg).err().unwrap().to_string();
        assert!(e.contains("render.masks["), "{e}");
        let mut cfg = RenderConfig::default();
        cfg.masks[0].token = "<|NOPE|>".into();
        assert!(Renderer::new(&cfg).is_err());
    }

    #[test]
    fn registry_curricula() {
        let reg = Registry::parse(
            "services:\n  - {name: A, layer: 0, port: 80}\n  - {name: B, layer: 11, port: 81, role: dashboard, depends_on: [A]}\n",
        )
        .unwrap();
        let r = Renderer::default();
        assert_eq!(
            r.axiomatic(&reg)[1],
            "<|BOE|><|AXIOMATIC|><|SVC|>B<|L11|><|ROLE|>dashboard<|PORT|>81<|DEPENDS|>A<|EOE|>"
        );
        assert_eq!(
            r.topology(&reg),
            vec![
                "<|BOE|><|TOPOLOGY|><|GRAPH|>ServiceGraph<|SRC|>B<|REL|>depends_on<|DST|>A<|EOE|>"
            ]
        );
    }
}
