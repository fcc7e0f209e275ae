//! The bodies of the fuzz targets (fuzz/fuzz_targets/), kept apart from
//! libFuzzer so that tests/it/fuzz_corpus.rs can replay the checked-in
//! corpus through exactly the same code in an ordinary `make test`.
//!
//! Every body takes arbitrary bytes and panics only on a broken invariant
//! (or on a panic of proprio itself, which is the bug fuzzing looks for):
//! - [`Harness::event`]: what the live scorer does with a batch of messages
//!   from the bus, up to the model: decode and validate (any subject, JSON,
//!   MessagePack or a raw log line, with and without the skew clock),
//!   render, tokenize with the bytes and the learned vocabulary, keep each
//!   key's context and collapse repeated pulses;
//! - [`Harness::text`]: free text through escape, mask and both
//!   vocabularies;
//! - [`Harness::tokens`]: the model's half: the native forward on arbitrary
//!   token ids, contexts and keys (the cached path against the uncached
//!   one), and the calibrated score and span of what it returns.
//!
//! The forward is a target of its own because it is most of an event's
//! cost: inside `event` it held the fuzzer to a quarter of the inputs per
//! second (README, "Fuzzing").
//!
//! Each input starts from fresh per-input state (contexts, repeats, caches,
//! tails), so a crash replays from its input alone; the vocabulary and the
//! small untrained model are built once per process.

use proprio::curriculum::{escape, Document, Renderer};
use proprio::event::{Event, Kind, Limits};
use proprio::model::gpt::Gpt;
use proprio::model::score::KvCache;
use proprio::model::{GptConfig, NativeScorer, ScoreItem};
use proprio::scorer::{score_against, EventScorer, LiveTails, Prepared};
use proprio::tokenizer::Tokenizer;
use proprio::vocab::Vocab;
use std::sync::{Arc, Mutex, OnceLock};

/// The telemetry root subjects are read under (proto/vectors' root).
pub const ROOT: &str = "os";
/// The skew check's "now": proto/vectors' `now_ms` (2026-01-01).
pub const NOW: i64 = 1_767_225_600_123;
/// Separates the messages of one [`Harness::event`] input. 0xc1 is never
/// used in MessagePack and is never valid UTF-8 (so never in JSON), so
/// splitting cuts no valid payload, while one 0xc1 still reaches the
/// decoders.
pub const SEP: [u8; 2] = [0xc1, 0xc1];
/// Most messages read from one input, like a small batch off the bus.
pub const MAX_MESSAGES: usize = 8;
/// Keys the context and repeat maps hold before evicting: small, so that
/// eviction runs too.
const MAX_KEYS: usize = 4;
/// Items per scoring round (the worker's batch): small, so that a
/// key's events cross rounds.
const BATCH: usize = 3;

/// One message's header byte.
pub mod flags {
    /// A subject follows, up to the first 0x00; else the payload has none
    /// (a file's line).
    pub const SUBJECT: u8 = 1;
    /// Decode with the skew clock at [`super::NOW`] (live traffic).
    pub const CLOCK: u8 = 2;
    /// A redelivery: prepared as every event, not as a live one (no
    /// collapse of repeated pulses), as the scorer's role does.
    pub const REDELIVERED: u8 = 4;
}

/// Encodes one message of an [`Harness::event`] input (the corpus
/// seeds are written with it).
pub fn message(subject: Option<&str>, clock: bool, redelivered: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = 0;
    if subject.is_some() {
        f |= flags::SUBJECT;
    }
    if clock {
        f |= flags::CLOCK;
    }
    if redelivered {
        f |= flags::REDELIVERED;
    }
    let mut out = vec![f];
    if let Some(s) = subject {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    out.extend_from_slice(payload);
    out
}

/// Joins messages into one input.
pub fn messages(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.join(&SEP[..])
}

/// One message cut out of an input.
struct Message<'a> {
    subject: Option<String>,
    now: Option<i64>,
    redelivered: bool,
    payload: &'a [u8],
}

fn split(data: &[u8]) -> Vec<Message<'_>> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < MAX_MESSAGES && !rest.is_empty() {
        let (part, next) = match rest.windows(2).position(|w| w == SEP) {
            Some(i) => (&rest[..i], &rest[i + 2..]),
            None => (rest, &[][..]),
        };
        rest = next;
        let Some((&f, mut payload)) = part.split_first() else {
            continue;
        };
        let subject = if f & flags::SUBJECT != 0 {
            let end = payload
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(payload.len());
            // NATS subjects are strings: a subject that is not UTF-8 cannot
            // arrive, so take it lossily rather than lose the input.
            let s = String::from_utf8_lossy(&payload[..end]).into_owned();
            payload = payload.get(end + 1..).unwrap_or_default();
            Some(s)
        } else {
            None
        };
        out.push(Message {
            subject,
            now: (f & flags::CLOCK != 0).then_some(NOW),
            redelivered: f & flags::REDELIVERED != 0,
            payload,
        });
    }
    out
}

/// What the targets share: built once per process.
pub struct Harness {
    limits: Limits,
    renderer: Renderer,
    bytes: Arc<Vocab>,
    learned: Arc<Vocab>,
    native: NativeScorer,
    block_size: usize,
    /// The renderer the last [`Harness::event`] used, for the next one.
    spare: Mutex<Option<Renderer>>,
}

impl Harness {
    /// The process's harness: a vocabulary learned from a simulated six
    /// minutes (as a cold start learns one, so fuzzed text meets names and
    /// merges) and an untrained GPT of the default shape over it (its
    /// weights are random but fixed, which is all the forward's invariants
    /// need).
    pub fn get() -> &'static Harness {
        static H: OnceLock<Harness> = OnceLock::new();
        H.get_or_init(Harness::new)
    }

    fn new() -> Harness {
        proprio::model::set_libtorch_threads(1);
        let mut sim = proprio::sim::SimConfig::new(proprio::sim::load_registry(None).unwrap());
        sim.hours = 0.1;
        let renderer = Renderer::default();
        let lines: Vec<String> = proprio::sim::generate(&sim)
            .unwrap()
            .map(|e| renderer.render(&e, &mut renderer.scaler()))
            .collect();
        let learned = Arc::new(
            proprio::vocab::learn::learn(
                lines.iter().map(|s| s.as_str()),
                &proprio::vocab::learn::VocabConfig::LEARNED,
            )
            .unwrap(),
        );
        let shape = GptConfig {
            vocab_size: learned.len(),
            ..GptConfig::default()
        };
        let gpt = Gpt::new(shape, 7).unwrap();
        Harness {
            limits: Limits::default(),
            renderer,
            bytes: Vocab::bytes(),
            learned,
            // One thread: the fuzzer is one process per core.
            native: NativeScorer::new(&gpt, 1),
            block_size: gpt.config().block_size,
            spare: Mutex::new(None),
        }
    }

    /// A batch of messages from the bus, through everything the scorer
    /// does with it up to the model: returns how many events reached it
    /// (as the items [`Harness::tokens`] fuzzes the forward with).
    pub fn event(&self, data: &[u8]) -> usize {
        // A fresh scorer, but not a fresh renderer: compiling its masks'
        // regexes would cost more than everything else an input does.
        let renderer = self.spare.lock().unwrap().take().unwrap_or_default();
        let mut scorer =
            EventScorer::new(renderer, self.learned.clone(), self.block_size, MAX_KEYS);
        let mut prepared = 0;
        for m in split(data) {
            let subject = m.subject.as_deref().map(|s| (ROOT, s));
            let Ok(ev) = Event::decode(m.payload, subject, &self.limits, m.now) else {
                continue;
            };
            self.accepted(&ev);
            let p = if m.redelivered {
                Some(scorer.prepare_event(&ev))
            } else {
                scorer.prepare_live(&ev)
            };
            if let Some(p) = p {
                // The item the model thread gets: whole earlier events of
                // the key, then the event's own tokens.
                assert!(p.item.context.len() <= self.block_size, "context too long");
                assert_eq!(p.item.event, p.tokens);
                assert!(p.tokens.iter().all(|&i| (i as usize) < self.learned.len()));
                prepared += 1;
            }
        }
        *self.spare.lock().unwrap() = Some(scorer.renderer);
        prepared
    }

    /// The invariants of an accepted event, before scoring.
    fn accepted(&self, ev: &Event) {
        // The bus form (what the harvester republishes) decodes back to the
        // same event, without the label.
        let again = Event::decode(&ev.to_msgpack(), None, &self.limits, None)
            .unwrap_or_else(|e| panic!("re-decoding {ev:?}: {e}"));
        let mut unlabelled = ev.clone();
        unlabelled.label = None;
        assert_eq!(again, unlabelled);
        // One line of text, whose document round-trips...
        let doc = Document::of_event(&self.renderer, &mut self.renderer.scaler(), ev, "fp");
        assert!(!doc.text.contains('\n'), "two lines: {:?}", doc.text);
        let back = Document::from_msgpack(&doc.to_msgpack()).expect("document round-trips");
        assert_eq!(back.text, doc.text);
        // ...tokenized losslessly by both vocabularies.
        for v in [&self.bytes, &self.learned] {
            lossless(v, &doc.text);
        }
    }

    /// Free text (lossily UTF-8) through escape and mask: never a forged
    /// special token, never a line break, and every vocabulary gives the
    /// text back.
    pub fn text(&self, data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let e = escape(&text);
        assert!(!e.contains("<|"), "{text:?} -> {e:?}");
        assert!(!e.contains(['\n', '\r']), "{text:?} -> {e:?}");
        let m = self.renderer.mask(&text);
        assert!(!m.contains(['\n', '\r']), "{text:?} -> {m:?}");
        for v in [&self.bytes, &self.learned] {
            let ids = lossless(v, &m);
            // Every `<|` left is a real token that the mask put there.
            assert_eq!(
                ids.iter().filter(|&&i| Tokenizer::is_special(i)).count(),
                m.matches("<|").count(),
                "{text:?} -> {m:?}"
            );
            // Unescaped text (a curriculum line) also round-trips.
            lossless(v, &text);
        }
    }

    /// The native forward on arbitrary items: per item a header of three
    /// bytes (key, context length, event length) then that many token ids,
    /// two bytes each; ids past the vocabulary occur (they are read as
    /// padding). The cached path, item by item over one cache and as one
    /// batch, gives the uncached path's numbers; the losses calibrate into a
    /// score and a span within the event.
    pub fn tokens(&self, data: &[u8]) {
        let vocab = self.native.config().vocab_size;
        let (mut keys, mut items) = (Vec::new(), Vec::new());
        let mut rest = data;
        while let [k, c, e, tail @ ..] = rest {
            let (c, e) = (*c as usize, *e as usize);
            let want = 2 * (c + e);
            let ids: Vec<u32> = tail[..want.min(tail.len())]
                .chunks_exact(2)
                // A few ids past the vocabulary, the rest inside it.
                .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])) % (vocab as u32 + 4))
                .collect();
            let c = c.min(ids.len());
            keys.push(format!("k{}", k % 4));
            items.push(ScoreItem {
                context: ids[..c].to_vec(),
                event: ids[c..].to_vec(),
            });
            rest = tail.get(want..).unwrap_or_default();
            if items.len() == MAX_MESSAGES {
                break;
            }
        }
        let plain = self.native.score(&items, BATCH);
        assert_eq!(plain.len(), items.len());
        let mut cache = KvCache::new(MAX_KEYS);
        let batched = self.native.score_cached(&mut cache, &keys, &items, BATCH);
        let mut tails = LiveTails::default();
        for (i, it) in items.iter().enumerate() {
            let n = it.event.len().saturating_sub(1);
            let p = &plain[i];
            assert!(p.loss.is_finite() && p.loss >= 0.0, "loss {}", p.loss);
            assert_eq!(p.token_losses.len(), n);
            assert_eq!(p.token_entropies.len(), n);
            close(p, &batched[i], "batched");
            // Calibrated, with the span shown in an alert, for what the
            // tokenizer can make (ids inside the vocabulary).
            if it.event.iter().all(|&t| (t as usize) < vocab) {
                let kind = Kind::ALL[i % Kind::ALL.len()];
                let prepared = Prepared {
                    vocab: self.learned.clone(),
                    key: keys[i].clone(),
                    source: keys[i].clone(),
                    kind: Some(kind),
                    rendered: String::new(),
                    tokens: it.event.clone(),
                    item: it.clone(),
                    readings: Vec::new(),
                };
                let ts = NOW + 1000 * i as i64;
                let s = score_against(&prepared, p, ts, &mut tails);
                assert!(!s.score.is_nan(), "score is NaN for {:?}", it.event);
                assert!(s.span.start <= s.span.end && s.span.end <= it.event.len());
            }
        }
        // The same items one at a time over one cache: each reuses what
        // the one before it left.
        let mut cache = KvCache::new(MAX_KEYS);
        for (i, it) in items.iter().enumerate() {
            let one = self.native.score_cached(
                &mut cache,
                std::slice::from_ref(&keys[i]),
                std::slice::from_ref(it),
                BATCH,
            );
            close(&plain[i], &one[0], "one by one");
        }
    }
}

/// Encodes `text` and decodes it back, in range and unchanged.
fn lossless(v: &Vocab, text: &str) -> Vec<u32> {
    let ids = v.encode(text);
    assert!(
        ids.iter().all(|&i| (i as usize) < v.len()),
        "id out of range"
    );
    assert_eq!(v.decode(&ids), text);
    ids
}

/// The cached forward's numbers are the full forward's (the unit tests
/// hold them to 1e-4 per token on real events; here the ids are arbitrary).
fn close(a: &proprio::model::EventLoss, b: &proprio::model::EventLoss, what: &str) {
    let near = |x: f32, y: f32| (x - y).abs() <= 1e-3 * (1.0 + x.abs().max(y.abs()));
    assert!(
        near(a.loss, b.loss),
        "{what}: loss {} vs {}",
        a.loss,
        b.loss
    );
    assert_eq!(a.token_losses.len(), b.token_losses.len(), "{what}");
    for (x, y) in a.token_losses.iter().zip(&b.token_losses) {
        assert!(near(*x, *y), "{what}: token loss {x} vs {y}");
    }
    for (x, y) in a.token_entropies.iter().zip(&b.token_entropies) {
        assert!(near(*x, *y), "{what}: entropy {x} vs {y}");
    }
}
