//! The scaler on hand-made series.

use super::*;

const S: i64 = 1_000;
const MIN: i64 = 60 * S;

fn word(x: Scaled) -> String {
    let mut s = String::new();
    x.write(&mut s);
    s
}

/// Feeds `xs` one every `step` ms from `t0`, returns the words.
fn feed(sc: &mut Scaler, t0: i64, step: i64, xs: &[f64]) -> Vec<String> {
    xs.iter()
        .enumerate()
        .map(|(i, &x)| word(sc.scale("a", "m", t0 + i as i64 * step, x)))
        .collect()
}

#[test]
fn a_steady_series_reads_zero_and_sees_a_five_percent_move() {
    let mut sc = Scaler::default();
    let w = feed(&mut sc, 0, 10 * S, &[100.0; 40]);
    assert!(w.iter().all(|x| x == "0"), "cold or warm, the usual: {w:?}");
    let t = 400 * S;
    assert_eq!(word(sc.scale("a", "m", t, 105.0)), "+1");
    assert_eq!(word(sc.scale("a", "m", t, 95.0)), "-1");
    assert_eq!(word(sc.scale("a", "m", t, 101.0)), "0");
    assert_eq!(word(sc.scale("a", "m", t, 3000.0)), "+7");
    // Another series, or another source's, is its own.
    assert_eq!(sc.scale("b", "m", t, 3000.0), Scaled::Cold);
    let mut sc = sc.recording();
    sc.scale("a", "m", t, 100.0);
    let u = sc.take_readings()[0].usual.unwrap();
    assert!((u.0 - 96.0).abs() < 1e-9 && (u.1 - 104.0).abs() < 1e-9);
}

#[test]
fn a_noisy_series_reads_in_its_own_spreads() {
    let mut sc = Scaler::default();
    // 90, 95, .., 110 over and over: MAD 5, spread 7.4.
    let xs: Vec<f64> = (0..40).map(|i| 90.0 + 5.0 * (i % 5) as f64).collect();
    let w = feed(&mut sc, 0, 60 * S, &xs);
    assert!(w.iter().all(|x| x == "0"), "{w:?}");
    let t = 3_000 * S;
    assert_eq!(word(sc.scale("a", "m", t, 125.0)), "+1");
    assert_eq!(word(sc.scale("a", "m", t, 200.0)), "+3");
    assert_eq!(word(sc.scale("a", "m", t, 40.0)), "-3");
}

#[test]
fn zero_series_noise_is_not_extreme_but_a_jump_off_a_flat_zero_is() {
    let mut sc = Scaler::default();
    let flat = feed(&mut sc, 0, MIN, &[0.0; 20]);
    assert!(flat.iter().all(|x| x == "0"));
    assert_eq!(word(sc.scale("a", "m", 30 * MIN, 0.5)), "+7");
    // Mostly zero with small counts: a 1 or a 2 is ordinary, 40 is not.
    let mut sc = Scaler::default();
    let xs: Vec<f64> = (0..32)
        .map(|i| [0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 0.0, 1.0][i % 8])
        .collect();
    feed(&mut sc, 0, MIN, &xs);
    let t = 40 * MIN;
    let one = sc.scale("a", "m", t, 1.0);
    assert_eq!(one, Scaled::Bin(0));
    assert!(matches!(sc.scale("a", "m", t, 40.0), Scaled::Bin(5..)));
    // A value that is no number is cold, not a panic or a NaN word.
    assert_eq!(sc.scale("a", "m", t, f64::NAN), Scaled::Cold);
}

#[test]
fn a_sustained_shift_alerts_then_becomes_normal_within_the_adaptation_time() {
    let adapt = 30 * MIN;
    let mut sc = Scaler::new(adapt);
    // An hour at 100 (+/- 1), a pulse every 15 s.
    let step = 15 * S;
    let base: Vec<f64> = (0..240).map(|i| 100.0 + (i % 3) as f64 - 1.0).collect();
    feed(&mut sc, 0, step, &base);
    let t0 = 240 * step;
    let shifted: Vec<f64> = (0..240).map(|i| 200.0 + (i % 3) as f64 - 1.0).collect();
    let w = feed(&mut sc, t0, step, &shifted);
    // The shift itself reads as far above usual (50 spreads).
    assert_eq!(w[0], "+5");
    // Within the adaptation time the new level is usual again.
    let within = (adapt / step) as usize;
    assert!(
        w[within..]
            .iter()
            .all(|x| x == "0" || x == "+1" || x == "-1"),
        "{w:?}"
    );
    // Not right away: a short spike does not move the level.
    assert!(w[..8].iter().all(|x| x.starts_with('+') && x != "+1"));
}

#[test]
fn a_varying_series_stuck_on_one_value_reads_flat_and_an_idle_or_constant_one_does_not() {
    // Varies for 80 samples (no value twice in a row), then holds 104.5.
    let varying: Vec<f64> = (0..80).map(|i| 100.0 + (i % 7) as f64).collect();
    let mut held = varying.clone();
    held.extend([104.5; 10]);
    let mut sc = Scaler::default().flat(true).recording();
    let w = feed(&mut sc, 0, 5 * MIN, &held);
    let first = 80 + Scaler::FLAT_RUN as usize - 1;
    assert!(w[..first].iter().all(|x| x != "flat"), "{w:?}");
    assert!(w[first..].iter().all(|x| x == "flat"), "{w:?}");
    let readings = sc.take_readings();
    assert_eq!(readings.last().map(|r| r.flat_for), Some(10));
    // Scheme 1 (a checkpoint trained without the word) never writes it.
    let mut old = Scaler::default();
    assert!(feed(&mut old, 0, 5 * MIN, &held)
        .iter()
        .all(|x| x != "flat"));
    // A series that idles at 0, or never varies, or has held values as
    // long before, is not stuck.
    for xs in [
        varying
            .iter()
            .copied()
            .chain([0.0; 30])
            .collect::<Vec<f64>>(),
        vec![42.0; 120],
        (0..160)
            .map(|i| [3.0, 3.0, 3.0, 3.0, 3.0, 5.0, 5.0, 5.0, 5.0, 5.0][i % 10])
            .chain([4.0; 9])
            .collect(),
        // Constant, a noisy spell, constant again at the same value.
        [512.0; 24]
            .into_iter()
            .chain((0..48).map(|i| 512.0 + [-30.0, 12.0, 25.0, -7.0][i % 4] * (i % 3) as f64))
            .chain([512.0; 100])
            .collect(),
    ] {
        let mut sc = Scaler::default().flat(true);
        let w = feed(&mut sc, 0, 5 * MIN, &xs);
        assert!(w.iter().all(|x| x != "flat"), "{xs:?}: {w:?}");
    }
    // A young series has no claim to know its longest run.
    let mut sc = Scaler::default().flat(true);
    let young: Vec<f64> = (0..20).map(|i| i as f64).chain([7.0; 20]).collect();
    assert!(feed(&mut sc, 0, 5 * MIN, &young)
        .iter()
        .all(|x| x != "flat"));
}

#[test]
fn scheme_4_writes_a_spike_off_the_recent_line_and_never_the_cycle() {
    // A 5-minute series on a daily cycle of +/-40 % around 50, noise
    // about 1: the window's spread holds the cycle's slope.
    let at = |i: usize| {
        let h = i as f64 * 5.0 / 60.0;
        let noise = [0.3, -1.1, 0.8, -0.2, 1.4, -0.7, 0.1, -1.3, 0.9, -0.4][i % 10];
        50.0 * (1.0 + 0.4 * (std::f64::consts::TAU * (h - 3.0) / 24.0).cos()) + noise
    };
    let mut sc = Scaler::default().sudden(true).recording();
    let mut words = Vec::new();
    for i in 0..200 {
        let mut s = String::new();
        sc.word("a", "m", i as i64 * 5 * MIN, at(i)).write(&mut s);
        words.push(s);
    }
    // Warm, a slow series always carries the second word; the cycle
    // never moves it off 0.
    assert!(words[20..].iter().all(|w| w.ends_with("!0")), "{words:?}");
    // A spike of 10 noise scales is off the recent line, and the
    // reading says where the line was.
    let w = sc.word("a", "m", 200 * 5 * MIN, at(200) + 10.0);
    assert!(w.sudden.is_some_and(|b| b >= 2), "{w:?}");
    let r = sc.take_readings().pop().unwrap();
    let (lo, hi) = r.lately.unwrap();
    assert!(lo < at(200) && at(200) < hi && hi < r.value, "{r:?}");
    // Without scheme 4, neither the word nor the range.
    let mut old = Scaler::default().recording();
    for i in 0..=200 {
        old.word(
            "a",
            "m",
            i as i64 * 5 * MIN,
            at(i) + if i == 200 { 10.0 } else { 0.0 },
        );
    }
    assert_eq!(old.take_readings().pop().unwrap().lately, None);
}

#[test]
fn scheme_5_marks_a_slow_series_held_off_its_usual_and_not_a_passing_excursion() {
    let noise = |i: usize| [0.3, -1.1, 0.8, -0.2, 1.4, -0.7, 0.1, -1.3, 0.9, -0.4][i % 10];
    let walk = |sc: &mut Scaler, step: i64, xs: &[f64]| -> Vec<String> {
        xs.iter()
            .enumerate()
            .map(|(i, &x)| {
                let mut s = String::new();
                sc.word("a", "m", i as i64 * step, x).write(&mut s);
                s
            })
            .collect()
    };
    // 60 values about 10 (spread 1), two lone excursions of 6 (3 values apart),
    // then a shift of 6 that holds.
    let mut xs: Vec<f64> = (0..60).map(|i| 10.0 + noise(i)).collect();
    xs[40] += 6.0;
    xs[43] += 6.0;
    xs.extend((60..80).map(|i| 16.0 + noise(i)));
    let mut sc = Scaler::default().sudden(true).held(true);
    let w = walk(&mut sc, 5 * MIN, &xs);
    assert!(w[..60].iter().all(|x| !x.contains('~')), "{w:?}");
    let first = 60 + Scaler::HELD_RUN as usize - 1;
    assert!(!w[first - 1].contains('~'), "{w:?}");
    assert!(
        w[first].starts_with("+2~") || w[first].starts_with("+3~"),
        "{w:?}"
    );
    // A series heard every 15 s never says so (its window is the
    // adaptation time), nor does scheme 4.
    let mut fast = Scaler::default().sudden(true).held(true);
    assert!(walk(&mut fast, 15 * S, &xs)
        .iter()
        .all(|x| !x.contains('~')));
    let mut old = Scaler::default().sudden(true);
    assert!(walk(&mut old, 5 * MIN, &xs)
        .iter()
        .all(|x| !x.contains('~')));
}

#[test]
fn series_are_bounded() {
    let mut sc = Scaler::default();
    sc.max_series = 100;
    for i in 0..1_000 {
        sc.scale(&format!("s{i}"), "m", i, 1.0);
    }
    assert!(sc.len() <= 100);
    // The newest are kept.
    assert!(sc
        .series
        .contains_key(&("s999".to_string(), "m".to_string())));
}
