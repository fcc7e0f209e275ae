use super::learn::{learn, VocabConfig};
use super::*;

/// A small curriculum in the renderer's form: the registry's lines and
/// repeated telemetry (written out here, so this module does not depend on
/// the renderer).
fn curriculum() -> Vec<String> {
    let mut lines = vec![
        "<|BOE|><|AXIOMATIC|><|SVC|>AitherMind<|L3|><|ROLE|>service<|PORT|>8100<|DEPENDS|>AitherRedis<|EOE|>".to_string(),
        "<|BOE|><|AXIOMATIC|><|SVC|>AitherRedis<|L0|><|ROLE|>service<|PORT|>6379<|EOE|>".to_string(),
        "<|BOE|><|AXIOMATIC|><|SVC|>svc-3<|L1|><|ROLE|>service<|PORT|>81<|EOE|>".to_string(),
        "<|BOE|><|TOPOLOGY|><|GRAPH|>ServiceGraph<|SRC|>AitherMind<|REL|>depends_on<|DST|>AitherRedis<|EOE|>".to_string(),
    ];
    for i in 0..200 {
        lines.push(format!(
            "<|BOE|><|PULSE|><|SVC|>AitherMind<|METRIC|>cpu=-b{}<|METRIC|>mem_rss_mb=b{}<|EOE|>",
            i % 7,
            19 + i % 5
        ));
        lines.push(format!(
            "<|BOE|><|LOG|><|SVC|>AitherRedis<|LEVEL|>INFO<|MSG|>accepted connection from <|IP|> in {} ms<|EOE|>",
            i % 13
        ));
    }
    lines
}

fn learned() -> Vocab {
    let c = curriculum();
    learn(c.iter().map(|s| s.as_str()), &VocabConfig::LEARNED).unwrap()
}

#[test]
fn any_text_round_trips() {
    let v = learned();
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let alphabet: Vec<char> = "ab =<|>_-.0123456789AitherMindcpué€\u{1F600}\t"
        .chars()
        .collect();
    for b in [Vocab::bytes(), Arc::new(v)] {
        for n in 0..300 {
            let s: String = (0..n % 40)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let ids = b.encode(&s);
            assert_eq!(b.decode(&ids), s, "{s:?} -> {ids:?}");
            assert!(ids.iter().all(|&i| (i as usize) < b.len()));
        }
        for line in curriculum() {
            assert_eq!(b.decode(&b.encode(&line)), line);
        }
    }
}

#[test]
fn registry_names_are_single_tokens_and_lines_are_short() {
    let v = learned();
    for name in ["AitherMind", "AitherRedis", "svc-3"] {
        let id = v
            .name(name)
            .unwrap_or_else(|| panic!("{name} is a name token"));
        let ids = v.encode(&format!("<|SVC|>{name}<|MSG|>call {name} now"));
        assert_eq!(
            ids.iter().filter(|&&i| i == id).count(),
            2,
            "{name}: {ids:?}"
        );
        // Not inside another word.
        assert!(!v.encode(&format!("x{name}y")).contains(&id));
    }
    // Metric names and values are few tokens.
    let c = curriculum();
    let pulse = c.iter().find(|l| l.contains("<|PULSE|>")).unwrap();
    let n = v.encode(pulse).len();
    let bytes = Vocab::bytes().encode(pulse).len();
    // Two metrics: 6 markers, the name, 2 metric names, 2 signs and 3 digits.
    assert!(n <= 14, "{pulse}: {n} tokens ({bytes} as bytes)");
    // A name the vocabulary never saw still encodes.
    let new = "<|BOE|><|LOG|><|SVC|>AitherNew<|MSG|>hi<|EOE|>";
    assert_eq!(v.decode(&v.encode(new)), new);
}

#[test]
fn specials_keep_their_ids() {
    let v = learned();
    let t = tokenizer();
    for s in t.specials() {
        assert_eq!(v.encode(s), vec![t.special(s)]);
    }
    assert!(v.len() > FIRST_LEARNED as usize);
    assert_eq!(Vocab::bytes().len(), FIRST_LEARNED as usize);
    // Forged markers in text are bytes.
    assert!(!v
        .encode("<|NOPE|>")
        .iter()
        .any(|&i| Tokenizer::is_special(i)));
}

use crate::tokenizer::Tokenizer;

#[test]
fn merges_cut_words_as_the_tokenizers_crate_does() {
    use tokenizers::models::bpe::BPE;
    use tokenizers::Model;
    let v = learned();
    let (_, n_merges) = v.learned();
    assert!(n_merges > 20, "{n_merges} merges");
    let chars = |bytes: &[u8]| -> String {
        bytes
            .iter()
            .map(|&b| {
                if (0x21..=0x7E).contains(&b) {
                    b as char
                } else {
                    char::from_u32(0x100 + u32::from(b)).unwrap()
                }
            })
            .collect()
    };
    // The same merges as a tokenizers BPE model.
    let mut vocab: HashMap<String, u32> = HashMap::new();
    for b in 0..=255u8 {
        let n = vocab.len() as u32;
        vocab.entry(chars(&[b])).or_insert(n);
    }
    let mut merges = Vec::new();
    for &(a, b) in &v.learned.merges {
        let (a, b) = (chars(v.token(a)), chars(v.token(b)));
        let n = vocab.len() as u32;
        vocab.entry(format!("{a}{b}")).or_insert(n);
        merges.push((a, b));
    }
    let json = serde_json::json!({"type": "BPE", "vocab": vocab, "merges": merges});
    let bpe: BPE = serde_json::from_str(&json.to_string()).unwrap();
    let named = Vocab::build(v.config(), v.learned.names.clone(), Vec::new()).unwrap();
    let mut checked = 0;
    for line in curriculum() {
        for w in super::learn::words_for_test(&named, &line) {
            let theirs: Vec<String> = bpe
                .tokenize(&w)
                .unwrap()
                .into_iter()
                .map(|t| t.value)
                .collect();
            let bytes: Vec<u8> = w
                .chars()
                .map(|c| super::learn::char_byte_for_test(c).unwrap())
                .collect();
            let ours: Vec<String> = v
                .merge(&bytes)
                .iter()
                .map(|&id| chars(v.token(id)))
                .collect();
            assert_eq!(ours, theirs, "{w}");
            checked += 1;
        }
    }
    assert!(checked > 1000);
}

#[test]
fn serialises_with_its_learned_part_and_hash() {
    let v = learned();
    let bytes = rmp_serde::to_vec_named(&v).unwrap();
    let back: Vocab = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, v);
    assert_eq!(back.hash(), v.hash());
    assert_ne!(v.hash(), Vocab::bytes().hash());
    let line = &curriculum()[10];
    assert_eq!(back.encode(line), v.encode(line));
    // A merge of a token not made yet is refused, with the reason.
    let bad = Learned {
        scheme: SCHEME.into(),
        config: None,
        names: vec![],
        merges: vec![(FIRST_LEARNED + 5, 1)],
    };
    assert!(Vocab::try_from(bad)
        .unwrap_err()
        .contains("not made before"));
    let bad = Learned {
        scheme: "other".into(),
        config: None,
        names: vec!["a".into()],
        merges: vec![],
    };
    assert!(Vocab::try_from(bad).unwrap_err().contains("scheme"));
}

#[test]
fn learning_is_deterministic() {
    let c = curriculum();
    let a = learn(c.iter().map(|s| s.as_str()), &VocabConfig::LEARNED).unwrap();
    for _ in 0..5 {
        let b = learn(c.iter().map(|s| s.as_str()), &VocabConfig::LEARNED).unwrap();
        assert_eq!(a.hash(), b.hash());
    }
    let none = learn(
        c.iter().map(|s| s.as_str()),
        &VocabConfig {
            merges: 0,
            names: 0,
        },
    )
    .unwrap();
    assert_eq!(none.hash(), Vocab::bytes().hash());
}
