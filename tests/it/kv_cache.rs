//! The streaming scorer's per-key cache of keys and values (issue 14, item
//! 5): events scored over their key's cached keys and values give the
//! numbers of a full forward over the same context (native and libtorch),
//! whatever the cache held: restarts of a key's context, events longer than
//! the block, eviction under a small budget, a new model.

use proprio::model::score::{KvCache, Simd};
use proprio::model::{
    score, score_libtorch, train, EventLoss, Gpt, GptConfig, NativeScorer, ScoreItem, Stream,
    TrainConfig,
};
use proprio::scorer::Contexts;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const BLOCK: usize = 64;

fn cfg() -> GptConfig {
    GptConfig {
        block_size: BLOCK,
        ..GptConfig::default()
    }
}

/// Lines of several keys, interleaved, of varied length (about 12 to 45
/// tokens, so a key's context holds one to four events and restarts
/// often), and now and then one longer than the block.
fn stream(keys: usize, n: usize, seed: u64) -> Vec<(String, Vec<u32>)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let k = rng.gen_range(0..keys);
            let text = if i % 37 == 36 {
                format!("<|BOE|><|LOG|><|SVC|>s{k}<|MSG|>{}<|EOE|>", "x".repeat(80))
            } else if rng.gen_bool(0.5) {
                format!("<|BOE|><|FLUX|><|SVC|>s{k}<|STATE|>running<|EOE|>")
            } else {
                let m = rng.gen_range(1..5);
                let metrics: String = (0..m)
                    .map(|j| format!("<|METRIC|>m{j} {}", rng.gen_range(0..100)))
                    .collect();
                format!("<|BOE|><|PULSE|><|SVC|>s{k}{metrics}<|EOE|>")
            };
            (
                format!("key-{k}"),
                proprio::vocab::Vocab::bytes().encode(&text),
            )
        })
        .collect()
}

/// Keys and items as the scorer makes them: each event in its key's
/// context ([`Contexts`]).
fn items(events: &[(String, Vec<u32>)]) -> (Vec<String>, Vec<ScoreItem>) {
    let mut ctx = Contexts::new(BLOCK, 1000);
    let items = events
        .iter()
        .map(|(k, t)| ScoreItem {
            context: ctx.next(k, t),
            event: t.clone(),
        })
        .collect();
    (events.iter().map(|e| e.0.clone()).collect(), items)
}

fn model(seed: u64) -> Gpt {
    proprio::model::set_libtorch_threads(1);
    let mut gpt = Gpt::new(cfg(), seed).unwrap();
    let mut s = Stream::default();
    for (_, t) in stream(3, 200, seed) {
        s.starts.push((s.tokens.len(), 1.0));
        s.tokens.extend(t);
    }
    let tc = TrainConfig {
        steps: 30,
        batch_size: 8,
        eval_every: 10,
        eval_batches: 2,
        progress: false,
        ..TrainConfig::default()
    };
    train(&mut gpt, &[s], &tc).unwrap();
    gpt
}

/// Scores through `cache` in calls of `call` items.
fn cached(
    native: &NativeScorer,
    cache: &mut KvCache,
    keys: &[String],
    items: &[ScoreItem],
    call: usize,
) -> Vec<EventLoss> {
    let mut out = Vec::new();
    for (k, it) in keys.chunks(call).zip(items.chunks(call)) {
        out.extend(native.score_cached(cache, k, it, 8));
    }
    out
}

/// The largest difference of loss, token loss or entropy (lengths equal).
fn max_diff(a: &[EventLoss], b: &[EventLoss]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut m = 0.0f32;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.token_losses.len(), y.token_losses.len(), "item {i}");
        assert_eq!(x.token_entropies.len(), y.token_entropies.len(), "item {i}");
        m = m.max((x.loss - y.loss).abs());
        let pairs = x.token_losses.iter().zip(&y.token_losses);
        for (u, v) in pairs.chain(x.token_entropies.iter().zip(&y.token_entropies)) {
            assert!(u.is_finite() && v.is_finite(), "item {i}");
            m = m.max((u - v).abs());
        }
    }
    m
}

#[test]
fn cached_losses_equal_a_full_recomputation_over_the_same_context() {
    let gpt = model(3);
    let (keys, items) = items(&stream(5, 400, 11));
    let full = score(&gpt, &items, 16, 1);
    let torch = score_libtorch(&gpt, &items, 16);
    assert!(max_diff(&full, &torch) <= 1e-4);
    for simd in [Simd::Scalar, Simd::Avx2, Simd::Avx512] {
        for (threads, call) in [(1, 400), (2, 7), (2, 64)] {
            let native = NativeScorer::new(&gpt, threads).on(simd);
            let mut cache = KvCache::default();
            let got = cached(&native, &mut cache, &keys, &items, call);
            let (d_full, d_torch) = (max_diff(&got, &full), max_diff(&got, &torch));
            assert!(d_full <= 1e-4, "{simd:?} {threads} {call}: {d_full}");
            assert!(d_torch <= 1e-4, "{simd:?} {threads} {call}: {d_torch}");
            // The cache was used: most context positions reused, the
            // restarts recomputed, the events longer than the block
            // (windowed, uncached) left out.
            let s = cache.stats();
            let long = items.iter().filter(|i| i.event.len() > BLOCK).count();
            assert!(long > 0);
            assert_eq!(s.events as usize, items.len() - long, "{s:?}");
            assert!(s.reused > s.computed / 2 && s.prefills > 20, "{s:?}");
            assert_eq!((s.evicted, s.model_changes), (0, 0));
            assert_eq!(cache.len(), 5);
        }
    }
}

#[test]
fn a_small_cache_evicts_and_recomputes_the_same_numbers() {
    let gpt = model(3);
    let (keys, items) = items(&stream(12, 300, 5));
    let full = score(&gpt, &items, 16, 1);
    let native = NativeScorer::new(&gpt, 2);
    // Three keys' blocks: keys and values (2 layers, 2 x 32 floats a
    // position) and token ids.
    let block = BLOCK * (2 * 2 * 32 + 1) * 4;
    let mut cache = KvCache::new(3);
    let mut got = Vec::new();
    for (k, it) in keys.chunks(10).zip(items.chunks(10)) {
        got.extend(native.score_cached(&mut cache, k, it, 4));
        assert!(cache.len() <= 3);
        assert!(
            cache.bytes() <= 3 * block,
            "{} > 3 x {block}",
            cache.bytes()
        );
    }
    assert!(max_diff(&got, &full) <= 1e-4);
    let s = cache.stats();
    assert!(s.evicted > 10 && s.reused > 0, "{s:?}");
}

#[test]
fn a_new_model_restarts_the_cache() {
    let (a, b) = (model(3), model(8));
    let (keys, items) = items(&stream(4, 120, 2));
    let mut cache = KvCache::default();
    let half = items.len() / 2;
    let first = cached(
        &NativeScorer::new(&a, 1),
        &mut cache,
        &keys[..half],
        &items[..half],
        16,
    );
    assert!(max_diff(&first, &score(&a, &items[..half], 16, 1)) <= 1e-4);
    // The same keys, their contexts cached under model a, now scored by b:
    // b's numbers, from b's keys and values.
    let second = cached(
        &NativeScorer::new(&b, 1),
        &mut cache,
        &keys[half..],
        &items[half..],
        16,
    );
    let want = score(&b, &items[half..], 16, 1);
    assert!(max_diff(&second, &want) <= 1e-4);
    assert!(max_diff(&second, &score(&a, &items[half..], 16, 1)) > 1e-2);
    assert_eq!(cache.stats().model_changes, 1);
}

#[test]
fn items_without_a_key_or_that_overflow_the_block_are_scored_whole() {
    let gpt = model(3);
    let (keys, mut items) = items(&stream(3, 40, 9));
    // A context that overflows the block, an empty and a one-token event.
    items.push(ScoreItem {
        context: vec![40; BLOCK],
        event: items[3].event.clone(),
    });
    items.push(ScoreItem {
        context: vec![1, 2],
        event: vec![],
    });
    items.push(ScoreItem {
        context: vec![],
        event: vec![7],
    });
    let full = score(&gpt, &items, 16, 1);
    let mut cache = KvCache::default();
    // The last five items have no key (keys is shorter than items).
    let short = &keys[..keys.len() - 2];
    let got = NativeScorer::new(&gpt, 2).score_cached(&mut cache, short, &items, 8);
    assert!(max_diff(&got, &full) <= 1e-4);
    let n = items.len();
    assert!(got[n - 1].token_losses.is_empty() && got[n - 2].token_losses.is_empty());
}
