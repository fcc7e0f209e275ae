//! Which of an event's tokens say something: its content, as opposed to
//! the name of the source that speaks it (which source speaks is the key's
//! identity, not what it says, and the model predicts it from the context).

use crate::tokenizer::{tokenizer, Tokenizer};

/// Token-loss positions (indices into
/// [`crate::model::EventLoss::token_losses`]) of an event's content: every
/// predicted token except the source name's bytes (the tokens between
/// `<|SVC|>` and the next special token) and a pulse's carried flux event
/// (`<|EVENT|>` and its name, [`crate::curriculum::Said`]).
pub fn content_positions(tokens: &[u32]) -> Vec<usize> {
    let tok = tokenizer();
    let name = field_after(tokens, tok.special("<|SVC|>"));
    // A pulse's carried flux event (rendering scheme 3): context, scored
    // when the flux event itself came; its marker too, since whether a
    // pulse carries one says only that its source spoke lately.
    let carried = if tokens.contains(&tok.special("<|PULSE|>")) {
        field_after(tokens, tok.special("<|EVENT|>")).map(|(a, b)| (a - 1, b))
    } else {
        None
    };
    let outside = |i: usize| {
        [name, carried]
            .iter()
            .flatten()
            .all(|(a, b)| !(*a..*b).contains(&i))
    };
    // token_losses[j] is the loss of tokens[j + 1].
    (0..tokens.len().saturating_sub(1))
        .filter(|&j| outside(j + 1))
        .collect()
}

/// Each predicted token's loss where it is content
/// ([`content_positions`]), 0 elsewhere; as long as `token_losses`.
pub fn content_losses(tokens: &[u32], token_losses: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; token_losses.len()];
    for j in content_positions(tokens) {
        if let Some(l) = token_losses.get(j) {
            out[j] = *l;
        }
    }
    out
}

/// The tokens after the first `marker`, up to the next special token
/// (half-open, indices into `tokens`).
fn field_after(tokens: &[u32], marker: u32) -> Option<(usize, usize)> {
    let i = tokens.iter().position(|&t| t == marker)?;
    let end = tokens[i + 1..]
        .iter()
        .position(|&t| Tokenizer::is_special(t))
        .map_or(tokens.len(), |j| i + 1 + j);
    Some((i + 1, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_name_is_not_content() {
        let tok = crate::vocab::Vocab::bytes();
        let t = tok.encode("<|BOE|><|LOG|><|SVC|>ab<|MSG|>hi<|EOE|>");
        // Tokens: BOE LOG SVC a b MSG h i EOE; positions predict tokens 1..9.
        assert_eq!(t.len(), 9);
        // "a" and "b" are tokens 3 and 4, predicted at positions 2 and 3.
        assert_eq!(content_positions(&t), vec![0, 1, 4, 5, 6, 7]);
        // Without <|SVC|> every position is content; no tokens, none.
        let u = tok.encode("<|BOE|><|LOG|>x<|EOE|>");
        assert_eq!(content_positions(&u), vec![0, 1, 2]);
        assert!(content_positions(&[]).is_empty());
        // A name that runs to the end of the event.
        let v = tok.encode("<|SVC|>ab");
        assert!(content_positions(&v).is_empty());
        // A learned name token is one content-free position too.
        let w = [
            tok.encode("<|BOE|><|LOG|><|SVC|>"),
            vec![crate::vocab::FIRST_LEARNED],
            tok.encode("<|MSG|>"),
        ]
        .concat();
        assert_eq!(content_positions(&w), vec![0, 1, 3]);
        // A pulse's carried event, marker and name, is context too.
        let p = tok.encode("<|BOE|><|PULSE|><|SVC|>a<|EVENT|>up<|METRIC|>c=0<|EOE|>");
        // Tokens: BOE PULSE SVC a EVENT u p METRIC c = 0 EOE.
        assert_eq!(p.len(), 12);
        assert_eq!(content_positions(&p), vec![0, 1, 6, 7, 8, 9, 10]);
        // A flux event's own name is content.
        let f = tok.encode("<|BOE|><|FLUX|><|SVC|>a<|EVENT|>up<|EOE|>");
        assert_eq!(content_positions(&f), vec![0, 1, 3, 4, 5, 6]);
    }
}
