//! `proprio metricbench` end to end on a small set of series: the
//! baselines alone (deterministic per seed), then with a barely trained
//! model, so proprio's row goes through eval's model path and its scores
//! land on the samples they belong to.

use clap::Parser;
use proprio::config::Learning;
use proprio::metricbench::{evaluate, BenchArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    a: BenchArgs,
}

fn args(extra: &[&str]) -> BenchArgs {
    let mut v = vec![
        "metricbench",
        "--series",
        "16",
        "--interval-s",
        "900",
        "--threads",
        "1",
    ];
    v.extend_from_slice(extra);
    Cli::parse_from(v).a
}

#[test]
fn baselines_alone_are_deterministic_and_share_the_windows() {
    let a = evaluate(&args(&["--no-model"]), &Learning::default()).unwrap();
    let b = evaluate(&args(&["--no-model"]), &Learning::default()).unwrap();
    let rows = |r: &proprio::metricbench::Report| {
        r.rows
            .iter()
            .map(|x| (x.detector.clone(), x.threshold, x.tally.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(&a), rows(&b));
    assert_eq!(a.rows.len(), 3);
    assert!(a.windows > 0);
    for r in &a.rows {
        assert_eq!(r.tally.windows as usize, a.windows, "{}", r.detector);
        assert!(r.auroc.is_some(), "{}", r.detector);
        let by_shape: u64 = r.tally.false_by_shape.values().sum();
        assert_eq!(by_shape, r.tally.false_alarms, "{}", r.detector);
    }
    let other = evaluate(&args(&["--no-model", "--seed", "2"]), &Learning::default()).unwrap();
    assert_ne!(rows(&a), rows(&other), "the seed changes the series");
    assert!(a
        .table()
        .contains("| detector | window recall | false alarms/series/day"));
}

#[test]
fn proprio_rows_come_from_evals_model_path() {
    let r = evaluate(&args(&["--steps", "3"]), &Learning::default()).unwrap();
    let names: Vec<&str> = r.rows.iter().map(|x| x.detector.as_str()).collect();
    assert_eq!(
        names,
        [
            "proprio (budget θ)",
            "proprio (live level)",
            "windowed gaussian",
            "robust z (floored)",
            "seasonal"
        ]
    );
    // The policy's level for a model of its training's span: between a
    // day-old model's and the youngest's.
    let p = proprio::policy::Policy::default();
    let (day, young) = (p.level(), p.for_model(None).level());
    assert!(
        (day..=young).contains(&r.rows[1].threshold),
        "the live row alerts at the policy's level: {} not in {day}..={young}",
        r.rows[1].threshold
    );
    for x in &r.rows[..2] {
        assert_eq!(x.tally.windows as usize, r.windows);
        // Every test sample got a score (an unscored one would be NaN and
        // left out, so windows would lack points or the AUROC be undefined).
        assert!(
            x.auroc.is_some_and(|a| (0.0..=1.0).contains(&a)),
            "{}",
            x.detector
        );
    }
    assert!(r.model.is_some(), "trained here: the summary is kept");
}
