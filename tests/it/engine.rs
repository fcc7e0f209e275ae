//! The engine end to end on the simulated OS: trained on normal telemetry,
//! it scores held-out events labelled as faults above normal ones.

use proprio::scorer::offline::score_events;
use proprio::sim::{generate, FaultSpec, SimConfig};
use proprio::trainer::offline::{train_events, Plan};

/// Rank-based AUROC (ties count half).
fn auroc(pos: &[f32], neg: &[f32]) -> f64 {
    let mut all: Vec<(f32, bool)> = pos
        .iter()
        .map(|&v| (v, true))
        .chain(neg.iter().map(|&v| (v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += all[i..=j].iter().filter(|x| x.1).count() as f64 * r;
        i = j + 1;
    }
    let (p, n) = (pos.len() as f64, neg.len() as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

#[test]
fn faults_score_higher_than_normal_events_on_held_out_data() {
    let dir = tempfile::tempdir().unwrap();
    let reg = proprio::sim::subset(&proprio::sim::default_registry(), 60);
    let reg_path = dir.path().join("services.yaml");
    std::fs::write(&reg_path, reg.to_yaml()).unwrap();
    let mut cfg = SimConfig::new(reg.clone());
    cfg.hours = 1.5;
    cfg.seed = 3;
    cfg.faults = FaultSpec::None;
    let train: Vec<_> = generate(&cfg).unwrap().collect();
    cfg.hours = 1.0;
    cfg.seed = 4;
    cfg.faults = FaultSpec::All;
    let test: Vec<_> = generate(&cfg).unwrap().collect();
    let plan = Plan {
        steps: 400,
        init: None,
        registry: reg_path,
        ttl_hours: 0.0,
        half_life_hours: 12.0,
        seed: 1,
        threads: 2,
        val_fraction: 0.1,
        learning: Default::default(),
    };
    let (ck, summary) = train_events(&train, &plan, false).unwrap();
    println!("trained: {}", serde_json::to_string(&summary).unwrap());
    assert!(
        summary.train_loss < 1.5,
        "training loss fell: {}",
        summary.train_loss
    );
    let scored = score_events(&ck, &test, 64, proprio::model::score::all_cores()).unwrap();
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    let (mut zpos, mut zneg) = (Vec::new(), Vec::new());
    for (e, s) in test.iter().zip(&scored) {
        let z = ck.meta.baselines.score(&e.key, e.kind(), s.loss).0;
        if e.label.is_some() {
            pos.push(s.score);
            zpos.push(z);
        } else {
            neg.push(s.score);
            zneg.push(z);
        }
    }
    // The loss's robust z ranks these faults best; the live score (the
    // excess surprise, calibrated per kind) a little below it, the price of
    // a statistic whose tail holds a false-alarm budget (docs/EVAL.md):
    // 0.877 with bytes and whole-block contexts; 0.847 (z 0.946) with the
    // learned vocabulary and cached contexts (issue 14), a loss this small
    // model's 400 steps did not make up.
    let (a, z) = (auroc(&pos, &neg), auroc(&zpos, &zneg));
    println!(
        "AUROC live {a:.4}, loss z {z:.4} over {} fault events and {} normal ones",
        pos.len(),
        neg.len()
    );
    assert!(z >= 0.9, "loss z AUROC {z:.4} < 0.9");
    assert!(a >= 0.83, "live AUROC {a:.4} < 0.83");
}

#[test]
fn auroc_of_hand_made_cases() {
    assert_eq!(auroc(&[2.0, 3.0], &[0.0, 1.0]), 1.0);
    assert_eq!(auroc(&[0.0], &[1.0]), 0.0);
    assert_eq!(auroc(&[1.0], &[1.0]), 0.5);
}
