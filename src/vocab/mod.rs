//! The model's vocabulary: what a rendered line becomes as token ids.
//!
//! Ids `0..256` are raw bytes (so any input encodes), `256..FIRST_LEARNED`
//! the special tokens of proto/tokens.txt ([`crate::tokenizer`]), then the
//! learned part: whole names (every service, metric, state, graph and
//! relation name the curriculum uses in a structural slot, the registry's
//! always), then byte-pair merges learned from the curriculum
//! ([`learn`]). The bytes-only vocabulary ([`Vocab::bytes`]) has no learned
//! part: it is what older checkpoints and the engine benchmark use.
//!
//! A vocabulary is learned once per cold start and travels in the
//! checkpoint with the weights it was trained with; every scorer encodes
//! with its model's vocabulary. A service name that appeared after the cold
//! start still encodes, through merges and bytes.
//!
//! Encoding a plain segment (text between special tokens): names are found
//! first (leftmost-longest, whole words only), then what is left is split
//! into pre-tokens ([`pre_tokens`]) and each pre-token's bytes are merged by
//! rank, as GPT-2's byte-level BPE does. Training splits text the same way.

pub mod learn;

use crate::tokenizer::{tokenizer, N_SPECIAL};
use aho_corasick::{AhoCorasick, MatchKind};
use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// First id after the bytes and the special tokens.
pub const FIRST_LEARNED: u32 = 256 + N_SPECIAL as u32;

/// How text is cut before merging. Part of every vocabulary's identity: a
/// vocabulary learned under another scheme is refused.
pub const SCHEME: &str = "proprio-bpe-2";

/// Pre-tokens: a value's `=` with its sign and bucket letter (`=b`, `=-b`,
/// `=z`), words with their leading space, single digits, punctuation runs,
/// whitespace. Digits are never merged (as in LLaMA's tokenizer): a merged
/// `b9` or `404` is an id the model must learn on its own, a digit is shared
/// by every number, so a value it has rarely seen still reads as its digits
/// and a nearby bucket as a nearby string.
const PRE_TOKEN: &str = r"=-?[a-z]?| ?[\p{L}_]+|\p{N}| ?[^\s\p{L}\p{N}_=]+|\s+";

/// Words cached per vocabulary before the cache is cleared (telemetry
/// repeats its words, so the cache holds nearly all of them).
const CACHE_WORDS: usize = 1 << 16;

/// The serialised form: the learned part alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Learned {
    scheme: String,
    /// The settings it was learned under; none for bytes only.
    #[serde(default)]
    config: Option<learn::VocabConfig>,
    names: Vec<String>,
    /// (left, right) ids, in rank order. Each distinct merged string gets
    /// the next id after the names, in order of its first merge.
    merges: Vec<(u32, u32)>,
}

/// A vocabulary; cheap to share ([`Arc`]).
#[derive(Serialize, Deserialize)]
#[serde(try_from = "Learned", into = "Learned")]
pub struct Vocab {
    learned: Learned,
    /// Every id's bytes (specials as their `<|NAME|>` text).
    token_bytes: Vec<Vec<u8>>,
    /// (left, right) -> (rank, merged id).
    rank: HashMap<(u32, u32), (u32, u32)>,
    names: Option<(AhoCorasick, Vec<u32>)>,
    cache: Mutex<HashMap<Vec<u8>, Vec<u32>>>,
}

impl std::fmt::Debug for Vocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Vocab({} tokens: {} names, {} merges)",
            self.len(),
            self.learned.names.len(),
            self.learned.merges.len()
        )
    }
}

impl Clone for Vocab {
    fn clone(&self) -> Vocab {
        Vocab::try_from(self.learned.clone()).expect("a built vocabulary rebuilds")
    }
}

impl PartialEq for Vocab {
    fn eq(&self, o: &Vocab) -> bool {
        self.learned == o.learned
    }
}

impl Default for Vocab {
    fn default() -> Vocab {
        Vocab::bytes().as_ref().clone()
    }
}

impl From<Vocab> for Learned {
    fn from(v: Vocab) -> Learned {
        v.learned
    }
}

impl TryFrom<Learned> for Vocab {
    type Error = String;

    /// Checks what a checkpoint carries: the scheme, names that are unique
    /// and not empty, merges of ids that exist before them.
    fn try_from(l: Learned) -> Result<Vocab, String> {
        if l.scheme != SCHEME && !(l.names.is_empty() && l.merges.is_empty()) {
            return Err(format!(
                "vocabulary scheme {:?} is not this build's {SCHEME:?}",
                l.scheme
            ));
        }
        let tok = tokenizer();
        let mut token_bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        token_bytes.extend(tok.specials().iter().map(|s| s.as_bytes().to_vec()));
        let mut name_ids = Vec::with_capacity(l.names.len());
        let mut seen = std::collections::HashSet::new();
        for n in &l.names {
            if n.is_empty() || n.contains("<|") || !seen.insert(n.as_str()) {
                return Err(format!(
                    "vocabulary name {n:?} is empty, repeated or holds <|"
                ));
            }
            name_ids.push(token_bytes.len() as u32);
            token_bytes.push(n.as_bytes().to_vec());
        }
        let mut rank = HashMap::with_capacity(l.merges.len());
        let mut merged: HashMap<Vec<u8>, u32> = HashMap::with_capacity(l.merges.len());
        let first_merge = FIRST_LEARNED + l.names.len() as u32;
        for (r, &(a, b)) in l.merges.iter().enumerate() {
            let next = token_bytes.len() as u32;
            let ok = |x: u32| x < 256 || (x >= first_merge && x < next);
            if !ok(a) || !ok(b) {
                return Err(format!(
                    "vocabulary merge {r} ({a}, {b}) names a token not made before it"
                ));
            }
            let t = [token_bytes[a as usize].as_slice(), &token_bytes[b as usize]].concat();
            let id = *merged.entry(t.clone()).or_insert(next);
            if id == next {
                token_bytes.push(t);
            }
            if rank.insert((a, b), (r as u32, id)).is_some() {
                return Err(format!("vocabulary merge {r} ({a}, {b}) is repeated"));
            }
        }
        let names = if l.names.is_empty() {
            None
        } else {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&l.names)
                .map_err(|e| format!("vocabulary names: {e}"))?;
            Some((ac, name_ids))
        };
        Ok(Vocab {
            learned: l,
            token_bytes,
            rank,
            names,
            cache: Mutex::new(HashMap::new()),
        })
    }
}

fn pre_token_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(PRE_TOKEN).expect("the pre-token pattern compiles"))
}

/// The pre-tokens of plain text, in order; they concatenate back to it.
pub fn pre_tokens(text: &str) -> impl Iterator<Item = &str> {
    pre_token_re().find_iter(text).map(|m| m.as_str())
}

/// Whether a name found at `s..e` of `text` is a whole word there.
fn whole_word(text: &[u8], s: usize, e: usize) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    (s == 0 || !word(text[s - 1])) && (e == text.len() || !word(text[e]))
}

/// Splits rendered text into special-token ids and plain segments.
pub(crate) fn segments<'t>(text: &'t str, mut on: impl FnMut(Result<u32, &'t str>)) {
    let tok = tokenizer();
    let mut plain = 0;
    let mut i = 0;
    let b = text.as_bytes();
    while i < b.len() {
        if b[i] == b'<' && b.get(i + 1) == Some(&b'|') {
            if let Some(end) = text[i + 2..].find("|>") {
                let cand = &text[i..i + 2 + end + 2];
                if let Some(id) = tok.id(cand) {
                    if plain < i {
                        on(Err(&text[plain..i]));
                    }
                    on(Ok(id));
                    i += cand.len();
                    plain = i;
                    continue;
                }
            }
        }
        i += 1;
    }
    if plain < b.len() {
        on(Err(&text[plain..]));
    }
}

impl Vocab {
    /// The bytes-only vocabulary (bytes and special tokens).
    pub fn bytes() -> Arc<Vocab> {
        static V: OnceLock<Arc<Vocab>> = OnceLock::new();
        V.get_or_init(|| Arc::new(Vocab::try_from(Learned::default()).expect("bytes only")))
            .clone()
    }

    fn build(
        config: learn::VocabConfig,
        names: Vec<String>,
        merges: Vec<(u32, u32)>,
    ) -> anyhow::Result<Vocab> {
        Vocab::try_from(Learned {
            scheme: SCHEME.into(),
            config: Some(config),
            names,
            merges,
        })
        .map_err(|e| anyhow::anyhow!(e))
    }

    /// Whether two shared vocabularies are the same, cheaply when they are
    /// one allocation (a model's, handed to its scorer): checked per batch.
    pub fn same(a: &Arc<Vocab>, b: &Arc<Vocab>) -> bool {
        Arc::ptr_eq(a, b) || a == b
    }

    pub fn len(&self) -> usize {
        self.token_bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The settings it was learned under (bytes only: no names, no merges).
    pub fn config(&self) -> learn::VocabConfig {
        self.learned.config.unwrap_or(learn::VocabConfig {
            merges: 0,
            names: 0,
        })
    }

    /// Learned names and merges.
    pub fn learned(&self) -> (usize, usize) {
        (self.learned.names.len(), self.learned.merges.len())
    }

    /// The id of a name token, if the vocabulary has it.
    pub fn name(&self, name: &str) -> Option<u32> {
        let i = self.learned.names.iter().position(|n| n == name)?;
        Some(FIRST_LEARNED + i as u32)
    }

    /// SHA-256 (hex) of the scheme, the special tokens and the learned part:
    /// names the vocabulary in the model notice and the metrics.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        if !self.learned.names.is_empty() || !self.learned.merges.is_empty() {
            h.update(SCHEME.as_bytes());
        }
        h.update(crate::tokenizer::token_list_hash().as_bytes());
        for n in &self.learned.names {
            h.update((n.len() as u64).to_le_bytes());
            h.update(n.as_bytes());
        }
        for (a, b) in &self.learned.merges {
            h.update(a.to_le_bytes());
            h.update(b.to_le_bytes());
        }
        hex::encode(h.finalize())
    }

    /// Encodes rendered text: `<|NAME|>` of a known special token becomes its
    /// id, names their id, the rest merged bytes.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 4);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > CACHE_WORDS {
            cache.clear();
        }
        segments(text, |seg| match seg {
            Ok(id) => out.push(id),
            Err(plain) => self.encode_plain(plain, &mut cache, &mut out),
        });
        out
    }

    fn encode_plain(&self, text: &str, cache: &mut HashMap<Vec<u8>, Vec<u32>>, out: &mut Vec<u32>) {
        self.split_names(text, |piece| match piece {
            Ok(id) => out.push(id),
            Err(rest) => self.encode_words(rest, cache, out),
        });
    }

    /// Plain text as name tokens (whole words only) and the text between them.
    fn split_names<'t>(&self, text: &'t str, mut on: impl FnMut(Result<u32, &'t str>)) {
        let mut rest = 0;
        if let Some((ac, ids)) = &self.names {
            for m in ac.find_iter(text) {
                if !whole_word(text.as_bytes(), m.start(), m.end()) {
                    continue;
                }
                if rest < m.start() {
                    on(Err(&text[rest..m.start()]));
                }
                on(Ok(ids[m.pattern().as_usize()]));
                rest = m.end();
            }
        }
        if rest < text.len() {
            on(Err(&text[rest..]));
        }
    }

    /// The parts of plain text no name covers (what merges are learnt from).
    pub(crate) fn leftover<'t>(&self, text: &'t str, mut on: impl FnMut(&'t str)) {
        self.split_names(text, |p| {
            if let Err(rest) = p {
                on(rest)
            }
        });
    }

    fn encode_words(&self, text: &str, cache: &mut HashMap<Vec<u8>, Vec<u32>>, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        if self.rank.is_empty() {
            out.extend(text.bytes().map(u32::from));
            return;
        }
        for w in pre_tokens(text) {
            if let Some(ids) = cache.get(w.as_bytes()) {
                out.extend_from_slice(ids);
                continue;
            }
            let ids = self.merge(w.as_bytes());
            out.extend_from_slice(&ids);
            cache.insert(w.as_bytes().to_vec(), ids);
        }
    }

    /// Byte-pair merges by rank: the lowest-ranked adjacent pair first,
    /// until none is in the vocabulary.
    fn merge(&self, word: &[u8]) -> Vec<u32> {
        let mut ids: Vec<u32> = word.iter().map(|&b| u32::from(b)).collect();
        while ids.len() > 1 {
            let best = ids
                .windows(2)
                .filter_map(|p| self.rank.get(&(p[0], p[1])))
                .min();
            let Some(&(r, id)) = best else { break };
            // Merge every occurrence of that pair, left to right.
            let (a, b) = self.learned.merges[r as usize];
            let mut j = 0;
            let mut next = Vec::with_capacity(ids.len());
            while j < ids.len() {
                if j + 1 < ids.len() && ids[j] == a && ids[j + 1] == b {
                    next.push(id);
                    j += 2;
                } else {
                    next.push(ids[j]);
                    j += 1;
                }
            }
            ids = next;
        }
        ids
    }

    /// The bytes of one token (a special token's `<|NAME|>`); empty for an
    /// id outside the vocabulary.
    pub fn token(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map_or(&[], |t| t.as_slice())
    }

    /// Decodes ids back to text (lossy on broken UTF-8, which only a cut
    /// span can make); ids outside the vocabulary show as `<|?|>`.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 2);
        for &id in ids {
            match self.token_bytes.get(id as usize) {
                Some(t) => bytes.extend_from_slice(t),
                None => bytes.extend_from_slice(b"<|?|>"),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests;
