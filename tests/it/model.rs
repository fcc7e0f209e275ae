//! The engine's model side: training, window sampling, scoring (native
//! forward against libtorch's), checkpoints. Synthetic telemetry, small
//! enough that the whole file runs in seconds on two cores.

use proprio::model::checkpoint::{Checkpoint, CheckpointError};
use proprio::model::score::Simd;
use proprio::model::train::{sample_windows, training_windows};
use proprio::model::{
    score, score_libtorch, train, Gpt, GptConfig, NativeScorer, ScoreItem, Stream, TrainConfig,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Telemetry-like lines for one service: a state machine that walks
/// starting -> running -> (degraded ->) running ..., and metrics whose values
/// follow the state, so there is structure across events, not just within.
fn service_events(svc: usize, n: usize, rng: &mut SmallRng) -> Vec<String> {
    let states = [
        "starting", "running", "running", "degraded", "running", "stopping",
    ];
    (0..n)
        .map(|i| {
            let st = states[(i / 3) % states.len()];
            if i % 3 == 0 {
                format!("<|BOE|><|FLUX|><|SVC|>svc-{svc} <|STATE|>{st}<|EOE|>")
            } else {
                let cpu = if st == "degraded" {
                    80 + rng.gen_range(0..20)
                } else {
                    10 + rng.gen_range(0..20)
                };
                format!(
                    "<|BOE|><|PULSE|><|SVC|>svc-{svc} <|METRIC|>cpu {cpu} <|METRIC|>mem {}<|EOE|>",
                    200 + svc * 10 + rng.gen_range(0..5)
                )
            }
        })
        .collect()
}

fn stream_of(events: &[String], weight: impl Fn(usize) -> f32) -> Stream {
    let mut s = Stream::default();
    for (i, e) in events.iter().enumerate() {
        s.starts.push((s.tokens.len(), weight(i)));
        s.tokens.extend(proprio::vocab::Vocab::bytes().encode(e));
    }
    s
}

fn synthetic(n_services: usize, n_events: usize, seed: u64) -> Vec<Stream> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n_services)
        .map(|s| stream_of(&service_events(s, n_events, &mut rng), |_| 1.0))
        .collect()
}

/// Tests run two at a time on two cores: one libtorch thread each keeps
/// them from spinning against each other (see model::set_libtorch_threads);
/// the native scorer gets one thread too.
fn setup() {
    proprio::model::set_libtorch_threads(1);
}

/// Threads of every native scorer here.
const THREADS: usize = 1;

fn small() -> GptConfig {
    GptConfig {
        block_size: 64,
        ..GptConfig::default()
    }
}

fn quick(steps: usize) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 8,
        eval_every: 10,
        eval_batches: 2,
        progress: false,
        ..TrainConfig::default()
    }
}

/// Items with context, as the scorer builds them: each event after the
/// previous `k` events of its key.
fn items_from(events: &[String], k: usize) -> Vec<ScoreItem> {
    let toks: Vec<Vec<u32>> = events
        .iter()
        .map(|e| proprio::vocab::Vocab::bytes().encode(e))
        .collect();
    (0..toks.len())
        .map(|i| ScoreItem {
            context: toks[i.saturating_sub(k)..i].concat(),
            event: toks[i].clone(),
        })
        .collect()
}

fn trained(cfg: GptConfig, steps: usize) -> Gpt {
    let mut gpt = Gpt::new(cfg, 3).unwrap();
    train(&mut gpt, &synthetic(3, 60, 1), &quick(steps)).unwrap();
    gpt
}

fn assert_close(a: &[proprio::model::EventLoss], b: &[proprio::model::EventLoss], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.token_losses.len(), y.token_losses.len(), "item {i}");
        assert!(
            (x.loss - y.loss).abs() <= tol,
            "item {i}: {} vs {}",
            x.loss,
            y.loss
        );
        for (p, (u, v)) in x.token_losses.iter().zip(&y.token_losses).enumerate() {
            assert!((u - v).abs() <= tol, "item {i} token {p}: {u} vs {v}");
        }
        assert_eq!(x.token_entropies.len(), x.token_losses.len(), "item {i}");
        assert_eq!(y.token_entropies.len(), y.token_losses.len(), "item {i}");
        let ents = x.token_entropies.iter().zip(&y.token_entropies);
        for (p, (u, v)) in ents.enumerate() {
            assert!((u - v).abs() <= tol, "item {i} entropy {p}: {u} vs {v}");
        }
    }
}

#[test]
fn training_loss_falls() {
    setup();
    let mut gpt = Gpt::new(small(), 1).unwrap();
    let r = train(&mut gpt, &synthetic(3, 60, 1), &quick(60)).unwrap();
    let first = r.losses[..5].iter().sum::<f32>() / 5.0;
    eprintln!(
        "train loss {first:.3} -> {:.3}, val curve {:?}",
        r.train_loss, r.val_curve
    );
    assert!(r.train_loss < 0.6 * first, "{first} -> {}", r.train_loss);
    let (v0, v1) = (r.val_curve[0].1, r.val_loss.unwrap());
    assert!(v1 < 0.6 * v0, "val {v0} -> {v1}");
    assert_eq!(r.losses.len(), 60);
    assert_eq!(r.val_curve.first().unwrap().0, 0);
    assert_eq!(r.val_curve.last().unwrap().0, 60);
}

#[test]
fn incremental_training_continues_from_the_weights() {
    setup();
    let streams = synthetic(3, 60, 1);
    let mut gpt = Gpt::new(small(), 1).unwrap();
    let a = train(&mut gpt, &streams, &quick(40)).unwrap();
    let ck = Checkpoint::from_bytes(&Checkpoint::new(gpt, "fp").to_bytes().unwrap()).unwrap();
    let mut gpt = ck.gpt;
    let b = train(
        &mut gpt,
        &streams,
        &TrainConfig {
            seed: 9,
            ..quick(20)
        },
    )
    .unwrap();
    // Same validation set: the second run starts where the first ended.
    assert!(
        (b.val_curve[0].1 - a.val_loss.unwrap()).abs() < 1e-4,
        "{:?} {:?}",
        a.val_curve,
        b.val_curve
    );
    assert!(b.val_loss.unwrap() <= a.val_loss.unwrap() * 1.05);
}

#[test]
fn windows_follow_weights_and_skip_weight_zero() {
    setup();
    let mut rng = SmallRng::seed_from_u64(5);
    let events = service_events(0, 200, &mut rng);
    // Every fourth event weight 0; the others alternate 1.0 and 0.25.
    let weight = |i: usize| match i % 4 {
        0 => 0.0,
        1 | 3 => 1.0,
        _ => 0.25,
    };
    let streams = vec![stream_of(&events, weight)];
    let starts: Vec<usize> = streams[0].starts.iter().map(|s| s.0).collect();
    let cands = training_windows(&streams, 64, 0.1);
    assert!(cands.iter().all(|&(_, _, w)| w > 0.0));
    let cfg = TrainConfig {
        steps: 250,
        batch_size: 32,
        ..quick(0)
    };
    let drawn = sample_windows(&streams, 64, &cfg).unwrap();
    let (mut heavy, mut light) = (0usize, 0usize);
    for &(_, off) in &drawn {
        let i = starts
            .iter()
            .position(|&s| s == off)
            .expect("windows start on event boundaries");
        assert!(
            weight(i) > 0.0,
            "event {i} has weight 0 but started a window"
        );
        assert!(i < 180, "event {i} is in the validation slice");
        if weight(i) == 1.0 {
            heavy += 1
        } else {
            light += 1
        }
    }
    // Twice as many weight-1 events as weight-0.25 ones: expect 8x the draws.
    let ratio = heavy as f64 / light as f64;
    assert!((6.5..9.5).contains(&ratio), "ratio {ratio}");
    // Same seed, same windows.
    assert_eq!(drawn, sample_windows(&streams, 64, &cfg).unwrap());
}

/// Wide metric rows, 2.5 blocks long each (issue 14's repro, smaller).
fn wide_rows(n: usize, rng: &mut SmallRng) -> Vec<String> {
    (0..n)
        .map(|_| {
            let mut s = "<|BOE|><|PULSE|><|SVC|>wide".to_string();
            for j in 0..12 {
                s += &format!("<|METRIC|>metric_{j:02}=b{}", 7 + rng.gen_range(0..2));
            }
            s + "<|EOE|>"
        })
        .collect()
}

#[test]
fn an_event_longer_than_the_block_is_trained_where_it_is_scored() {
    setup();
    let cfg = small();
    let events = wide_rows(300, &mut SmallRng::seed_from_u64(3));
    let streams = vec![stream_of(&events, |_| 1.0)];
    let starts: Vec<usize> = streams[0].starts.iter().map(|s| s.0).collect();
    let len = proprio::vocab::Vocab::bytes().encode(&events[0]).len();
    assert!(len > 2 * cfg.block_size, "{len} tokens");
    // A window at each event's start and at every half block after it,
    // where the scorer's windows over the later tokens begin.
    let cands = training_windows(&streams, cfg.block_size, 0.1);
    let half = cfg.block_size / 2;
    let inside: Vec<usize> = cands
        .iter()
        .map(|&(_, o, _)| o)
        .filter(|o| !starts.contains(o))
        .collect();
    assert!(!inside.is_empty());
    for o in &inside {
        let e = starts.iter().rev().find(|&&s| s < *o).unwrap();
        assert_eq!((o - e) % half, 0, "window at {o}, event at {e}");
        assert!(
            o - e + cfg.block_size < len + half,
            "window at {o} is past the event"
        );
    }
    // Trained that way, the events score as validation said they would
    // (before, 20x the validation loss, the loss of the untrained positions).
    let mut gpt = Gpt::new(cfg, 1).unwrap();
    let report = train(&mut gpt, &streams, &quick(200)).unwrap();
    let val = report.val_loss.unwrap();
    let mut contexts = proprio::scorer::Contexts::new(cfg.block_size, 10);
    let items: Vec<ScoreItem> = events
        .iter()
        .map(|e| {
            let t = proprio::vocab::Vocab::bytes().encode(e);
            ScoreItem {
                context: contexts.next("wide", &t),
                event: t,
            }
        })
        .collect();
    let losses = NativeScorer::new(&gpt, THREADS).score(&items, 32);
    let mean = losses.iter().map(|l| l.loss).sum::<f32>() / losses.len() as f32;
    assert!(mean < 2.0 * val, "scored {mean}, validation {val}");
}

#[test]
fn nothing_to_train_on_is_an_error() {
    setup();
    let events = service_events(0, 20, &mut SmallRng::seed_from_u64(1));
    let streams = vec![stream_of(&events, |_| 0.0)];
    let mut gpt = Gpt::new(small(), 1).unwrap();
    assert!(train(&mut gpt, &streams, &quick(5)).is_err());
    let bad = vec![Stream {
        tokens: vec![1, 2, 99_999],
        starts: vec![(0, 1.0)],
    }];
    assert!(train(&mut gpt, &bad, &quick(5)).is_err());
    // Starts past the end or with non-finite weights are skipped, not fatal.
    let odd = vec![Stream {
        tokens: vec![65, 66, 67, 68],
        starts: vec![(0, 1.0), (2, f32::NAN), (9, 1.0)],
    }];
    assert!(train(
        &mut gpt,
        &odd,
        &TrainConfig {
            val_fraction: 0.0,
            ..quick(2)
        }
    )
    .is_ok());
}

#[test]
fn deterministic_for_a_seed() {
    setup();
    let streams = synthetic(2, 40, 2);
    let run = || {
        let mut gpt = Gpt::new(small(), 11).unwrap();
        let r = train(&mut gpt, &streams, &quick(15)).unwrap();
        (
            r.losses,
            r.val_curve,
            score(
                &gpt,
                &items_from(&service_events(0, 6, &mut SmallRng::seed_from_u64(3)), 2),
                4,
                THREADS,
            ),
        )
    };
    assert_eq!(run(), run());
}

#[test]
fn native_forward_matches_libtorch() {
    setup();
    let gpt = trained(small(), 30);
    let mut rng = SmallRng::seed_from_u64(4);
    let mut items = items_from(&service_events(1, 30, &mut rng), 3);
    // A context that overflows the block, an event longer than the block,
    // an empty and a one-token event.
    let long: Vec<u32> = (0..3 * small().block_size as u32 + 7)
        .map(|i| 32 + i % 90)
        .collect();
    items.push(ScoreItem {
        context: long.clone(),
        event: items[4].event.clone(),
    });
    items.push(ScoreItem {
        context: vec![],
        event: long.clone(),
    });
    items.push(ScoreItem {
        context: items[3].event.clone(),
        event: long,
    });
    items.push(ScoreItem {
        context: vec![1, 2, 3],
        event: vec![],
    });
    items.push(ScoreItem {
        context: vec![],
        event: vec![7],
    });
    let native = score(&gpt, &items, 8, THREADS);
    let torch = score_libtorch(&gpt, &items, 8);
    assert_close(&native, &torch, 1e-4);
    // Every instruction set the native forward has (those this CPU lacks
    // fall back to one it has).
    for simd in [Simd::Scalar, Simd::Avx2, Simd::Avx512] {
        assert_close(
            &NativeScorer::new(&gpt, THREADS).on(simd).score(&items, 8),
            &torch,
            1e-4,
        );
    }
    let n = items.len();
    assert_eq!(native[n - 2].loss, 0.0);
    assert!(native[n - 2].token_losses.is_empty() && native[n - 1].token_losses.is_empty());
    assert_eq!(native[n - 4].token_losses.len(), 3 * small().block_size + 6);
    assert!(native.iter().all(|e| e.loss.is_finite()));
}

/// The native entropies against log_softmax over the full logits of
/// [`Gpt::forward`], computed here rather than through `score_libtorch`
/// (which shares the windowing with the native scorer): events in the
/// context of their key's previous events, the first block of an event
/// longer than the block, and a one-token event, which predicts nothing.
#[test]
fn native_entropies_match_log_softmax() {
    use tch::{Kind, Tensor};
    setup();
    let gpt = trained(small(), 30);
    let bs = small().block_size;
    // Each event after the previous whole events that fit the block with
    // it, as the live scorer's contexts give them.
    let mut ctx = proprio::scorer::Contexts::new(bs, 10);
    let mut items: Vec<ScoreItem> = service_events(2, 12, &mut SmallRng::seed_from_u64(7))
        .iter()
        .map(|e| {
            let event = proprio::vocab::Vocab::bytes().encode(e);
            let context = ctx.next("k", &event);
            ScoreItem { context, event }
        })
        .collect();
    assert!(items[1..].iter().all(|it| !it.context.is_empty()));
    let long: Vec<u32> = (0..bs as u32 + 20).map(|i| 32 + (i * 7) % 90).collect();
    items.push(ScoreItem {
        context: vec![],
        event: long,
    });
    items.push(ScoreItem {
        context: items[3].event.clone(),
        event: vec![items[3].event[0]],
    });
    let n = items.len();
    for simd in [Simd::Scalar, Simd::Avx2, Simd::Avx512] {
        let native = NativeScorer::new(&gpt, THREADS).on(simd).score(&items, 4);
        assert!(native[n - 1].token_losses.is_empty() && native[n - 1].token_entropies.is_empty());
        assert_eq!(native[n - 2].token_entropies.len(), bs + 19);
        let (mut lo, mut hi) = (f32::MAX, 0.0f32);
        for (it, got) in items[..n - 1].iter().zip(&native) {
            let seq: Vec<i64> = it
                .context
                .iter()
                .chain(&it.event)
                .map(|&t| t as i64)
                .collect();
            // The positions that predict event tokens 1.., within one block.
            let c = it.context.len();
            let upto = (seq.len() - 1).min(bs);
            let x = Tensor::from_slice(&seq[..upto]).view([1, upto as i64]);
            let logp = tch::no_grad(|| gpt.forward(&x).log_softmax(-1, Kind::Float));
            let h = -(logp.exp() * &logp).sum_dim_intlist(-1, false, Kind::Float);
            let h = Vec::<f32>::try_from(h.view(-1)).unwrap();
            assert_eq!(h.len(), upto);
            for p in c..upto {
                let (want, have) = (h[p], got.token_entropies[p - c]);
                assert!(
                    (want - have).abs() <= 2e-5,
                    "{simd:?} position {p}: log_softmax {want} vs native {have}"
                );
                let want_loss = -logp.double_value(&[0, p as i64, seq[p + 1]]) as f32;
                assert!((want_loss - got.token_losses[p - c]).abs() <= 1e-4);
                lo = lo.min(have);
                hi = hi.max(have);
            }
        }
        // A trained model is sure of some tokens and unsure of others.
        let ln_v = (small().vocab_size as f32).ln();
        assert!(lo >= 0.0 && hi <= ln_v && hi - lo > 1.0, "{lo}..{hi}");
    }
}

#[test]
fn batch_one_equals_batched() {
    setup();
    let gpt = trained(small(), 20);
    let items = items_from(&service_events(2, 40, &mut SmallRng::seed_from_u64(8)), 2);
    let agree = |score: &dyn Fn(usize) -> Vec<proprio::model::EventLoss>| {
        let one = score(1);
        for b in [7, 64] {
            assert_close(&one, &score(b), 1e-4);
        }
    };
    let native = NativeScorer::new(&gpt, THREADS);
    agree(&|b| native.score(&items, b));
    agree(&|b| score_libtorch(&gpt, &items, b));
}

#[test]
fn out_of_vocabulary_ids_do_not_panic() {
    setup();
    let gpt = Gpt::new(small(), 1).unwrap();
    let items = vec![ScoreItem {
        context: vec![u32::MAX],
        event: vec![65, 1_000_000, 66],
    }];
    let out = score(&gpt, &items, 1, THREADS);
    assert_eq!(out[0].token_losses.len(), 2);
    assert!(out[0].loss.is_finite());
}

#[test]
fn checkpoint_round_trips_through_a_file_and_memory() {
    setup();
    let gpt = trained(GptConfig::default(), 10);
    let items = items_from(&service_events(0, 12, &mut SmallRng::seed_from_u64(6)), 2);
    let before = score(&gpt, &items, 4, THREADS);
    let mut ck = Checkpoint::new(gpt, "fp-1");
    ck.meta.step = 10;
    ck.meta.train_loss = 1.5;
    ck.meta.val_loss = 1.7;
    let stat = |m: f32| proprio::baseline::Stat {
        median: m,
        scale: 0.3,
        n: 40,
    };
    ck.meta.baselines.keys.insert("svc-0".into(), stat(1.0));
    ck.meta
        .baselines
        .kinds
        .insert(proprio::event::Kind::Pulse, stat(2.0));
    ck.meta.baselines.global = Some(stat(3.0));
    ck.meta.baselines.min_count = 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.ckpt");
    ck.save(&path).unwrap();
    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!(score(&loaded.gpt, &items, 4, THREADS), before);
    assert_eq!(loaded.meta.fingerprint, "fp-1");
    assert_eq!(loaded.meta.step, 10);
    assert_eq!(loaded.meta.train_loss, 1.5);
    assert_eq!(loaded.meta.val_loss, 1.7);
    assert_eq!(loaded.meta.baselines, ck.meta.baselines);
    assert_eq!(loaded.meta.version.len(), 12);
    assert_eq!(
        loaded.meta.token_hash,
        proprio::tokenizer::token_list_hash()
    );
    let bytes = ck.to_bytes().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let mem = Checkpoint::from_bytes(&bytes).unwrap();
    assert_eq!(score(&mem.gpt, &items, 1, THREADS), before);
    assert_eq!(Checkpoint::read_meta(&bytes).unwrap(), loaded.meta);
    // Only the checkpoint is left in the directory: no temporary files.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

fn refusal(bytes: &[u8]) -> CheckpointError {
    match Checkpoint::from_bytes(bytes) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.downcast::<CheckpointError>().expect("a CheckpointError"),
    }
}

#[test]
fn bad_checkpoints_are_refused() {
    setup();
    let mut ck = Checkpoint::new(Gpt::new(GptConfig::default(), 1).unwrap(), "fp");
    let good = ck.to_bytes().unwrap();
    // Truncated anywhere.
    for cut in [0, 5, 30, 41, good.len() / 2, good.len() - 1] {
        let e = refusal(&good[..cut]);
        assert!(
            matches!(
                e,
                CheckpointError::HashMismatch { .. }
                    | CheckpointError::Truncated(_)
                    | CheckpointError::NotACheckpoint
            ),
            "cut {cut}: {e}"
        );
    }
    // One flipped byte in the metadata, in the weights, in the hash.
    for at in [50, good.len() - 100, 20] {
        let mut b = good.clone();
        b[at] ^= 0x40;
        assert!(
            matches!(refusal(&b), CheckpointError::HashMismatch { .. }),
            "byte {at}"
        );
    }
    let mut b = good.clone();
    b[0] = b'X';
    assert!(matches!(refusal(&b), CheckpointError::NotACheckpoint));
    // Another token list.
    ck.meta.token_hash = "0".repeat(64);
    let e = refusal(&ck.to_bytes().unwrap());
    let msg = e.to_string();
    assert!(matches!(e, CheckpointError::TokenList { .. }));
    assert!(
        msg.contains(&"0".repeat(64)) && msg.contains(&proprio::tokenizer::token_list_hash()),
        "{msg}"
    );
    // And from a file, with the path in the message.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.ckpt");
    std::fs::write(&path, &good[..good.len() - 7]).unwrap();
    let e = format!("{:#}", Checkpoint::load(&path).err().unwrap());
    assert!(e.contains("m.ckpt") && e.contains("corrupt"), "{e}");
}

#[test]
fn a_valid_hash_over_bad_weights_is_still_an_error() {
    setup();
    use sha2::{Digest, Sha256};
    let ck = Checkpoint::new(Gpt::new(GptConfig::default(), 1).unwrap(), "fp");
    let good = ck.to_bytes().unwrap();
    // Overwrite the middle of the weights with junk, then re-sign the body.
    let mut b = good.clone();
    let n = b.len();
    for x in &mut b[n - 3000..n - 1000] {
        *x = 0xAB;
    }
    let h = Sha256::digest(&b[40..]);
    b[8..40].copy_from_slice(&h);
    assert!(Checkpoint::from_bytes(&b).is_err());
    // A model of another shape under the same names is refused, not broadcast.
    let other = Checkpoint::new(
        Gpt::new(
            GptConfig {
                n_embd: 16,
                ..GptConfig::default()
            },
            1,
        )
        .unwrap(),
        "fp",
    );
    let mut b = other.to_bytes().unwrap();
    let meta_len = u64::from_le_bytes(b[44..52].try_into().unwrap()) as usize;
    let mut meta: proprio::model::CheckpointMeta =
        rmp_serde::from_slice(&b[52..52 + meta_len]).unwrap();
    meta.config.n_embd = 32;
    let m = rmp_serde::to_vec_named(&meta).unwrap();
    let mut body = b[40..44].to_vec();
    body.extend_from_slice(&(m.len() as u64).to_le_bytes());
    body.extend_from_slice(&m);
    body.extend_from_slice(&b[52 + meta_len..]);
    b.truncate(8);
    b.extend_from_slice(&Sha256::digest(&body));
    b.extend_from_slice(&body);
    let e = format!("{:#}", Checkpoint::from_bytes(&b).err().unwrap());
    assert!(e.contains("weights"), "{e}");
}

#[test]
fn invalid_configs_are_refused() {
    for cfg in [
        GptConfig {
            n_head: 5,
            ..GptConfig::default()
        },
        GptConfig {
            n_layer: 0,
            ..GptConfig::default()
        },
        GptConfig {
            block_size: 1,
            ..GptConfig::default()
        },
        GptConfig {
            n_embd: 1 << 20,
            ..GptConfig::default()
        },
    ] {
        assert!(Gpt::new(cfg, 0).is_err(), "{cfg:?}");
    }
}

/// The convergence criterion on synthetic telemetry: validation
/// loss after 500 steps within 5 % of its value after 2000. About a minute
/// of CPU, hence ignored by default:
/// `cargo test --release --test it model:: -- --ignored --nocapture`.
#[test]
#[ignore]
fn converges_within_500_steps() {
    let streams = synthetic(12, 400, 21);
    let mut gpt = Gpt::new(GptConfig::default(), 1).unwrap();
    let cfg = TrainConfig {
        steps: 2000,
        eval_every: 100,
        progress: true,
        ..TrainConfig::default()
    };
    let r = train(&mut gpt, &streams, &cfg).unwrap();
    let at = |s: usize| r.val_curve.iter().find(|&&(k, _)| k == s).unwrap().1;
    eprintln!("val curve {:?}\n{:.1} s", r.val_curve, r.seconds);
    assert!(
        at(500) <= at(2000) * 1.05,
        "val@500 {} val@2000 {}",
        at(500),
        at(2000)
    );
}

#[test]
fn a_scorer_is_shared_across_threads() {
    setup();
    fn send_sync<T: Send + Sync + Clone>() {}
    send_sync::<NativeScorer>();
    let gpt = trained(small(), 10);
    let items = items_from(&service_events(0, 20, &mut SmallRng::seed_from_u64(2)), 2);
    let want = score(&gpt, &items, 4, THREADS);
    let scorer = NativeScorer::new(&gpt, THREADS);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| scorer.score(&items, 4)))
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), want);
        }
    });
}

#[test]
fn native_forward_matches_libtorch_on_other_shapes() {
    setup();
    // Head sizes 8 (tiled), 10 and 1 (plain loops); widths that are not
    // multiples of the kernel's tiles; one layer and three.
    for (n_embd, n_head, n_layer, block_size) in [(24, 3, 1, 40), (20, 2, 3, 37), (8, 8, 2, 16)] {
        let cfg = GptConfig {
            n_embd,
            n_head,
            n_layer,
            block_size,
            ..GptConfig::default()
        };
        let gpt = trained(cfg, 5);
        let mut items = items_from(&service_events(1, 12, &mut SmallRng::seed_from_u64(5)), 1);
        items.push(ScoreItem {
            context: vec![],
            event: (0..100).map(|i| 40 + i % 50).collect(),
        });
        let torch = score_libtorch(&gpt, &items, 5);
        for simd in [Simd::Scalar, Simd::Avx2, Simd::Avx512] {
            assert_close(
                &NativeScorer::new(&gpt, THREADS).on(simd).score(&items, 5),
                &torch,
                1e-4,
            );
        }
    }
}
