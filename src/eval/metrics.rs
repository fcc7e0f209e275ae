//! Detection metrics on scored, labelled units (events or sessions).
//!
//! Conventions, the same everywhere in `proprio eval`:
//! - a unit is flagged when its score is **at or above** the threshold, as
//!   the live scorer alerts ([`crate::scorer::decide::crosses`]; eval puts
//!   the threshold just above a quantile of a normal slice, so that a unit
//!   is flagged only when it is more surprising than that quantile);
//! - AUROC is the Mann-Whitney probability that a random anomalous unit
//!   scores above a random normal one, ties counting one half;
//! - AUPRC is average precision (scikit-learn's `average_precision_score`):
//!   the sum over distinct score thresholds, highest first, of the recall
//!   gained times the precision at that threshold; units with equal scores
//!   enter together, so ties are never ordered in the detector's favour;
//! - quantiles are nearest-rank from above (`q = 1` is the maximum).
//!
//! Undefined values (no anomalous unit, no normal unit, nothing flagged)
//! are `None`, never a silent 0 or NaN.

use serde::Serialize;

/// Counts at one threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

impl Confusion {
    /// Flags `score >= threshold` (the live rule); NaN scores count as not flagged.
    pub fn at(scores: &[f32], labels: &[bool], threshold: f32) -> Confusion {
        assert_eq!(scores.len(), labels.len(), "one label per score");
        let mut c = Confusion::default();
        for (&s, &y) in scores.iter().zip(labels) {
            match (crate::scorer::decide::crosses(s, threshold), y) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        c
    }

    /// TP / (TP + FP); None when nothing is flagged.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }

    /// TP / (TP + FN); None when there is no anomalous unit.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// Harmonic mean of precision and recall: 2TP / (2TP + FP + FN). None
    /// when there is no anomalous unit and nothing is flagged; 0 when either
    /// side is defined and TP is 0.
    pub fn f1(&self) -> Option<f64> {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    /// FP / (FP + TN); None when there is no normal unit.
    pub fn false_positive_rate(&self) -> Option<f64> {
        ratio(self.fp, self.fp + self.tn)
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Indices of `scores` sorted by score, highest first (NaN lowest).
fn order_desc(scores: &[f32]) -> Vec<usize> {
    let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| key(scores[b]).total_cmp(&key(scores[a])));
    idx
}

/// Groups of equal scores, highest first: (positives, negatives) per group.
fn tie_groups(scores: &[f32], labels: &[bool]) -> Vec<(u64, u64)> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    let mut groups: Vec<(u64, u64)> = Vec::new();
    let mut last: Option<f32> = None;
    for i in order_desc(scores) {
        let s = key(scores[i]);
        if last != Some(s) {
            groups.push((0, 0));
            last = Some(s);
        }
        let g = groups.last_mut().expect("pushed above");
        if labels[i] {
            g.0 += 1;
        } else {
            g.1 += 1;
        }
    }
    groups
}

/// Area under the ROC curve (ties count one half). None without both classes.
pub fn auroc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let groups = tie_groups(scores, labels);
    let pos: u64 = groups.iter().map(|g| g.0).sum();
    let neg: u64 = groups.iter().map(|g| g.1).sum();
    if pos == 0 || neg == 0 {
        return None;
    }
    // Walk from the lowest scores up: each positive beats every negative
    // already passed and ties half of those in its own group.
    let mut below = 0u64;
    let mut wins = 0.0f64;
    for &(p, n) in groups.iter().rev() {
        wins += p as f64 * (below as f64 + 0.5 * n as f64);
        below += n;
    }
    Some(wins / (pos as f64 * neg as f64))
}

/// Average precision (area under the precision-recall curve, step-wise, ties
/// entering together). None without an anomalous unit.
pub fn auprc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let groups = tie_groups(scores, labels);
    let pos: u64 = groups.iter().map(|g| g.0).sum();
    if pos == 0 {
        return None;
    }
    let (mut tp, mut fp, mut ap) = (0u64, 0u64, 0.0f64);
    for (p, n) in groups {
        tp += p;
        fp += n;
        if p > 0 {
            ap += (p as f64 / pos as f64) * (tp as f64 / (tp + fp) as f64);
        }
    }
    Some(ap)
}

/// Nearest-rank quantile from above: the smallest score with at least a
/// share `q` of the scores at or below it; `q >= 1` gives the maximum, `q <=
/// 0` the minimum. NaN scores are ignored; None when none is left.
pub fn quantile(scores: &[f32], q: f64) -> Option<f32> {
    let mut v: Vec<f32> = scores.iter().copied().filter(|s| !s.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    Some(v[rank.clamp(1, n) - 1])
}

/// Median of values (mean of the middle two for an even count); None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    Some(crate::baseline::median(&mut v))
}

/// How a session's score is made from its events' scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// The highest event score.
    Max,
    /// Mean of the k highest event scores (all of them when fewer).
    TopK(usize),
    /// Mean of all event scores.
    Mean,
}

impl Aggregate {
    pub fn apply(self, scores: &[f32]) -> f32 {
        if scores.is_empty() {
            return f32::NAN;
        }
        match self {
            Aggregate::Max => scores.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            Aggregate::Mean => scores.iter().sum::<f32>() / scores.len() as f32,
            Aggregate::TopK(k) => {
                let mut v = scores.to_vec();
                v.sort_by(|a, b| b.total_cmp(a));
                let k = k.clamp(1, v.len());
                v[..k].iter().sum::<f32>() / k as f32
            }
        }
    }

    pub fn name(self) -> String {
        match self {
            Aggregate::Max => "max".into(),
            Aggregate::Mean => "mean".into(),
            Aggregate::TopK(k) => format!("top{k}"),
        }
    }
}

impl std::str::FromStr for Aggregate {
    type Err = String;
    fn from_str(s: &str) -> Result<Aggregate, String> {
        match s.trim() {
            "max" => Ok(Aggregate::Max),
            "mean" => Ok(Aggregate::Mean),
            t => t
                .strip_prefix("top")
                .and_then(|k| k.trim_start_matches(['-', ':']).parse::<usize>().ok())
                .filter(|&k| k > 0)
                .map(Aggregate::TopK)
                .ok_or_else(|| {
                    format!("unknown aggregate {s:?}: expected max, mean or topK (e.g. top3)")
                }),
        }
    }
}

/// The fault type of a label: the part before a final `-<digits>` (`oom_death-2`
/// → `oom_death`), or the whole label when it has no such suffix (`KERNDTLB`).
pub fn label_type(label: &str) -> &str {
    match label.rsplit_once('-') {
        Some((kind, n))
            if !kind.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            kind
        }
        _ => label,
    }
}
