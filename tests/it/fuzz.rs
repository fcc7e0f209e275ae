//! Property-based fuzzing (proptest) of everything a telemetry payload goes
//! through before it can become an alert: decode, validate, render,
//! tokenize and score (the native scorer, on a small untrained GPT).
//!
//! Four input families, each a fixed number of cases (printed):
//! arbitrary bytes, arbitrary JSON/MessagePack maps, event-shaped maps with
//! the contract's field names but arbitrary values, and mutations of the
//! valid vectors of proto/vectors/events.json. Every input goes through
//! every subject form. A panic anywhere fails the test (proptest reports the
//! shrunk input); so does a broken invariant on an accepted event.
//!
//! `cargo test --release --test it fuzz:: -- --nocapture`; PROPRIO_FUZZ_CASES
//! (per family) makes a longer run.

use crate::support;
use proprio::curriculum::{Document, Renderer};
use proprio::event::{Event, Limits};
use proprio::model::gpt::Gpt;
use proprio::model::{GptConfig, NativeScorer};
use proprio::scorer::{score_against, EventScorer, LiveTails};
use proprio::tokenizer::Tokenizer;
use proprio::vocab::Vocab;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

/// A fixed "now" for the skew check (2026-01-01).
const NOW: i64 = 1_767_225_600_000;

const SUBJECTS: [Option<&str>; 8] = [
    None,
    Some("os.pulse.svc"),
    Some("os.log.svc"),
    Some("os.flux.svc.started"),
    Some("os.chronicle.svc"),
    Some("os.trace.orchestrator"),
    Some("os.graph.deps"),
    Some("os.bogus.svc"),
];

fn cases() -> u32 {
    std::env::var("PROPRIO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15_000)
}

/// What one input went through, summed over a run.
#[derive(Default, Debug)]
struct Tally {
    inputs: u64,
    decodes: u64,
    accepted: u64,
    scored: u64,
}

struct Pipeline {
    vocab: Arc<Vocab>,
    limits: Limits,
    renderer: Renderer,
    scaler: proprio::curriculum::Scaler,
    /// Kept across inputs, so events are scored in the context of earlier ones.
    events: EventScorer,
    native: NativeScorer,
    block_size: usize,
    tails: LiveTails,
    tally: Tally,
}

impl Pipeline {
    fn new() -> Pipeline {
        proprio::model::set_libtorch_threads(1);
        // A vocabulary learned from a simulated stretch, as a cold start
        // learns one, so the fuzzed text meets names and merges too.
        let mut sim = proprio::sim::SimConfig::new(proprio::sim::load_registry(None).unwrap());
        sim.hours = 0.1;
        let r = Renderer::default();
        let lines: Vec<String> = proprio::sim::generate(&sim)
            .unwrap()
            .map(|e| r.render(&e, &mut r.scaler()))
            .collect();
        let vocab = Arc::new(
            proprio::vocab::learn::learn(
                lines.iter().map(|s| s.as_str()),
                &proprio::vocab::learn::VocabConfig::LEARNED,
            )
            .unwrap(),
        );
        let shape = GptConfig {
            vocab_size: vocab.len(),
            ..GptConfig::default()
        };
        let gpt = Gpt::new(shape, 7).unwrap();
        let block_size = gpt.config().block_size;
        // A tight key cap, so eviction runs too.
        Pipeline {
            limits: Limits::default(),
            renderer: Renderer::default(),
            scaler: Default::default(),
            events: EventScorer::new(Renderer::default(), vocab.clone(), block_size, 64),
            vocab,
            native: NativeScorer::new(&gpt, 1),
            block_size,
            tails: LiveTails::default(),
            tally: Tally::default(),
        }
    }

    /// Runs one payload through every subject form and both skew modes.
    fn run(&mut self, payload: &[u8]) -> Result<(), TestCaseError> {
        self.tally.inputs += 1;
        for subject in SUBJECTS {
            for now in [None, Some(NOW)] {
                self.tally.decodes += 1;
                let s = subject.map(|s| ("os", s));
                if let Ok(ev) = Event::decode(payload, s, &self.limits, now) {
                    self.accepted(&ev)?;
                }
            }
        }
        Ok(())
    }

    /// Invariants of an accepted event, through render, tokenize and score.
    fn accepted(&mut self, ev: &Event) -> Result<(), TestCaseError> {
        self.tally.accepted += 1;
        // The bus form decodes back to the same event.
        let again = Event::decode(&ev.to_msgpack(), None, &self.limits, None)
            .map_err(|e| TestCaseError::fail(format!("re-decoding {ev:?}: {e}")))?;
        let mut unlabelled = ev.clone();
        unlabelled.label = None;
        prop_assert_eq!(&again, &unlabelled);
        // One line of text, tokenized losslessly into the vocabulary.
        let doc = Document::of_event(&self.renderer, &mut self.scaler, ev, "fp");
        prop_assert!(!doc.text.contains('\n'), "two lines: {:?}", doc.text);
        prop_assert!(
            Document::from_msgpack(&doc.to_msgpack()).is_ok(),
            "document does not round-trip"
        );
        let ids = self.vocab.encode(&doc.text);
        prop_assert!(ids.iter().all(|&i| (i as usize) < self.vocab.len()));
        prop_assert_eq!(self.vocab.decode(&ids), doc.text.clone());
        // Scored in context: a finite loss per predicted token.
        let p = self.events.prepare_event(ev);
        prop_assert!(p.item.context.len() <= self.block_size);
        let losses = self.native.score(std::slice::from_ref(&p.item), 1);
        prop_assert_eq!(losses.len(), 1);
        let l = &losses[0];
        prop_assert!(l.loss.is_finite() && l.loss >= 0.0, "loss {}", l.loss);
        prop_assert_eq!(l.token_losses.len(), p.item.event.len().saturating_sub(1));
        let s = score_against(&p, l, ev.ts, &mut self.tails);
        prop_assert!(!s.score.is_nan(), "score is NaN for {:?}", p.rendered);
        self.tally.scored += 1;
        Ok(())
    }
}

// ------------------------------------------------------------- strategies

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN/inf become null in JSON
        ".{0,40}".prop_map(Value::String),
        "[a-z_]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Values that are plausible for some field of the contract.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (NOW - 10_000_000_000i64..NOW + 10_000_000_000).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        3 => prop::sample::select(vec![
            "flux", "pulse", "log", "chronicle", "trace", "graph", "perceive", "act",
            "healthy", "degraded", "info", "error", "svc", "", "Flux",
        ])
        .prop_map(Value::from),
        3 => "\\PC{0,60}".prop_map(Value::String),
        1 => "[a-z<|>_ ]{0,300}".prop_map(Value::String),
        1 => (0usize..6000).prop_map(|n| Value::String("x".repeat(n))),
        2 => prop::collection::btree_map("[a-z_]{1,10}", any::<f64>(), 0..6)
            .prop_map(|m| serde_json::json!(m)),
        1 => (0usize..100).prop_map(|n| {
            Value::Object((0..n).map(|i| (format!("m{i}"), Value::from(i as f64))).collect())
        }),
        2 => prop::collection::btree_map(
            "[a-z_]{1,10}",
            prop_oneof![
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                "\\PC{0,20}".prop_map(Value::String),
                Just(Value::Null),
                Just(serde_json::json!([1, 2])),
            ],
            0..6
        )
        .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => any_json(),
    ]
}

fn event_shaped() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop::sample::select(support::EVENT_FIELDS.to_vec()),
        field_value(),
        0..12,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

/// A JSON value as JSON bytes or MessagePack bytes. MessagePack keeps the
/// non-finite floats that JSON cannot spell.
fn encodings(v: &Value, nan: bool) -> Vec<Vec<u8>> {
    let mut out = vec![serde_json::to_vec(v).unwrap()];
    let mut mp = rmp_serde::to_vec_named(v).unwrap();
    if nan {
        // Any f64 0.0 in the MessagePack form becomes NaN or infinity.
        let zero = [0xcb, 0, 0, 0, 0, 0, 0, 0, 0];
        if let Some(i) = mp.windows(9).position(|w| w == zero) {
            mp[i + 1..i + 9].copy_from_slice(&f64::NAN.to_be_bytes());
        }
    }
    out.push(mp);
    out
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Every valid payload of proto/vectors/events.json, as bytes.
fn valid_vectors() -> Vec<Vec<u8>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/vectors/events.json");
    let f: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for v in f["vectors"].as_array().unwrap() {
        if let Some(j) = v["json"].as_str() {
            out.push(j.as_bytes().to_vec());
        }
        if let Some(h) = v["msgpack_hex"].as_str() {
            out.push(unhex(h));
        }
    }
    assert!(out.len() >= 10, "proto vectors missing");
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Splice(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop::sample::select(vec![
        0x00u8, 0x7f, 0x80, 0x8f, 0x90, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xca, 0xcb, 0xcc, 0xcf,
        0xd3, 0xd9, 0xdc, 0xdd, 0xde, 0xdf, 0xff, b'{', b'}', b'[', b'"', b'\\', b':', b',', 0xed,
        0xf0,
    ]);
    prop_oneof![
        (
            any::<usize>(),
            prop_oneof![any::<u8>(), interesting.clone()]
        )
            .prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(interesting, 1..6))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Remove(i, n)),
        (any::<usize>(), any::<usize>(), 1usize..16)
            .prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ]
}

fn mutate(mut p: Vec<u8>, muts: &[Mutation], other: &[u8]) -> Vec<u8> {
    for m in muts {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match m {
            Mutation::Set(i, b) if !p.is_empty() => {
                let i = i % p.len();
                p[i] = *b;
            }
            Mutation::Truncate(i) => p.truncate(at(*i, p.len())),
            Mutation::Insert(i, b) => {
                let i = at(*i, p.len());
                p.splice(i..i, b.iter().copied());
            }
            Mutation::Remove(i, n) if !p.is_empty() => {
                let i = i % p.len();
                p.drain(i..(i + n).min(p.len()));
            }
            // A run of bytes from another vector, over this one.
            Mutation::Splice(a, b, n) if !other.is_empty() => {
                let a = at(*a, p.len());
                let b = b % other.len();
                let chunk = &other[b..(b + n).min(other.len())];
                p.splice(a..(a + chunk.len()).min(p.len()), chunk.iter().copied());
            }
            _ => {}
        }
    }
    p
}

/// Bytes shaped like deep nesting, huge containers or bad UTF-8.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        (
            1usize..40_000,
            prop::sample::select(vec![0x91u8, 0x81, b'['])
        )
            .prop_map(|(n, b)| {
                let mut v = vec![0x81, 0xa5];
                v.extend_from_slice(b"attrs");
                v.extend(std::iter::repeat_n(b, n));
                v
            }),
        (1usize..20_000)
            .prop_map(|n| format!(r#"{{"ts":{NOW},"attrs":{}}}"#, "[".repeat(n)).into_bytes()),
        // A map header claiming more entries than there are bytes.
        (any::<u32>()).prop_map(|n| {
            let mut v = vec![0xdf];
            v.extend_from_slice(&n.to_be_bytes());
            v.extend_from_slice(&[0xa2, b't', b's', 0x01]);
            v
        }),
        // Strings whose bytes are not UTF-8.
        prop::collection::vec(0x80u8..=0xff, 1..40).prop_map(|bad| {
            let mut v = vec![0x83, 0xa2, b't', b's', 0x01, 0xa6];
            v.extend_from_slice(b"source");
            v.push(0xd9);
            v.push(bad.len() as u8);
            v.extend(bad);
            v.extend_from_slice(&[0xa7]);
            v.extend_from_slice(b"message");
            v.extend_from_slice(&[0xa1, b'x']);
            v
        }),
        // Past the size limit.
        (64 * 1024usize..70 * 1024).prop_map(|n| {
            let mut v = format!(r#"{{"ts":{NOW},"message":""#).into_bytes();
            v.extend(std::iter::repeat_n(b'a', n));
            v.extend_from_slice(b"\"}");
            v
        }),
    ]
}

fn runner(n: u32) -> TestRunner {
    TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        // Rejections are not used: every generated input is run.
        max_global_rejects: 0,
        ..Config::default()
    })
}

#[test]
fn fuzz_decode_validate_render_tokenize_score() {
    let t0 = Instant::now();
    let n = cases();
    let pipe = RefCell::new(Pipeline::new());
    let mut families = Vec::new();

    let before = pipe.borrow().tally.inputs;
    runner(n)
        .run(&hostile_bytes(), |b| pipe.borrow_mut().run(&b))
        .unwrap();
    families.push((
        "arbitrary/hostile bytes",
        pipe.borrow().tally.inputs - before,
    ));

    let before = pipe.borrow().tally.inputs;
    runner(n)
        .run(&(any_json(), any::<bool>()), |(v, nan)| {
            for p in encodings(&v, nan) {
                pipe.borrow_mut().run(&p)?;
            }
            Ok(())
        })
        .unwrap();
    families.push((
        "arbitrary JSON/MessagePack values",
        pipe.borrow().tally.inputs - before,
    ));

    let before = pipe.borrow().tally.inputs;
    let accepted_before = pipe.borrow().tally.accepted;
    runner(n)
        .run(&(event_shaped(), any::<bool>()), |(v, nan)| {
            for p in encodings(&v, nan) {
                pipe.borrow_mut().run(&p)?;
            }
            Ok(())
        })
        .unwrap();
    families.push(("event-shaped maps", pipe.borrow().tally.inputs - before));
    let shaped_accepted = pipe.borrow().tally.accepted - accepted_before;

    let vectors = valid_vectors();
    let before = pipe.borrow().tally.inputs;
    runner(n)
        .run(
            &(
                0..vectors.len(),
                0..vectors.len(),
                prop::collection::vec(mutation(), 1..5),
            ),
            |(i, j, muts)| {
                let p = mutate(vectors[i].clone(), &muts, &vectors[j]);
                pipe.borrow_mut().run(&p)
            },
        )
        .unwrap();
    families.push(("mutated proto vectors", pipe.borrow().tally.inputs - before));

    // User text through escape and mask: never a forged special token
    // (every `<|` left is a real token the mask put there), never a line break.
    let before = pipe.borrow().tally.inputs;
    runner(n)
        .run(&"[<|>a-zA-Z0-9 \n\r:/.-]{0,40}|\\PC{0,40}", |text| {
            let mut p = pipe.borrow_mut();
            p.tally.inputs += 1;
            let e = proprio::curriculum::escape(&text);
            prop_assert!(!e.contains("<|"), "{text:?} -> {e:?}");
            prop_assert!(!e.contains(['\n', '\r']), "{text:?} -> {e:?}");
            let m = p.renderer.mask(&text);
            let ids = p.vocab.encode(&m);
            prop_assert_eq!(p.vocab.decode(&ids), m.clone());
            prop_assert_eq!(
                ids.iter().filter(|&&i| Tokenizer::is_special(i)).count(),
                m.matches("<|").count(),
                "{:?} -> {:?}",
                text,
                m
            );
            Ok(())
        })
        .unwrap();
    families.push((
        "free text through escape and mask",
        pipe.borrow().tally.inputs - before,
    ));

    // The unmutated vectors are accepted and scored: the pipeline is live.
    let scored_before = pipe.borrow().tally.scored;
    for v in &vectors {
        pipe.borrow_mut().run(v).unwrap();
    }
    assert!(pipe.borrow().tally.scored > scored_before);

    let t = &pipe.borrow().tally;
    for (name, k) in &families {
        println!("fuzz: {name}: {k} inputs");
    }
    println!(
        "fuzz: {} inputs, {} decode calls ({} subject forms x 2 clocks), {} accepted and scored, 0 panics, {:.1}s",
        t.inputs,
        t.decodes,
        SUBJECTS.len(),
        t.scored,
        t0.elapsed().as_secs_f64()
    );
    // Each family ran its cases (JSON families count two encodings each).
    assert!(t.inputs >= 7 * n as u64, "{t:?}");
    assert_eq!(t.accepted, t.scored);
    // Event-shaped maps must reach validation's far end sometimes, or the
    // scoring half of the fuzz target would be idle.
    assert!(shaped_accepted > 0, "no event-shaped map was accepted");
}
