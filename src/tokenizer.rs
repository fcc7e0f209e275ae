//! Bytes plus special tokens. Ids 0..=255 are raw bytes; the special tokens of
//! proto/tokens.txt follow from 256 in file order. The list's SHA-256 goes into
//! every checkpoint, so a model is never read under another vocabulary.
//!
//! Rendered text marks special tokens as `<|NAME|>`; the curriculum escapes
//! that sequence in user text, so only the renderer can produce one.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::OnceLock;

/// proto/tokens.txt, one special token a line, in id order.
pub const TOKENS_TXT: &str = include_str!("../proto/tokens.txt");

const fn count_lines(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n = 0;
    let mut in_line = false;
    while i < b.len() {
        if b[i] == b'\n' {
            if in_line {
                n += 1;
            }
            in_line = false;
        } else {
            in_line = true;
        }
        i += 1;
    }
    if in_line {
        n += 1;
    }
    n
}

/// Number of special tokens.
pub const N_SPECIAL: usize = count_lines(TOKENS_TXT);
/// 256 bytes plus the special tokens.
pub const VOCAB_SIZE: usize = 256 + N_SPECIAL;

pub struct Tokenizer {
    specials: Vec<&'static str>,
    by_name: HashMap<&'static str, u32>,
}

/// The tokenizer of proto/tokens.txt.
pub fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let specials: Vec<&'static str> = TOKENS_TXT.lines().filter(|l| !l.is_empty()).collect();
        let by_name = specials
            .iter()
            .enumerate()
            .map(|(i, s)| (*s, 256 + i as u32))
            .collect();
        Tokenizer { specials, by_name }
    })
}

/// SHA-256 (hex) of the special-token list, in id order.
pub fn token_list_hash() -> String {
    let mut h = Sha256::new();
    for t in &tokenizer().specials {
        h.update(t.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

impl Tokenizer {
    /// Id of a special token such as `<|FLUX|>`. Panics on a name that is not in
    /// proto/tokens.txt: that is a programming error, caught by tests.
    pub fn special(&self, name: &str) -> u32 {
        match self.by_name.get(name) {
            Some(id) => *id,
            None => panic!("{name} is not in proto/tokens.txt"),
        }
    }

    pub fn specials(&self) -> &[&'static str] {
        &self.specials
    }

    /// Encodes rendered text: `<|NAME|>` of a known special token becomes its
    /// id, everything else its UTF-8 bytes.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let b = text.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'<' && b.get(i + 1) == Some(&b'|') {
                if let Some(end) = text[i + 2..].find("|>") {
                    let cand = &text[i..i + 2 + end + 2];
                    if let Some(id) = self.by_name.get(cand) {
                        out.push(*id);
                        i += cand.len();
                        continue;
                    }
                }
            }
            out.push(b[i] as u32);
            i += 1;
        }
        out
    }

    /// Decodes ids back to text (lossy on broken UTF-8, which only a cut span can make).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len());
        for &id in ids {
            if id < 256 {
                bytes.push(id as u8);
            } else if let Some(s) = self.specials.get(id as usize - 256) {
                bytes.extend_from_slice(s.as_bytes());
            } else {
                bytes.extend_from_slice(b"<|?|>");
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_special_round_trips() {
        let t = tokenizer();
        assert_eq!(t.specials().len(), N_SPECIAL);
        for (i, s) in t.specials().iter().enumerate() {
            assert_eq!(t.encode(s), vec![256 + i as u32], "{s}");
            assert_eq!(t.decode(&[256 + i as u32]), *s);
        }
    }

    #[test]
    fn text_round_trips() {
        let t = tokenizer();
        let s = "<|FLUX|><|SVC|>AitherMind é <|NOPE|> <| x |>";
        let ids = t.encode(s);
        assert_eq!(t.decode(&ids), s);
        assert_eq!(ids[0], t.special("<|FLUX|>"));
        assert!(ids.iter().filter(|&&i| i >= 256).count() == 2);
    }
}
