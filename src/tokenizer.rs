//! The special tokens: proto/tokens.txt, ids from 256 in file order, the
//! same in every vocabulary (bytes come before them, a vocabulary's learned
//! tokens after). The list's SHA-256 goes into every checkpoint, so
//! a model is never read under another list.
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

    /// Id of `<|NAME|>` if it is a special token.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// Whether an id is a special token's (rather than bytes or a learned token).
    pub fn is_special(id: u32) -> bool {
        (256..256 + N_SPECIAL as u32).contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specials_have_fixed_ids() {
        let t = tokenizer();
        assert_eq!(t.specials().len(), N_SPECIAL);
        for (i, s) in t.specials().iter().enumerate() {
            assert_eq!(t.id(s), Some(256 + i as u32), "{s}");
            assert!(Tokenizer::is_special(256 + i as u32));
        }
        assert_eq!(t.id("<|NOPE|>"), None);
        assert!(!Tokenizer::is_special(255) && !Tokenizer::is_special(256 + N_SPECIAL as u32));
    }
}
