//! Learning a vocabulary from the curriculum at cold start: names first,
//! then byte-pair merges.
//!
//! Names are the values of the structural slots (`<|SVC|>AitherMind`,
//! `<|METRIC|>cpu=`, `<|STATE|>degraded`, `<|SRC|>`, ...): the registry's
//! documents' always, the events' when they repeat, most frequent first.
//! Each becomes one token, so the model copies a name from its context
//! instead of spelling it byte by byte.
//!
//! The merges are trained by the `tokenizers` crate's BPE trainer (Hugging
//! Face's, what GPT-2 style vocabularies are trained with) over the same
//! pre-tokens [`super::Vocab::encode`] cuts. Encoding is ours
//! ([`super::Vocab`]): the scorer encodes every event, and a cached rank
//! merge over our id layout (bytes, specials, names, merges) avoids
//! building `tokenizers`' offsets and added-token machinery per line; a test
//! checks both cut text identically.

use super::{pre_tokens, segments, Vocab, FIRST_LEARNED};
use crate::tokenizer::tokenizer;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::Trainer;

/// How large a vocabulary to learn. Part of the freshness fingerprint: a
/// new setting is a new vocabulary, so a cold start.
///
/// Off (bytes only) by default: with [`VocabConfig::LEARNED`] a 500-step
/// model finds 22 of 30 simulated faults by incidents instead of 9, but
/// raises 72 false incidents on a fault-free day against none, nearly all
/// planned restarts its tail calibrates as one in 10^10 (docs/BENCHMARKS.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VocabConfig {
    /// Byte-pair merges; 0 with `names` 0 is the bytes-only vocabulary.
    pub merges: usize,
    /// Most name tokens (the registry's are always kept).
    pub names: usize,
}

impl VocabConfig {
    /// The learned vocabulary measured in docs/BENCHMARKS.md.
    pub const LEARNED: VocabConfig = VocabConfig {
        merges: 512,
        names: 512,
    };
}

/// Slots whose whole value is a name.
const NAME_SLOTS: [&str; 14] = [
    "<|SVC|>",
    "<|DEPENDS|>",
    "<|ROLE|>",
    "<|EVENT|>",
    "<|STATE|>",
    "<|LEVEL|>",
    "<|GRAPH|>",
    "<|SRC|>",
    "<|REL|>",
    "<|DST|>",
    "<|ACTOR|>",
    "<|ACTION|>",
    "<|TARGET|>",
    "<|OUTCOME|>",
];
/// Slots holding `name=value`: the name is before the `=`.
const KEY_SLOTS: [&str; 2] = ["<|METRIC|>", "<|ATTR|>"];
/// Longest name, in bytes: a longer slot value is text, not a name.
const MAX_NAME: usize = 48;
/// Longest merged token, in characters.
const MAX_MERGED: usize = 16;

/// The names of one rendered line, in order.
fn slot_names<'t>(text: &'t str, mut on: impl FnMut(&'t str)) {
    let tok = tokenizer();
    let names: Vec<u32> = NAME_SLOTS.iter().map(|s| tok.special(s)).collect();
    let keys: Vec<u32> = KEY_SLOTS.iter().map(|s| tok.special(s)).collect();
    let mut prev = None;
    segments(text, |seg| match seg {
        Ok(id) => prev = Some(id),
        Err(plain) => {
            let name = match prev {
                Some(p) if names.contains(&p) => Some(plain),
                Some(p) if keys.contains(&p) => plain.split_once('=').map(|(k, _)| k),
                _ => None,
            };
            if let Some(n) = name.filter(|n| !n.is_empty() && n.len() <= MAX_NAME) {
                on(n)
            }
            prev = None;
        }
    });
}

/// Learns a vocabulary from rendered lines (the registry's documents among
/// them). Deterministic for the same lines in the same order.
pub fn learn<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    cfg: &VocabConfig,
) -> anyhow::Result<Vocab> {
    let lines: Vec<&str> = lines.into_iter().collect();
    if cfg.merges == 0 && cfg.names == 0 {
        return Ok(Vocab::bytes().as_ref().clone());
    }
    let registry = [
        tokenizer().special("<|AXIOMATIC|>"),
        tokenizer().special("<|TOPOLOGY|>"),
    ];
    let mut always: Vec<String> = Vec::new();
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        let of_registry = {
            let mut r = false;
            segments(line, |s| r |= matches!(s, Ok(id) if registry.contains(&id)));
            r
        };
        slot_names(line, |n| {
            if of_registry {
                if !always.iter().any(|a| a == n) {
                    always.push(n.to_string());
                }
            } else {
                counts.entry(n).or_insert((0, i)).0 += 1;
            }
        });
    }
    let mut frequent: Vec<(&str, (usize, usize))> = counts
        .into_iter()
        .filter(|(n, (c, _))| *c >= 2 && !always.iter().any(|a| a == n))
        .collect();
    // Most frequent first, then first seen, then by name: the order is
    // stable, whatever the hash map's.
    frequent.sort_by_key(|(n, (c, first))| (std::cmp::Reverse(*c), *first, *n));
    let room = cfg.names.saturating_sub(always.len());
    let mut names = always;
    names.extend(frequent.into_iter().take(room).map(|(n, _)| n.to_string()));
    if cfg.names == 0 {
        names.clear();
    }
    let named = Vocab::build(*cfg, names.clone(), Vec::new())?;
    let merges = if cfg.merges == 0 {
        Vec::new()
    } else {
        learn_merges(&named, &lines, cfg.merges, names.len())?
    };
    Vocab::build(*cfg, names, merges)
}

/// Bytes as the characters the trainer sees: printable ASCII as itself,
/// every other byte as a character of its own above U+00FF.
fn byte_char(b: u8) -> char {
    if (0x21..=0x7E).contains(&b) {
        b as char
    } else {
        char::from_u32(0x100 + u32::from(b)).expect("below the surrogates")
    }
}

fn char_byte(c: char) -> Option<u8> {
    match c as u32 {
        x @ 0x21..=0x7E => Some(x as u8),
        x @ 0x100..=0x1FF => Some((x - 0x100) as u8),
        _ => None,
    }
}

/// The pre-tokens `named` leaves to merges in a line, as trainer words.
fn words(named: &Vocab, line: &str) -> Vec<String> {
    let mut out = Vec::new();
    segments(line, |seg| {
        if let Err(plain) = seg {
            named.leftover(plain, |rest| {
                for w in pre_tokens(rest) {
                    out.push(w.bytes().map(byte_char).collect());
                }
            });
        }
    });
    out
}

fn learn_merges(
    named: &Vocab,
    lines: &[&str],
    n: usize,
    n_names: usize,
) -> anyhow::Result<Vec<(u32, u32)>> {
    let mut trainer = BpeTrainer::builder()
        .vocab_size(256 + n)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet((0..=255u8).map(byte_char).collect())
        .max_token_length(Some(MAX_MERGED))
        .build();
    trainer
        .feed(lines.iter(), |line| Ok(words(named, line)))
        .map_err(|e| anyhow::anyhow!("vocabulary: reading the curriculum: {e}"))?;
    let mut model = BPE::default();
    trainer
        .train(&mut model)
        .map_err(|e| anyhow::anyhow!("vocabulary: learning merges: {e}"))?;
    let json = serde_json::to_value(&model)?;
    let pairs: Vec<(String, String)> = serde_json::from_value(json["merges"].clone())?;
    let bytes = |s: &str| -> anyhow::Result<Vec<u8>> {
        s.chars()
            .map(|c| {
                char_byte(c)
                    .ok_or_else(|| anyhow::anyhow!("vocabulary: unexpected character {c:?}"))
            })
            .collect()
    };
    // Ids as Vocab assigns them: each new merged string the next one.
    let mut ids: HashMap<Vec<u8>, u32> = (0..=255u8).map(|b| (vec![b], u32::from(b))).collect();
    let mut next = FIRST_LEARNED + n_names as u32;
    let mut merges = Vec::with_capacity(pairs.len());
    for (a, b) in pairs.iter().take(n) {
        let (a, b) = (bytes(a)?, bytes(b)?);
        let (Some(&ia), Some(&ib)) = (ids.get(&a), ids.get(&b)) else {
            anyhow::bail!("vocabulary: a merge of tokens never made");
        };
        merges.push((ia, ib));
        ids.entry([a, b].concat()).or_insert_with(|| {
            next += 1;
            next - 1
        });
    }
    Ok(merges)
}

#[cfg(test)]
pub(super) fn words_for_test(named: &Vocab, line: &str) -> Vec<String> {
    words(named, line)
}

#[cfg(test)]
pub(super) fn char_byte_for_test(c: char) -> Option<u8> {
    char_byte(c)
}
