//! The events an evaluation works on: reading and ordering the files, the
//! time cut into training, calibration and test parts, the units (events or
//! sessions) that are scored and judged, and the faults to detect.

use super::metrics::{label_type, Aggregate};
use super::EvalArgs;
use crate::event::{read_jsonl, Event};
use anyhow::{Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// One ground-truth fault (the simulator's FILE.faults.json entries; extra fields ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FaultTruth {
    pub id: String,
    pub kind: String,
    pub start_ms: i64,
    pub end_ms: i64,
    #[serde(default)]
    pub sources: Vec<String>,
    /// The service the fault hit first (the simulator's `Fault::root`);
    /// `None` when the faults come from labels or an older faults file.
    #[serde(default)]
    pub root: Option<String>,
    /// Sources count as evidence (true for a faults file; labels only otherwise).
    #[serde(skip, default = "yes")]
    pub by_source: bool,
}

fn yes() -> bool {
    true
}

/// The events an evaluation works on: indices into the source files.
pub(super) struct Data {
    pub train_src: Vec<Event>,
    /// None: the test part is in `train_src` (a split).
    pub test_src: Option<Vec<Event>>,
    pub fit: Vec<usize>,
    pub calib: Vec<usize>,
    pub test: Vec<usize>,
}

impl Data {
    pub fn test_events(&self) -> &[Event] {
        self.test_src.as_deref().unwrap_or(&self.train_src)
    }

    /// The telemetry time the fitted events cover: what a model trained
    /// on them has seen ([`crate::policy::Policy::for_model`]).
    pub fn fit_span_ms(&self) -> Option<i64> {
        let (a, b) = self.fit_seen()?;
        Some(b - a)
    }

    /// The first and last fitted event's time, as a checkpoint's
    /// [`crate::baseline::Surprise::seen`] says it.
    pub fn fit_seen(&self) -> Option<(i64, i64)> {
        let ts = self.fit.iter().map(|&i| self.train_src[i].ts);
        ts.fold(None, |acc, t| crate::baseline::Surprise::widen(acc, t, t))
    }
}

fn read_sorted(p: &Path) -> Result<Vec<Event>> {
    let mut ev = read_jsonl(p)?;
    ensure_nonempty(&ev, p)?;
    ev.sort_by_key(|e| e.ts);
    Ok(ev)
}

fn ensure_nonempty(ev: &[Event], p: &Path) -> Result<()> {
    anyhow::ensure!(!ev.is_empty(), "{} holds no events", p.display());
    Ok(())
}

/// Cuts `idx` (events in time order) into (older, newer), the newer holding
/// `share` of the events, or of the sessions by first event when grouped.
fn cut(
    events: &[Event],
    idx: &[usize],
    share_newer: f64,
    grouped: bool,
) -> (Vec<usize>, Vec<usize>) {
    let share = share_newer.clamp(0.0, 1.0);
    if !grouped {
        let n_new = (idx.len() as f64 * share).round() as usize;
        let at = idx.len() - n_new.min(idx.len());
        return (idx[..at].to_vec(), idx[at..].to_vec());
    }
    let mut order: Vec<&str> = Vec::new();
    let mut seen = BTreeSet::new();
    for &i in idx {
        if seen.insert(events[i].key.as_str()) {
            order.push(events[i].key.as_str());
        }
    }
    let n_new = (order.len() as f64 * share).round() as usize;
    let newer: BTreeSet<&str> = order[order.len() - n_new.min(order.len())..]
        .iter()
        .copied()
        .collect();
    idx.iter()
        .partition(|&&i| !newer.contains(events[i].key.as_str()))
}

/// Appends an end marker after each key's last event (see `--session-end`).
pub fn with_session_ends(events: Vec<Event>) -> Vec<Event> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    let mut label: HashMap<&str, &str> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        last.insert(e.key.as_str(), i);
        if let Some(l) = &e.label {
            label.entry(e.key.as_str()).or_insert(l.as_str());
        }
    }
    let ends: BTreeSet<usize> = last.values().copied().collect();
    let mut out = Vec::with_capacity(events.len() + ends.len());
    for (i, e) in events.iter().enumerate() {
        out.push(e.clone());
        if ends.contains(&i) {
            out.push(Event {
                ts: e.ts,
                source: "session".into(),
                key: e.key.clone(),
                body: crate::event::Body::Log {
                    message: "end".into(),
                    level: None,
                },
                label: label.get(e.key.as_str()).map(|l| l.to_string()),
            });
        }
    }
    out
}

pub(super) fn load(args: &EvalArgs) -> Result<Data> {
    let grouped = args.group_by.is_some();
    anyhow::ensure!(
        !args.session_end || grouped,
        "--session-end needs --group-by key"
    );
    let read = |p: &Path| -> Result<Vec<Event>> {
        let ev = read_sorted(p)?;
        Ok(if args.session_end {
            with_session_ends(ev)
        } else {
            ev
        })
    };
    let train_src = read(&args.train)?;
    let (train_part, test_src, test) = match &args.test {
        Some(t) => {
            let test_src = read(t)?;
            let n = test_src.len();
            (
                (0..train_src.len()).collect::<Vec<_>>(),
                Some(test_src),
                (0..n).collect(),
            )
        }
        None => {
            anyhow::ensure!(
                args.split > 0.0 && args.split < 1.0,
                "--split must be between 0 and 1 (exclusive) when --test is not given"
            );
            let all: Vec<usize> = (0..train_src.len()).collect();
            let (a, b) = cut(&train_src, &all, 1.0 - args.split, grouped);
            (a, None, b)
        }
    };
    let (mut fit, mut calib) = if args.calibration > 0.0 {
        cut(&train_src, &train_part, args.calibration, grouped)
    } else {
        (train_part.clone(), train_part)
    };
    if args.train_normal_only {
        let bad: BTreeSet<&str> = if grouped {
            train_src
                .iter()
                .filter(|e| e.label.is_some())
                .map(|e| e.key.as_str())
                .collect()
        } else {
            BTreeSet::new()
        };
        let keep = |i: &usize| {
            let e = &train_src[*i];
            e.label.is_none() && !bad.contains(e.key.as_str())
        };
        fit.retain(keep);
        calib.retain(keep);
    }
    anyhow::ensure!(!fit.is_empty(), "nothing to train on after the split");
    anyhow::ensure!(
        !calib.is_empty(),
        "the calibration slice is empty: raise --calibration"
    );
    anyhow::ensure!(!test.is_empty(), "nothing to test");
    Ok(Data {
        train_src,
        test_src,
        fit,
        calib,
        test,
    })
}

/// Faults to detect: the test file's faults file, or one per distinct label.
pub(super) fn faults_for(
    args: &EvalArgs,
    test_events: &[Event],
    test: &[usize],
) -> Result<(Vec<FaultTruth>, &'static str)> {
    let file = args.test.as_deref().unwrap_or(&args.train);
    let side = crate::sim::sidecar(file, ".faults.json");
    if side.exists() {
        let text = std::fs::read_to_string(&side)
            .with_context(|| format!("reading {}", side.display()))?;
        let mut f: Vec<FaultTruth> =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", side.display()))?;
        // A split keeps only the faults that start in the test part.
        if args.test.is_none() {
            let t0 = test
                .iter()
                .map(|&i| test_events[i].ts)
                .min()
                .unwrap_or(i64::MAX);
            f.retain(|x| x.start_ms >= t0);
        }
        return Ok((f, "faults file"));
    }
    let mut by: BTreeMap<&str, FaultTruth> = BTreeMap::new();
    for &i in test {
        let e = &test_events[i];
        if let Some(l) = &e.label {
            let f = by.entry(l.as_str()).or_insert_with(|| FaultTruth {
                id: l.clone(),
                kind: label_type(l).to_string(),
                start_ms: e.ts,
                end_ms: e.ts,
                sources: Vec::new(),
                root: None,
                by_source: false,
            });
            f.start_ms = f.start_ms.min(e.ts);
            f.end_ms = f.end_ms.max(e.ts);
            if !f.sources.contains(&e.source) {
                f.sources.push(e.source.clone());
            }
        }
    }
    let f: Vec<FaultTruth> = by.into_values().collect();
    let how = if f.is_empty() { "none" } else { "labels" };
    Ok((f, how))
}

/// A unit (event or session) of the test or calibration part.
pub(super) struct Units {
    /// Per unit: event indices (into the part's index list) in time order.
    pub members: Vec<Vec<usize>>,
    pub labels: Vec<Option<String>>,
}

pub(super) fn units(events: &[Event], idx: &[usize], grouped: bool) -> Units {
    if !grouped {
        return Units {
            members: (0..idx.len()).map(|j| vec![j]).collect(),
            labels: idx.iter().map(|&i| events[i].label.clone()).collect(),
        };
    }
    let mut pos: HashMap<&str, usize> = HashMap::new();
    let mut u = Units {
        members: Vec::new(),
        labels: Vec::new(),
    };
    for (j, &i) in idx.iter().enumerate() {
        let e = &events[i];
        let k = *pos.entry(e.key.as_str()).or_insert_with(|| {
            u.members.push(Vec::new());
            u.labels.push(None);
            u.members.len() - 1
        });
        u.members[k].push(j);
        if u.labels[k].is_none() {
            u.labels[k] = e.label.clone();
        }
    }
    u
}

pub(super) fn unit_scores(u: &Units, event_scores: &[f32], agg: Aggregate) -> Vec<f32> {
    u.members
        .iter()
        .map(|m| {
            let s: Vec<f32> = m.iter().map(|&j| event_scores[j]).collect();
            agg.apply(&s)
        })
        .collect()
}
