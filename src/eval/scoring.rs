//! The model as a detector: trained here (the offline training's
//! [`Plan`]) or loaded, then scoring the calibration and test events the way
//! the live scorer does (each in the context of its key's previous events,
//! through [`crate::scorer::score_against`]), in every reading [`ModelScore`] knows.

use super::data::Data;
use super::report::Report;
use super::{EvalArgs, Scores};
use crate::baseline::Surprise;
use crate::config::Learning;
use crate::event::Event;
use crate::model::checkpoint::Checkpoint;
use crate::scorer::LiveTails;
use crate::trainer::offline::{train_events, Plan};
use anyhow::{Context, Result};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// The model's scores on the calibration and test events; each event is
/// scored in the context of the previous events of its key, as live.
pub(super) fn model_scores(
    args: &EvalArgs,
    learning: &Learning,
    data: &Data,
    report: &mut Report,
) -> Result<Vec<Scores>> {
    let threads = args.threads.max(1) as usize;
    crate::model::set_libtorch_threads(threads);
    // Templates are keyed on the configured rendering, on both sides.
    let renderer = crate::curriculum::Renderer::new(&learning.render)?;
    let hows: Vec<&str> = args
        .model_score
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    for how in &hows {
        anyhow::ensure!(
            MODEL_SCORES.contains(how),
            "--model-score {how:?}: expected one of {}",
            MODEL_SCORES.join(", ")
        );
    }
    anyhow::ensure!(!hows.is_empty(), "--model-score: no score named");
    if let Some(p) = args.score_cache.as_ref().filter(|p| p.exists()) {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let (calib, test): (Vec<ModelScore>, Vec<ModelScore>) = serde_json::from_str(&text)?;
        anyhow::ensure!(
            calib.len() == data.calib.len() && test.len() == data.test.len(),
            "{} holds scores for other data ({} + {} events, here {} + {})",
            p.display(),
            calib.len(),
            test.len(),
            data.calib.len(),
            data.test.len()
        );
        eprintln!("eval: model scores from {}", p.display());
        // The tails are refitted, so a cache serves any tail rule.
        let lines = lines(data, &renderer, args.group_by.is_some());
        let (calib, test) = calibrate(data, (&renderer, learning.sampling), &lines, calib, test);
        return Ok(model_rows(&hows, &calib, &test, "cached".into()));
    }
    let t0 = Instant::now();
    let ck = match &args.model {
        Some(p) => Checkpoint::load(p)?,
        None => {
            let registry = args
                .registry
                .clone()
                .unwrap_or_else(|| crate::sim::sidecar(&args.train, ".registry.yaml"));
            let plan = Plan {
                steps: args.steps,
                init: None,
                registry,
                ttl_hours: 0.0,
                half_life_hours: 0.0,
                seed: args.seed,
                threads: args.threads,
                val_fraction: args.val_fraction.unwrap_or(if args.group_by.is_some() {
                    0.0
                } else {
                    0.1
                }),
                learning: Learning {
                    shape: crate::model::GptConfig {
                        block_size: args.block_size.unwrap_or(learning.shape.block_size),
                        ..learning.shape
                    },
                    ..learning.clone()
                },
            };
            let fit: Vec<Event> = data
                .fit
                .iter()
                .map(|&i| data.train_src[i].clone())
                .collect();
            eprintln!(
                "eval: training the model on {} events, {} steps",
                fit.len(),
                args.steps
            );
            use std::io::IsTerminal;
            let (ck, summary) = train_events(&fit, &plan, std::io::stderr().is_terminal())?;
            report.model = Some(serde_json::to_value(&summary)?);
            if let Some(p) = &args.save_model {
                ck.save(p)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            ck
        }
    };
    let train_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let score_idx = |events: &[Event], idx: &[usize]| -> Result<Vec<ModelScore>> {
        event_scores(&ck, events, idx, args.batch, threads)
    };
    // Context warm-up: the last few training events of each key before the
    // calibration slice (per event mode; sessions are their own context).
    let warm = warmup(
        &data.train_src,
        &data.fit,
        &data.calib,
        args.group_by.is_some(),
    );
    let (calib, test) = if data.test_src.is_none() {
        // One pass over warm-up, calibration and test in time order.
        let mut all: Vec<(usize, u8)> = warm.iter().map(|&i| (i, 0u8)).collect();
        all.extend(data.calib.iter().map(|&i| (i, 1u8)));
        all.extend(data.test.iter().map(|&i| (i, 2u8)));
        all.sort_by_key(|&(i, _)| i);
        let idx: Vec<usize> = all.iter().map(|&(i, _)| i).collect();
        eprintln!("eval: model scoring {} events", idx.len());
        let s = score_idx(&data.train_src, &idx)?;
        let (mut c, mut t) = (Vec::new(), Vec::new());
        for ((_, part), v) in all.iter().zip(s) {
            match part {
                1 => c.push(v),
                2 => t.push(v),
                _ => {}
            }
        }
        (c, t)
    } else {
        let cached: Option<Vec<ModelScore>> = match &args.calib_cache {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                let c: Vec<ModelScore> = serde_json::from_str(&text)?;
                anyhow::ensure!(
                    c.len() == data.calib.len(),
                    "{} holds {} calibration scores, here {} events",
                    p.display(),
                    c.len(),
                    data.calib.len()
                );
                eprintln!("eval: calibration scores from {}", p.display());
                Some(c)
            }
            _ => None,
        };
        let c = match cached {
            Some(c) => c,
            None => {
                let mut idx = warm.clone();
                idx.extend(&data.calib);
                idx.sort_unstable();
                eprintln!("eval: model scoring {} calibration events", idx.len());
                let s = score_idx(&data.train_src, &idx)?;
                let calib_set: BTreeSet<usize> = data.calib.iter().copied().collect();
                let c: Vec<ModelScore> = idx
                    .iter()
                    .zip(s)
                    .filter(|(i, _)| calib_set.contains(i))
                    .map(|(_, v)| v)
                    .collect();
                if let Some(p) = &args.calib_cache {
                    std::fs::write(p, serde_json::to_string(&c)?)
                        .with_context(|| format!("writing {}", p.display()))?;
                }
                c
            }
        };
        eprintln!("eval: model scoring {} test events", data.test.len());
        let t = score_idx(data.test_events(), &data.test)?;
        (c, t)
    };
    let scored_s = t1.elapsed().as_secs_f64();
    let lines = lines(data, &renderer, args.group_by.is_some());
    let (calib, test) = calibrate(data, (&renderer, learning.sampling), &lines, calib, test);
    if let Some(p) = &args.score_cache {
        std::fs::write(p, serde_json::to_string(&(&calib, &test))?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(model_rows(
        &hows,
        &calib,
        &test,
        format!("trained in {train_s:.0}s, scored in {scored_s:.0}s"),
    ))
}

fn model_rows(
    hows: &[&str],
    calib: &[ModelScore],
    test: &[ModelScore],
    how_long: String,
) -> Vec<Scores> {
    let unscored = test.iter().filter(|m| m.repeat).count();
    let how_long = format!(
        "{how_long}; {unscored} of {} test events left unscored as live (a pulse repeating its key's previous one)",
        test.len()
    );
    hows.iter()
        .map(|how| Scores {
            name: if hows.len() == 1 {
                "model".into()
            } else {
                format!("model:{how}")
            },
            calib: calib.iter().map(|m| m.get(how)).collect(),
            test: test.iter().map(|m| m.get(how)).collect(),
            note: Some(format!("{how} score; {how_long}")),
            live: *how == "live",
            unscored: (
                calib.iter().map(|m| m.repeat).collect(),
                test.iter().map(|m| m.repeat).collect(),
            ),
        })
        .collect()
}

/// The model scores `--model-score` accepts.
const MODEL_SCORES: [&str; 11] = [
    "live",
    "z",
    "loss",
    "span",
    "content",
    "cspan",
    "xsum",
    "xspan",
    "xmax",
    "xall",
    "surprisal",
];

/// Every way the model can score one event.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, Deserialize)]
pub struct ModelScore {
    /// The live score: `surprise` calibrated against the surprise tails fitted
    /// on the calibration slice, as EVALUATE fits them on recent events,
    /// then, on the test events, updated online as the live scorer's
    /// ([`crate::scorer::LiveTails`], [`calibrate`]).
    #[serde(default)]
    pub live: f32,
    /// The live statistic, [`crate::scorer::surprisal`].
    #[serde(default)]
    pub surprise: f32,
    /// Robust z of `loss` against the checkpoint's baseline for the key.
    pub z: f32,
    /// Mean loss per token of the event.
    pub loss: f32,
    /// Mean loss of the event's most surprising 8-token stretch.
    pub span: f32,
    /// Mean loss over the event's tokens without its source name (which
    /// source speaks is the key's identity, not what it says).
    pub content: f32,
    /// `span` over the same tokens as `content`.
    pub cspan: f32,
    /// Excess surprise over the content tokens
    /// ([`crate::scorer::excess_surprise`]): the sum of loss - entropy, its
    /// most surprising 8-token stretch, its largest token.
    pub xsum: f32,
    pub xspan: f32,
    pub xmax: f32,
    /// `xsum` over every token, the source name's included.
    #[serde(default)]
    pub xall: f32,
    /// A pulse repeating its key's previous one: the live scorer leaves it
    /// unscored ([`crate::curriculum::Repeats`]), so every score is 0 and
    /// the decision restates its key's last pulse or only hears it
    /// ([`crate::scorer::decide::Decider::restated`]).
    #[serde(default)]
    pub repeat: bool,
}

impl ModelScore {
    pub fn get(&self, how: &str) -> f32 {
        match how {
            "loss" => self.loss,
            "span" => self.span,
            "content" => self.content,
            "cspan" => self.cspan,
            "xsum" => self.xsum,
            "xspan" => self.xspan,
            "xmax" => self.xmax,
            "xall" => self.xall,
            "surprisal" => self.surprise,
            "z" => self.z,
            _ => self.live,
        }
    }
}

/// Scores events `idx` of `events` in order, each in the context of the
/// previous scored events of its key, every way [`ModelScore`] knows.
fn event_scores(
    ck: &Checkpoint,
    events: &[Event],
    idx: &[usize],
    batch: usize,
    threads: usize,
) -> Result<Vec<ModelScore>> {
    use crate::scorer::offline::{score_chunks, Chunk, Read};
    use crate::scorer::{content_positions, excess_surprise, excess_tokens, surprisal};
    let mut out = Vec::with_capacity(idx.len());
    let picked = idx.iter().map(|&i| &events[i]);
    score_chunks(ck, picked, Read::Live, batch, threads, |c: Chunk<'_>| {
        for pl in c.prepared.iter().zip(c.losses) {
            let (Some(p), Some(l)) = pl else {
                out.push(ModelScore {
                    repeat: true,
                    ..ModelScore::default()
                });
                continue;
            };
            let pos = content_positions(&p.tokens);
            let content: Vec<f32> = pos
                .iter()
                .filter_map(|&j| l.token_losses.get(j).copied())
                .collect();
            let mean = if content.is_empty() {
                0.0
            } else {
                content.iter().sum::<f32>() / content.len() as f32
            };
            let kind = p.kind.unwrap_or(crate::event::Kind::Graph);
            let x = excess_tokens(&p.tokens, l);
            out.push(ModelScore {
                live: 0.0,
                surprise: surprisal(&p.tokens, l),
                z: ck.meta.baselines.score(&p.key, kind, l.loss).0,
                loss: l.loss,
                // The stretch statistic, not the readable field the alert shows.
                span: crate::scorer::span::surprising_span(
                    &l.token_losses,
                    crate::scorer::SPAN_WIDTH,
                )
                .2,
                content: mean,
                cspan: crate::scorer::span::surprising_span(&content, crate::scorer::SPAN_WIDTH).2,
                xsum: excess_surprise(&p.tokens, l),
                xspan: crate::scorer::span::surprising_span(&x, crate::scorer::SPAN_WIDTH).2,
                xmax: x.iter().copied().fold(0.0f32, f32::max),
                xall: l
                    .token_losses
                    .iter()
                    .zip(&l.token_entropies)
                    .map(|(l, h)| l - h)
                    .filter(|v| v.is_finite())
                    .sum(),
                repeat: false,
            });
        }
        Ok(())
    })?;
    Ok(out)
}

/// The live score of every event: the surprise tails refitted on the
/// calibration slice's surprisal (unlabelled, anomalies and all: the
/// slice stands for the recent events the growth loop's EVALUATE step fits
/// them on, so only the events the harvester would have made curriculum of
/// count), each calibration event calibrated against its kind's tail;
/// then the test events in time order through the live scorer's
/// [`LiveTails`], those tails shipped, each kind's own refitted on the test
/// events' values as they come (faults included), as live. The shipped
/// template caps ([`crate::rarity`]) are fitted on the calibration slice
/// too, as EVALUATE fits them. A repeated pulse, unscored live, keeps its 0.
fn calibrate(
    data: &Data,
    (renderer, sampling): (&crate::curriculum::Renderer, crate::curriculum::Sampling),
    (lines, test_lines): &(Vec<String>, Vec<String>),
    mut calib: Vec<ModelScore>,
    mut test: Vec<ModelScore>,
) -> (Vec<ModelScore>, Vec<ModelScore>) {
    let (cal, tst) = (&data.train_src, data.test_events());
    let (signatures, admitted) = curriculum(data, renderer, sampling);
    let every: Vec<_> = data
        .calib
        .iter()
        .zip(&calib)
        .zip(lines.iter())
        .map(|((&i, m), line)| {
            (
                cal[i].kind(),
                crate::rarity::template_key(line, &cal[i].source),
                cal[i].source.as_str(),
                m.surprise,
            )
        })
        .collect();
    // Fitted on what the curriculum would hold and the scorer scores.
    let fitted: Vec<_> = every
        .iter()
        .zip(data.calib.iter().zip(&calib))
        .filter(|(_, (&i, m))| admitted[i] && !m.repeat)
        .map(|(o, _)| *o)
        .collect();
    let mut s = Surprise::fit_with_templates(&fitted);
    s.signatures = signatures;
    // The model's age, as a checkpoint carries it: the policy's and the
    // signature floor's margin read it.
    s.seen = data.fit_seen();
    let margin = crate::policy::Policy::age_margin(s.seen_ms());
    for (((kind, template, source, x), m), line) in
        every.iter().zip(calib.iter_mut()).zip(lines.iter())
    {
        if m.repeat {
            continue;
        }
        let tails = s.calibrate(*kind, *x).score;
        let capped = s
            .templates
            .cap(*kind, *template, *x)
            .map_or(tails, |c| c.min(tails));
        m.live = s.signatures.apply(capped, source, line, margin);
    }
    let mut live = LiveTails::new(s);
    for ((&i, m), line) in data.test.iter().zip(test.iter_mut()).zip(test_lines) {
        if m.repeat {
            continue;
        }
        let e = &tst[i];
        m.live = live
            .calibrate_line(&e.source, e.kind(), line, e.ts, m.surprise)
            .score;
    }
    (calib, test)
}

/// The curriculum the live harvester would have made of the training
/// events (fit and calibration, in time order, through its
/// [`crate::curriculum::Sampler`]): which events it admits, by index into
/// `data.train_src`, and the signatures' counts over them, as the trainer
/// counts its curriculum ([`crate::signature`]).
fn curriculum(
    data: &Data,
    renderer: &crate::curriculum::Renderer,
    sampling: crate::curriculum::Sampling,
) -> (crate::signature::Signatures, Vec<bool>) {
    let mut idx: Vec<usize> = data.fit.iter().chain(&data.calib).copied().collect();
    idx.sort_unstable();
    let mut sc = renderer.scaler();
    let mut sampler = crate::curriculum::Sampler::new(sampling);
    let mut admitted = vec![false; data.train_src.len()];
    let mut c = crate::signature::Counter::default();
    for i in idx {
        let e = &data.train_src[i];
        let line = renderer.render(e, &mut sc);
        if sampler.admit(e, &line) == crate::curriculum::Sample::Keep {
            admitted[i] = true;
            c.count(&e.source, &line);
        }
    }
    (c.finish(), admitted)
}

/// The calibration and test events' lines as they were scored: rendered
/// in the same walks over the events as [`model_scores`] scores them (a
/// pulse is read against its series' earlier values,
/// [`crate::curriculum::Scaler`]), so a cached score meets the line it was
/// scored on.
fn lines(
    data: &Data,
    renderer: &crate::curriculum::Renderer,
    grouped: bool,
) -> (Vec<String>, Vec<String>) {
    let warm = warmup(&data.train_src, &data.fit, &data.calib, grouped);
    let walk = |events: &[Event], parts: Vec<(usize, u8)>| {
        let mut sc = renderer.scaler();
        let (mut c, mut t) = (Vec::new(), Vec::new());
        for (i, part) in parts {
            let line = renderer.render(&events[i], &mut sc);
            match part {
                1 => c.push(line),
                2 => t.push(line),
                _ => {}
            }
        }
        (c, t)
    };
    let mut parts: Vec<(usize, u8)> = warm.iter().map(|&i| (i, 0u8)).collect();
    parts.extend(data.calib.iter().map(|&i| (i, 1u8)));
    if data.test_src.is_none() {
        parts.extend(data.test.iter().map(|&i| (i, 2u8)));
        parts.sort_by_key(|&(i, _)| i);
        return walk(&data.train_src, parts);
    }
    parts.sort_by_key(|&(i, _)| i);
    let (c, _) = walk(&data.train_src, parts);
    let (_, t) = walk(
        data.test_events(),
        data.test.iter().map(|&i| (i, 2u8)).collect(),
    );
    (c, t)
}

/// Up to 8 of each key's last fit events before the calibration slice, so the
/// first calibration events are scored in context as they would be live.
fn warmup(events: &[Event], fit: &[usize], calib: &[usize], grouped: bool) -> Vec<usize> {
    if grouped || calib.is_empty() {
        return Vec::new();
    }
    let first = calib[0];
    let mut per: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<usize> = Vec::new();
    for &i in fit.iter().rev().filter(|&&i| i < first) {
        let n = per.entry(events[i].key.as_str()).or_insert(0);
        if *n < 8 {
            *n += 1;
            out.push(i);
        }
    }
    out.reverse();
    out
}
