//! Which part of an event surprised the model, in two forms:
//!
//! - [`field_span`]: the alert's evidence, what a person reads. The field of
//!   the rendered line around the most surprising token (`exit_code=137`,
//!   `<|STATE|>crashed`, `OOMKilled process <|NUM|>`), whole words only, so
//!   nobody is shown `issionsW`. Live alerts, `proprio score` and eval get it
//!   from [`crate::scorer::score_against`].
//! - [`surprising_span`]: the fixed-width window with the highest mean loss,
//!   a score statistic (eval's `span`, `cspan` and `xspan` model scores).

use crate::tokenizer::{tokenizer, Tokenizer};
use crate::vocab::Vocab;

/// The contiguous span of `width` entries of `token_losses` (fewer if there
/// are fewer) with the highest mean: `(start, end, mean)`, end exclusive.
/// Indices are into `token_losses`, so the event's tokens are
/// `event[start + 1..end + 1]`. An empty slice gives `(0, 0, 0.0)`.
pub fn surprising_span(token_losses: &[f32], width: usize) -> (usize, usize, f32) {
    let n = token_losses.len();
    if n == 0 {
        return (0, 0, 0.0);
    }
    let w = width.clamp(1, n);
    let mut sum: f64 = token_losses[..w].iter().map(|&l| l as f64).sum();
    let (mut best, mut best_sum) = (0, sum);
    for s in 1..=n - w {
        sum += token_losses[s + w - 1] as f64 - token_losses[s - 1] as f64;
        if sum > best_sum {
            (best, best_sum) = (s, sum);
        }
    }
    (best, best + w, (best_sum / w as f64) as f32)
}

/// Longest readable span, in characters of its content (the field marker
/// not counted). Longer fields are cut to whole words around the peak.
pub const SPAN_MAX_CHARS: usize = 40;

/// Special tokens the renderer's masks put inside text (`<|IP|>`, ...):
/// part of a field's content, not a boundary between fields.
const PLACEHOLDERS: [&str; 6] = [
    "<|ID|>", "<|HEX|>", "<|IP|>", "<|UUID|>", "<|NUM|>", "<|PATH|>",
];

/// Markers whose content is `key=value` or free text, which speaks for
/// itself: the span leaves them out. Other markers (`<|STATE|>`,
/// `<|EVENT|>`, `<|LEVEL|>`, ...) name their value, so the span keeps them.
const SELF_NAMED: [&str; 3] = ["<|ATTR|>", "<|METRIC|>", "<|MSG|>"];

fn is_boundary(id: u32) -> bool {
    Tokenizer::is_special(id) && {
        let name = tokenizer().specials()[(id - 256) as usize];
        !PLACEHOLDERS.contains(&name)
    }
}

/// The most surprising field of an event: `(start, end, mean)`.
///
/// `tokens` are the event's tokens (from its `<|BOE|>`); `token_losses[i]`
/// is the loss of `tokens[i + 1]` (the first token has none), as the model
/// gives them. `start..end` indexes `tokens` (half-open, what
/// [`crate::contract::alert::Span`] carries) and `mean` is the mean loss of
/// those tokens.
///
/// The peak is the token with the highest loss. Its field is the run of
/// content tokens (bytes and mask placeholders) between two structural
/// special tokens; a peak on a marker means the field that marker opens
/// (on `<|EOE|>`: the last field, the event ended where it should not). A
/// marker with no content (a trace phase such as `<|PLAN|>`) is its own
/// span. Content longer than `max_chars` is cut to whole words (split at
/// spaces) grown around the peak's word, the louder neighbour first; only
/// a single word longer than `max_chars` is cut inside, at a character
/// boundary.
pub fn field_span(
    vocab: &Vocab,
    tokens: &[u32],
    token_losses: &[f32],
    max_chars: usize,
) -> (usize, usize, f32) {
    let n = tokens.len().min(token_losses.len() + 1);
    let loss = |i: usize| -> f32 {
        match i.checked_sub(1).and_then(|j| token_losses.get(j)) {
            Some(l) if l.is_finite() => *l,
            _ => 0.0,
        }
    };
    // The peak token (the first of equals).
    let Some(peak) = (1..n).reduce(|b, i| if loss(i) > loss(b) { i } else { b }) else {
        return (0, 0, 0.0);
    };
    let tok = tokenizer();
    let eoe = tok.special("<|EOE|>");
    // The marker owning the peak: the last boundary at or before it
    // (`<|EOE|>`: the last marker before it).
    let mut from = if tokens[peak] == eoe {
        peak.saturating_sub(1)
    } else {
        peak
    };
    let marker = loop {
        if is_boundary(tokens[from]) || from == 0 {
            break from;
        }
        from -= 1;
    };
    // Text without a leading marker (a curriculum document) starts at 0.
    let cs = if is_boundary(tokens[marker]) {
        marker + 1
    } else {
        marker
    };
    let ce = (cs..n).find(|&i| is_boundary(tokens[i])).unwrap_or(n);
    if cs >= ce {
        // A marker alone.
        return (marker, marker + 1, mean(marker, marker + 1, &loss));
    }
    let keep_marker = cs > marker && {
        let name = vocab.token(tokens[marker]);
        !SELF_NAMED.iter().any(|m| m.as_bytes() == name)
    };
    let (s, e) = words_around(vocab, &tokens[cs..ce], peak.max(cs) - cs, max_chars, |i| {
        loss(cs + i)
    });
    let (s, e) = (cs + s, cs + e);
    let s = if keep_marker && s == cs { marker } else { s };
    (s, e, mean(s, e, &loss))
}

fn mean(s: usize, e: usize, loss: &impl Fn(usize) -> f32) -> f32 {
    let v: Vec<f32> = (s.max(1)..e).map(loss).collect();
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f32>() / v.len() as f32
    }
}

/// Display length of a content token (a placeholder shows as its name):
/// its bytes that start a character (a UTF-8 continuation byte is part of
/// the character before it, maybe in the token before).
fn width(vocab: &Vocab, id: u32) -> usize {
    vocab
        .token(id)
        .iter()
        .filter(|b| !(0x80..0xC0).contains(*b))
        .count()
}

/// Whether a token is whitespace only (between words), and whether it
/// opens a word with its leading space (a learned ` connection`).
fn space(vocab: &Vocab, id: u32) -> (bool, bool) {
    let t = vocab.token(id);
    let all = !t.is_empty() && t.iter().all(|b| b.is_ascii_whitespace());
    (
        all,
        !all && t.first().is_some_and(|b| b.is_ascii_whitespace()),
    )
}

/// Within one field's content, the whole words around `peak` that fit
/// `max_chars` (at least the peak's word, cut at character boundaries only
/// when it alone is longer). Indices into `content`, half-open.
fn words_around(
    vocab: &Vocab,
    content: &[u32],
    peak: usize,
    max_chars: usize,
    loss: impl Fn(usize) -> f32,
) -> (usize, usize) {
    let chars = |s: usize, e: usize| {
        content[s..e]
            .iter()
            .map(|&t| width(vocab, t))
            .sum::<usize>()
    };
    if chars(0, content.len()) <= max_chars {
        return (0, content.len());
    }
    // Words: maximal runs of non-space tokens, a space-led token opening one.
    let mut words: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < content.len() {
        if space(vocab, content[i]).0 {
            i += 1;
            continue;
        }
        let s = i;
        i += 1;
        while i < content.len() && space(vocab, content[i]) == (false, false) {
            i += 1;
        }
        words.push((s, i));
    }
    // The peak's word (a peak on a space: the word after it, else before).
    let Some(w) = words
        .iter()
        .position(|&(_, e)| peak < e)
        .or(words.len().checked_sub(1))
    else {
        return (0, 0);
    };
    let (mut s, mut e) = words[w];
    if chars(s, e) > max_chars {
        return cut_word(vocab, content, s, e, peak.clamp(s, e - 1), max_chars);
    }
    let (mut lo, mut hi) = (w, w);
    let word_mean = |(a, b): (usize, usize)| (a..b).map(&loss).sum::<f32>() / (b - a) as f32;
    loop {
        let left = lo.checked_sub(1).map(|k| (k, words[k].0, e));
        let right = (hi + 1 < words.len()).then(|| (hi + 1, s, words[hi + 1].1));
        let fits =
            |c: Option<(usize, usize, usize)>| c.filter(|&(_, a, b)| chars(a, b) <= max_chars);
        let pick = match (fits(left), fits(right)) {
            (Some(l), Some(r)) => {
                if word_mean(words[r.0]) > word_mean(words[l.0]) {
                    r
                } else {
                    l
                }
            }
            (Some(l), None) => l,
            (None, Some(r)) => r,
            (None, None) => break,
        };
        if pick.0 < lo {
            lo = pick.0;
        } else {
            hi = pick.0;
        }
        (s, e) = (pick.1, pick.2);
    }
    (s, e)
}

/// `max_chars` characters of the word `s..e` around `peak`, never starting
/// on a UTF-8 continuation byte nor ending before one.
fn cut_word(
    vocab: &Vocab,
    content: &[u32],
    s: usize,
    e: usize,
    peak: usize,
    max_chars: usize,
) -> (usize, usize) {
    let starts_char = |i: usize| {
        i >= e
            || !vocab
                .token(content[i])
                .first()
                .is_some_and(|b| (0x80..0xC0).contains(b))
    };
    let (mut a, mut b) = (peak, peak + 1);
    while !starts_char(b) {
        b += 1;
    }
    while !starts_char(a) && a > s {
        a -= 1;
    }
    let chars = |a: usize, b: usize| {
        content[a..b]
            .iter()
            .map(|&t| width(vocab, t))
            .sum::<usize>()
    };
    loop {
        let mut grew = false;
        if b < e {
            let mut nb = b + 1;
            while !starts_char(nb) {
                nb += 1;
            }
            if chars(a, nb) <= max_chars {
                b = nb;
                grew = true;
            }
        }
        if a > s {
            let mut na = a - 1;
            while !starts_char(na) && na > s {
                na -= 1;
            }
            if chars(na, b) <= max_chars {
                a = na;
                grew = true;
            }
        }
        if !grew {
            return (a, b);
        }
    }
}

/// A span's text as a person reads it: a leading field marker becomes the
/// field's name (`<|STATE|>crashed` → `state=crashed`, a lone `<|PLAN|>` →
/// `plan`), a mask placeholder loses its bars (`<|IP|>` → `<IP>`).
pub fn readable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    if let Some(tail) = rest.strip_prefix("<|") {
        if let Some(j) = tail.find("|>") {
            let tok = &rest[..j + 4];
            if !PLACEHOLDERS.contains(&tok) && !SELF_NAMED.contains(&tok) {
                out.push_str(&tail[..j].to_ascii_lowercase());
                rest = &rest[j + 4..];
                if !rest.is_empty() && !rest.starts_with("<|") {
                    out.push('=');
                }
            }
        }
    }
    // Every other special token keeps its name, without bars.
    out.push_str(&rest.replace("<|", "<").replace("|>", ">"));
    out
}

/// A span that is one scaled metric field (`<|METRIC|>mem_mb=+7`) said as a
/// person reads it: `mem_mb=7,912 (usual 480-520)`. Any other span is
/// returned as it is.
pub fn explain_reading(span: &str, readings: &[crate::curriculum::Reading]) -> String {
    let field = span.strip_prefix("<|METRIC|>").unwrap_or(span);
    let Some((name, _)) = field.split_once('=') else {
        return span.to_string();
    };
    match readings.iter().find(|r| r.metric == name) {
        Some(r) if r.flat_for > 0 => format!(
            "{name}={} (flat for {} samples)",
            human(r.value),
            r.flat_for
        ),
        Some(r) => {
            let range = |(lo, hi): (f64, f64)| {
                let lo = if r.value >= 0.0 { lo.max(0.0) } else { lo };
                format!("{}-{}", human(lo), human(hi))
            };
            match (r.lately, r.usual) {
                (Some(l), Some(u)) => format!(
                    "{name}={} (lately {}, usual {})",
                    human(r.value),
                    range(l),
                    range(u)
                ),
                (None, Some(u)) => format!("{name}={} (usual {})", human(r.value), range(u)),
                _ => format!("{name}={}", human(r.value)),
            }
        }
        None => span.to_string(),
    }
}

/// A number for people: thousands grouped above 1,000, three significant
/// digits below.
fn human(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    if a >= 1000.0 {
        let digits = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if x < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if a == 0.0 {
        "0".into()
    } else {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        let t = format!("{x:.decimals$}");
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curriculum::Renderer;
    use crate::event::{Body, Event, Scalar};
    use std::collections::BTreeMap;

    #[test]
    fn surprising_span_finds_the_peak() {
        let l = [0.1, 0.2, 0.1, 3.0, 4.0, 3.5, 0.2, 0.1];
        assert_eq!(surprising_span(&l, 3), (3, 6, 3.5));
        assert_eq!(surprising_span(&l, 1).0, 4);
        assert_eq!(surprising_span(&l, 100).1, 8);
        assert_eq!(surprising_span(&[], 5), (0, 0, 0.0));
        assert_eq!(surprising_span(&[2.0], 0), (0, 1, 2.0));
    }

    fn render(body: Body) -> String {
        let r = Renderer::default();
        r.render(
            &Event {
                ts: 1,
                source: "svc3".into(),
                key: "svc3".into(),
                body,
                label: None,
            },
            &mut r.scaler(),
        )
    }

    /// The span of `line` when the model is surprised most by the token at
    /// byte `at` (`peak` of `line`'s first `needle`), less by its neighbours.
    fn span_at(line: &str, needle: &str, skip: usize) -> (String, usize, usize) {
        let tok = Vocab::bytes();
        let ids = tok.encode(line);
        let at = line
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} in {line}"))
            + skip;
        let peak = tok.encode(&line[..at]).len();
        let losses: Vec<f32> = (1..ids.len())
            .map(|i| match i.abs_diff(peak) {
                0 => 6.0,
                1 => 3.0,
                _ => 0.2,
            })
            .collect();
        let (s, e, m) = field_span(&tok, &ids, &losses, SPAN_MAX_CHARS);
        assert!(m > 0.0 && s < e && e <= ids.len(), "{line}: {s}..{e} {m}");
        (tok.decode(&ids[s..e]), s, e)
    }

    #[test]
    fn a_scaled_metric_is_explained_by_its_value_and_usual_range() {
        let r = |metric: &str, value, usual| crate::curriculum::Reading {
            metric: metric.into(),
            value,
            usual,
            flat_for: 0,
            lately: None,
        };
        let readings = [
            r("mem_mb", 7912.4, Some((480.2, 520.0))),
            r("cpu", 0.4213, None),
            r("error_rate", 0.05, Some((-0.001, 0.004))),
        ];
        assert_eq!(
            explain_reading("<|METRIC|>mem_mb=+7", &readings),
            "mem_mb=7,912 (usual 480-520)"
        );
        assert_eq!(explain_reading("cpu=?", &readings), "cpu=0.421");
        // A range is never shown below zero for a value that is not.
        assert_eq!(
            explain_reading("error_rate=+7", &readings),
            "error_rate=0.05 (usual 0-0.004)"
        );
        // Off its last few values' line (scheme 4): where the line was too.
        let jumped = [crate::curriculum::Reading {
            lately: Some((40.5, 44.0)),
            ..r("cpu_pct", 71.0, Some((30.0, 66.0)))
        }];
        assert_eq!(
            explain_reading("cpu_pct=+1!+5", &jumped),
            "cpu_pct=71 (lately 40.5-44, usual 30-66)"
        );
        // Not a metric field: as it was.
        assert_eq!(explain_reading("state=crashed", &readings), "state=crashed");
        assert_eq!(explain_reading("latency=+3", &readings), "latency=+3");
        // A stuck series says so.
        let stuck = [crate::curriculum::Reading {
            flat_for: 9,
            ..r("queue_depth", 17.0, Some((3.0, 30.0)))
        }];
        assert_eq!(
            explain_reading("queue_depth=flat", &stuck),
            "queue_depth=17 (flat for 9 samples)"
        );
        assert_eq!(human(1_234_567.0), "1,234,567");
        assert_eq!(human(-2500.0), "-2,500");
        assert_eq!(human(42.0), "42");
    }

    #[test]
    fn field_span_is_the_field_around_the_peak() {
        let mut attrs = BTreeMap::new();
        attrs.insert("exit_code".to_string(), Scalar::Int(137));
        attrs.insert("reason".to_string(), Scalar::Str("OOMKilled".into()));
        let flux = render(Body::Flux {
            event: "container_died".into(),
            state: Some("crashed".into()),
            attrs,
        });
        assert_eq!(
            flux,
            "<|BOE|><|FLUX|><|SVC|>svc3<|EVENT|>container_died<|STATE|>crashed\
             <|ATTR|>exit_code=137<|ATTR|>reason=OOMKilled<|EOE|>"
        );
        assert_eq!(span_at(&flux, "rashed", 0).0, "<|STATE|>crashed");
        assert_eq!(span_at(&flux, "137", 1).0, "exit_code=137");
        assert_eq!(span_at(&flux, "Killed", 0).0, "reason=OOMKilled");
        // A peak on a marker: the field it opens; on <|EOE|>: the last field.
        assert_eq!(span_at(&flux, "<|STATE|>", 0).0, "<|STATE|>crashed");
        assert_eq!(span_at(&flux, "<|EOE|>", 0).0, "reason=OOMKilled");
        assert_eq!(readable(&span_at(&flux, "rashed", 0).0), "state=crashed");

        let mut metrics = BTreeMap::new();
        metrics.insert("cpu".to_string(), 21.0);
        metrics.insert("mem_pct".to_string(), 97.0);
        let pulse = render(Body::Pulse { metrics });
        let (text, s, e) = span_at(&pulse, "mem_pct=", 8);
        assert!(text.starts_with("mem_pct="), "{pulse}: {text}");
        // The span's offsets are token offsets of the event.
        let ids = Vocab::bytes().encode(&pulse);
        assert_eq!(Vocab::bytes().decode(&ids[s..e]), text);
    }

    #[test]
    fn long_messages_are_cut_to_whole_words() {
        let log = render(Body::Log {
            level: Some("fatal".into()),
            message:
                "Memory cgroup out of memory: OOMKilled process 4242 (python3) total-vm:8123456kB"
                    .into(),
        });
        let (text, ..) = span_at(&log, "OOMKilled", 2);
        assert!(text.contains("OOMKilled"), "{text}");
        assert!(text.chars().count() <= SPAN_MAX_CHARS, "{text}");
        // Whole words of the message: it starts and ends at a word boundary.
        let msg = &log[log.find("<|MSG|>").unwrap() + 7..log.find("<|EOE|>").unwrap()];
        let at = msg.find(&text).unwrap();
        assert!(at == 0 || msg.as_bytes()[at - 1] == b' ', "{text}");
        let end = at + text.len();
        assert!(end == msg.len() || msg.as_bytes()[end] == b' ', "{text}");
        // A short field is whole: the level.
        assert_eq!(span_at(&log, "FATAL", 2).0, "<|LEVEL|>FATAL");

        let sql = render(Body::Log {
            level: None,
            message: "slow query: SELECT * FROM accounts WHERE permissions = 'admin' AND region = 'eu-west-1' took 9s"
                .into(),
        });
        let (text, ..) = span_at(&sql, "issions", 0);
        assert!(text.contains("permissions"), "{text}");
        assert!(!text.starts_with(' ') && !text.ends_with(' '), "{text}");
        assert!(text.chars().count() <= SPAN_MAX_CHARS, "{text}");
    }

    #[test]
    fn a_long_word_is_cut_at_character_boundaries() {
        let word = "é".repeat(60);
        let log = render(Body::Log {
            level: None,
            message: format!("x {word} y"),
        });
        let (text, ..) = span_at(&log, "é", 40);
        assert!(!text.contains('\u{FFFD}'), "{text}");
        assert_eq!(text.chars().count(), SPAN_MAX_CHARS);
        assert!(text.chars().all(|c| c == 'é'));
    }

    #[test]
    fn placeholders_are_content_and_markers_alone_are_spans() {
        let log = render(Body::Log {
            level: Some("warn".into()),
            message: "conn from 10.0.0.7:4411 refused".into(),
        });
        assert_eq!(span_at(&log, "refused", 0).0, "conn from <|IP|> refused");
        assert_eq!(
            readable("conn from <|IP|> refused"),
            "conn from <IP> refused"
        );
        let trace = render(Body::Trace {
            phase: crate::event::Phase::Plan,
            request: "r".into(),
            summary: "route".into(),
            duration_ms: None,
        });
        assert_eq!(span_at(&trace, "<|PLAN|>", 0).0, "<|PLAN|>");
        assert_eq!(readable("<|PLAN|>"), "plan");
        assert_eq!(field_span(&Vocab::bytes(), &[], &[], 40), (0, 0, 0.0));
        assert_eq!(field_span(&Vocab::bytes(), &[1, 2], &[], 40), (0, 0, 0.0));
    }
}
