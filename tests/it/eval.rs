//! The evaluation harness: metric computations on hand-made cases, the
//! threshold rule, session aggregation, and `proprio eval` end to end on a
//! small simulated scenario.

use proprio::config::Learning;
use proprio::eval::metrics::{auprc, auroc, label_type, median, quantile, Aggregate, Confusion};
use proprio::eval::{evaluate, EvalArgs};
use proprio::event::{Body, Event};
use std::path::Path;

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn precision_recall_f1_at_a_threshold() {
    let s = [0.9, 0.8, 0.7, 0.3, 0.2];
    let y = [true, false, true, false, true];
    let c = Confusion::at(&s, &y, 0.5);
    assert_eq!((c.tp, c.fp, c.tn, c.fn_), (2, 1, 1, 1));
    assert!(close(c.precision(), 2.0 / 3.0));
    assert!(close(c.recall(), 2.0 / 3.0));
    assert!(close(c.f1(), 2.0 / 3.0));
    // At or above, as the live scorer alerts: a score equal to the threshold is flagged.
    let c = Confusion::at(&s, &y, 0.7);
    assert_eq!((c.tp, c.fp), (2, 1));
    // Flag everything: recall 1, precision = prevalence.
    let c = Confusion::at(&s, &y, f32::NEG_INFINITY);
    assert!(close(c.recall(), 1.0) && close(c.precision(), 0.6));
    assert!(close(c.f1(), 2.0 * 0.6 / 1.6));
    // Nothing flagged: precision undefined, F1 0.
    let c = Confusion::at(&s, &y, 5.0);
    assert_eq!(c.precision(), None);
    assert!(close(c.f1(), 0.0));
    // No anomalous unit: recall undefined.
    assert_eq!(Confusion::at(&s, &[false; 5], 0.5).recall(), None);
}

#[test]
fn auroc_and_auprc_known_values() {
    // scikit-learn's documented example: roc_auc_score = 0.75,
    // average_precision_score = 0.8333.
    let s = [0.1, 0.4, 0.35, 0.8];
    let y = [false, false, true, true];
    assert!(close(auroc(&s, &y), 0.75));
    assert!(close(auprc(&s, &y), 5.0 / 6.0));
    // Perfect and inverted rankings.
    let y2 = [false, true, false, true];
    assert!(close(auroc(&[0.1, 0.9, 0.2, 0.8], &y2), 1.0));
    assert!(close(auprc(&[0.1, 0.9, 0.2, 0.8], &y2), 1.0));
    assert!(close(auroc(&[0.9, 0.1, 0.8, 0.2], &y2), 0.0));
    // Undefined without both classes.
    assert_eq!(auroc(&s, &[true; 4]), None);
    assert_eq!(auroc(&s, &[false; 4]), None);
    assert_eq!(auprc(&s, &[false; 4]), None);
    assert!(close(auprc(&s, &[true; 4]), 1.0));
}

#[test]
fn ties_are_never_ordered_in_the_detectors_favour() {
    // All equal: chance.
    let y = [false, true, false, true];
    assert!(close(auroc(&[0.5; 4], &y), 0.5));
    assert!(close(auprc(&[0.5; 4], &y), 0.5));
    // One positive tied with one negative at the top, one negative below:
    // AUROC = (0.5 + 1) / 2; AP = precision 1/2 at recall 1.
    let s = [1.0, 1.0, 0.0];
    let y = [true, false, false];
    assert!(close(auroc(&s, &y), 0.75));
    assert!(close(auprc(&s, &y), 0.5));
    // Same with the order of the tied pair swapped: same values.
    assert!(close(auroc(&[1.0, 1.0, 0.0], &[false, true, false]), 0.75));
    assert!(close(auprc(&[1.0, 1.0, 0.0], &[false, true, false]), 0.5));
    // s = [3, 2, 2, 1], y = [1, 1, 0, 0]: AUROC = (2 + 1.5) / 4;
    // AP = 1/2 * 1 + 1/2 * 2/3.
    let s = [3.0, 2.0, 2.0, 1.0];
    let y = [true, true, false, false];
    assert!(close(auroc(&s, &y), 0.875));
    assert!(close(auprc(&s, &y), 0.5 + 1.0 / 3.0));
    // NaN scores rank lowest.
    assert!(close(auroc(&[f32::NAN, 1.0], &[false, true]), 1.0));
}

#[test]
fn quantile_median_aggregate_and_types() {
    let v: Vec<f32> = (1..=10).map(|i| i as f32).collect();
    assert_eq!(quantile(&v, 1.0), Some(10.0));
    assert_eq!(quantile(&v, 0.9), Some(9.0));
    assert_eq!(quantile(&v, 0.95), Some(10.0));
    assert_eq!(quantile(&v, 0.0), Some(1.0));
    assert_eq!(quantile(&[], 0.5), None);
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    let s = [1.0, 5.0, 3.0, 4.0];
    assert_eq!(Aggregate::Max.apply(&s), 5.0);
    assert_eq!(Aggregate::TopK(2).apply(&s), 4.5);
    assert_eq!(Aggregate::TopK(9).apply(&s), 3.25);
    assert_eq!(Aggregate::Mean.apply(&s), 3.25);
    assert_eq!("top3".parse::<Aggregate>(), Ok(Aggregate::TopK(3)));
    assert!("top0".parse::<Aggregate>().is_err());
    assert_eq!(label_type("oom_death-2"), "oom_death");
    assert_eq!(label_type("hdfs_anomaly-13"), "hdfs_anomaly");
    assert_eq!(label_type("KERNDTLB"), "KERNDTLB");
    assert_eq!(label_type("a-b"), "a-b");
}

fn log(ts: i64, key: &str, msg: &str, label: Option<&str>) -> Event {
    Event {
        ts,
        source: "svc".into(),
        key: key.into(),
        body: Body::Log {
            message: msg.into(),
            level: Some("info".into()),
        },
        label: label.map(str::to_string),
    }
}

fn write(path: &Path, events: &[Event]) {
    let text: String = events.iter().map(|e| e.to_json() + "\n").collect();
    std::fs::write(path, text).unwrap();
}

/// Sessions of three normal lines; anomalous sessions add a line never seen
/// in training. The rare-template baseline must rank them first.
#[test]
fn sessions_aggregate_and_threshold_ignores_test_labels() {
    let d = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    let mut ts = 0;
    for s in 0..100 {
        let key = format!("blk_{s}");
        let anomalous = s >= 60 && s % 10 == 3;
        let label = anomalous.then(|| format!("bad-{s}"));
        for m in ["open block 17", "write 4096 bytes", "close block 17"] {
            ts += 1000;
            events.push(log(ts, &key, m, label.as_deref()));
        }
        if anomalous {
            ts += 1000;
            events.push(log(
                ts,
                &key,
                "checksum mismatch on replica 2",
                label.as_deref(),
            ));
        }
    }
    let file = d.path().join("s.jsonl");
    write(&file, &events);
    let mut args = EvalArgs::new(&file);
    args.group_by = Some("key".into());
    args.detectors = "template".into();
    args.silence = "off".into();
    let r = evaluate(&args, &Learning::default()).unwrap();
    assert_eq!(r.test_units, 40);
    assert_eq!(r.test_anomalous, 4);
    assert_eq!(r.calibration_units, 12);
    let t = &r.detectors[0];
    assert_eq!(t.name, "template");
    assert_eq!(t.overall.confusion.tp, 4);
    assert_eq!(t.overall.confusion.fp, 0);
    assert_eq!(t.overall.auroc, Some(1.0));
    assert_eq!(t.overall.auprc, Some(1.0));
    assert_eq!(t.by_type["bad"].anomalous, 4);
    // Faults from labels: one per anomalous session, each detected at the new
    // line, 3 s after the session's first labelled event.
    assert_eq!(r.faults_from, "labels");
    assert_eq!(t.overall.faults, 4);
    assert_eq!(t.overall.faults_detected, 4);
    assert_eq!(t.overall.ttd_median_s, Some(3.0));

    // Strip the test labels: the threshold (chosen from the calibration
    // slice) does not move.
    let unlabelled: Vec<Event> = events
        .iter()
        .cloned()
        .map(|mut e| {
            e.label = None;
            e
        })
        .collect();
    let file2 = d.path().join("u.jsonl");
    write(&file2, &unlabelled);
    let mut args2 = args.clone();
    args2.train = file2;
    let r2 = evaluate(&args2, &Learning::default()).unwrap();
    assert_eq!(r2.detectors[0].threshold, t.threshold);
    assert_eq!(r2.test_anomalous, 0);
}

/// `proprio eval` end to end on a small simulated scenario: a fault-free run
/// to train on, a run with every fault type to test on, a model trained for a
/// few steps, every detector, the table and the JSON.
#[test]
fn eval_end_to_end_on_a_small_simulation() {
    use proprio::sim::{default_registry, write_run, FaultSpec, SimConfig};
    let d = tempfile::tempdir().unwrap();
    let train = d.path().join("train.jsonl");
    let test = d.path().join("test.jsonl");
    let mut cfg = SimConfig::new(default_registry());
    cfg.services = Some(12);
    cfg.hours = 0.3;
    cfg.faults = FaultSpec::None;
    write_run(&cfg, &train).unwrap();
    cfg.seed = 2;
    cfg.hours = 0.5;
    cfg.faults = FaultSpec::All;
    let sum = write_run(&cfg, &test).unwrap();
    assert!(sum.labelled > 0, "the test run holds labelled events");

    let mut args = EvalArgs::new(&train);
    args.test = Some(test.clone());
    args.steps = 8;
    args.json = Some(d.path().join("r.json"));
    let r = evaluate(&args, &Learning::default()).unwrap();
    let names: Vec<&str> = r.detectors.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        ["model", "template", "zscore", "combined", "silence", "topology"]
    );
    assert_eq!(r.faults_from, "faults file");
    assert!(r.model.is_some(), "the model was trained here");
    assert!(r.test_anomalous > 0 && r.test_units as usize == r.test_events as usize);
    for det in r
        .detectors
        .iter()
        .filter(|d| d.name != "silence" && d.name != "topology")
    {
        let m = &det.overall;
        assert_eq!(m.faults as usize, sum.faults.len(), "{}", det.name);
        assert_eq!(det.faults.len(), sum.faults.len());
        assert!(
            det.threshold.is_finite(),
            "{}: threshold {}",
            det.name,
            det.threshold
        );
        for v in [m.precision, m.recall, m.f1, m.auroc, m.auprc]
            .into_iter()
            .flatten()
        {
            assert!((0.0..=1.0).contains(&v), "{}: {v}", det.name);
        }
        assert!(m.auroc.is_some(), "{}", det.name);
        assert!(det.false_alerts <= det.alerts);
        // A fault type's row counts its faults.
        let typed: u64 = det.by_type.values().map(|t| t.faults).sum();
        assert_eq!(typed, m.faults);
        for f in det.faults.iter().filter(|f| f.detected) {
            assert!(f.ttd_s.unwrap() >= 0.0);
        }
    }
    // The rare-template baseline sees something in a run with every fault.
    let t = r.detectors.iter().find(|d| d.name == "template").unwrap();
    assert!(
        t.overall.auroc.unwrap() > 0.5,
        "template AUROC {:?}",
        t.overall.auroc
    );
    let table = r.table();
    assert!(table.contains("AUROC") && table.contains("model") && table.contains("(all)"));

    // Counted here, independently of the harness: the labelled events of the
    // test file, per fault type, and its faults file.
    let evs = proprio::event::read_jsonl(&test).unwrap();
    let labelled: Vec<&str> = evs.iter().filter_map(|e| e.label.as_deref()).collect();
    assert_eq!(r.test_anomalous as usize, labelled.len());
    assert_eq!(r.test_units as usize, evs.len());
    let faults: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}.faults.json", test.display())).unwrap(),
    )
    .unwrap();
    assert_eq!(faults.as_array().unwrap().len(), sum.faults.len());
    for det in r
        .detectors
        .iter()
        .filter(|d| d.name != "silence" && d.name != "topology")
    {
        let c = det.overall.confusion;
        assert_eq!(c.tp + c.fp + c.tn + c.fn_, r.test_units, "{}", det.name);
        assert_eq!(c.tp + c.fn_, r.test_anomalous, "{}", det.name);
        for (ty, m) in &det.by_type {
            let n = labelled.iter().filter(|l| label_type(l) == ty).count();
            assert_eq!(m.anomalous as usize, n, "{} {ty}", det.name);
        }
    }

    // `run` (what `proprio eval --json` calls) writes the same report.
    proprio::eval::run(args.clone(), Learning::default()).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("r.json")).unwrap()).unwrap();
    let dets = json["detectors"].as_array().unwrap();
    assert_eq!(dets.len(), 6);
    assert_eq!(json["test_anomalous"].as_u64(), Some(r.test_anomalous));
    let t_json = dets.iter().find(|d| d["name"] == "template").unwrap();
    assert_eq!(
        t_json["overall"]["auroc"].as_f64(),
        t.overall.auroc,
        "the baselines are deterministic"
    );
    assert!(dets[0]["overall"]["auroc"].is_number());

    // Excess surprise comes from the same scoring pass as the live score:
    // the entropies reach eval (without them every xsum would be 0), and
    // the live score is unchanged.
    let mut x = args.clone();
    x.model_score = "live,xsum,xall".into();
    x.score_cache = Some(d.path().join("scores.json"));
    x.json = None;
    let rx = evaluate(&x, &Learning::default()).unwrap();
    let names: Vec<&str> = rx.detectors.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names[..3], ["model:live", "model:xsum", "model:xall"]);
    assert_eq!(rx.detectors[0].overall.auroc, r.detectors[0].overall.auroc);
    let cache: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("scores.json")).unwrap())
            .unwrap();
    let test_scores = cache[1].as_array().unwrap();
    assert_eq!(test_scores.len(), r.test_units as usize);
    let field = |k: &'static str| test_scores.iter().map(move |m| m[k].as_f64().unwrap());
    assert!(field("xsum").all(f64::is_finite));
    assert!(field("xsum").any(|v| v.abs() > 1.0), "xsum all near 0");
    // xall adds the source name's tokens, which the model predicts from the
    // context: never identical to xsum on every event.
    assert!(field("xsum").zip(field("xall")).any(|(a, b)| a != b));
}

/// AUROC, AUPRC and F1 against their textbook definitions, computed by brute
/// force on a fixed pseudo-random case with ties.
#[test]
fn metrics_match_brute_force_definitions() {
    let mut x: u64 = 42;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as u32
    };
    let n = 300;
    let y: Vec<bool> = (0..n).map(|_| next() % 5 == 0).collect();
    // Scores on a coarse grid (many ties), shifted up for the anomalous units.
    let s: Vec<f32> = y
        .iter()
        .map(|&a| (next() % 20) as f32 + if a { 4.0 } else { 0.0 })
        .collect();
    // Mann-Whitney: P(anomalous > normal) + 0.5 P(tie).
    let (mut wins, mut pairs) = (0.0f64, 0.0f64);
    for i in 0..n {
        for j in 0..n {
            if y[i] && !y[j] {
                pairs += 1.0;
                wins += if s[i] > s[j] {
                    1.0
                } else if s[i] == s[j] {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    let want = wins / pairs;
    assert!(want > 0.6 && want < 0.95, "a non-trivial case: {want}");
    assert!(close(auroc(&s, &y), want), "{:?} vs {want}", auroc(&s, &y));
    // Average precision: sum over distinct thresholds t (highest first) of
    // (recall(>= t) - recall(> t)) * precision(>= t).
    let pos = y.iter().filter(|&&a| a).count() as f64;
    let mut ts: Vec<f32> = s.clone();
    ts.sort_by(|a, b| b.total_cmp(a));
    ts.dedup();
    let (mut ap, mut prev_recall) = (0.0, 0.0);
    for &t in &ts {
        let flagged: Vec<usize> = (0..n).filter(|&i| s[i] >= t).collect();
        let tp = flagged.iter().filter(|&&i| y[i]).count() as f64;
        let recall = tp / pos;
        ap += (recall - prev_recall) * tp / flagged.len() as f64;
        prev_recall = recall;
    }
    assert!(close(auprc(&s, &y), ap), "{:?} vs {ap}", auprc(&s, &y));
    // P, R, F1 at a threshold from counts.
    let c = Confusion::at(&s, &y, 12.0);
    let tp = (0..n).filter(|&i| y[i] && s[i] >= 12.0).count() as f64;
    let fp = (0..n).filter(|&i| !y[i] && s[i] >= 12.0).count() as f64;
    let p = tp / (tp + fp);
    let r = tp / pos;
    assert!(close(c.precision(), p) && close(c.recall(), r));
    assert!(close(c.f1(), 2.0 * p * r / (p + r)));
}

#[test]
fn session_end_markers_close_each_key_with_its_label() {
    use proprio::eval::with_session_ends;
    let evs = vec![
        log(1, "a", "x", None),
        log(2, "b", "y", Some("bad-1")),
        log(3, "a", "z", None),
        log(4, "b", "w", Some("bad-1")),
    ];
    let out = with_session_ends(evs);
    let keys: Vec<(&str, &str)> = out
        .iter()
        .map(|e| (e.key.as_str(), e.source.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("a", "svc"),
            ("b", "svc"),
            ("a", "svc"),
            ("a", "session"),
            ("b", "svc"),
            ("b", "session")
        ]
    );
    assert_eq!(out[3].ts, 3);
    assert_eq!(out[3].label, None);
    assert_eq!(out[5].label.as_deref(), Some("bad-1"));
}

/// Per event mode with --evidence: a burst of never-seen lines on one key
/// outweighs a lone one on another, and the note says what was done.
#[test]
fn evidence_windows_favour_bursts() {
    let d = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    let mut ts = 0;
    for i in 0..400 {
        ts += 1000;
        let key = if i % 2 == 0 { "a" } else { "b" };
        // One lone never-seen line in the calibration slice: normal.
        let msg = if i == 351 {
            "cosmic ray".to_string()
        } else {
            format!("tick {}", i % 7)
        };
        events.push(log(ts, key, &msg, None));
    }
    // Test part: key a says three new things within 3 s (a fault), key b one.
    for (k, m, l) in [
        ("b", "lone novelty", None),
        ("a", "disk on fire", Some("fire-0")),
        ("a", "disk still on fire", Some("fire-0")),
        ("a", "smoke everywhere", Some("fire-0")),
    ] {
        ts += 1000;
        events.push(log(ts, k, m, l));
    }
    let file = d.path().join("e.jsonl");
    write(&file, &events);
    let mut args = EvalArgs::new(&file);
    args.split = 0.9;
    args.detectors = "template".into();
    args.silence = "off".into();
    args.evidence = Some("10:2".into());
    let r = evaluate(&args, &Learning::default()).unwrap();
    assert!(
        r.notes.iter().any(|n| n.contains("evidence")),
        "{:?}",
        r.notes
    );
    let t = &r.detectors[0];
    // The lone novelty is halved below the burst's evidence; the fault is caught.
    assert_eq!(t.overall.faults_detected, 1);
    assert_eq!(t.false_alerts, 0, "{:?}", t.false_alert_samples);
    args.evidence = Some("10".into());
    assert!(
        evaluate(&args, &Learning::default()).is_err(),
        "S:K is required"
    );
}
