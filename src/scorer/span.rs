//! Which part of an event surprised the model: the window of its tokens
//! with the highest mean loss. It is the alert's evidence, a scorer's
//! decision on top of the model's per-token losses, and eval measures it
//! through this same function.

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

#[cfg(test)]
mod tests {
    use super::surprising_span;

    #[test]
    fn surprising_span_finds_the_peak() {
        let l = [0.1, 0.2, 0.1, 3.0, 4.0, 3.5, 0.2, 0.1];
        assert_eq!(surprising_span(&l, 3), (3, 6, 3.5));
        assert_eq!(surprising_span(&l, 1).0, 4);
        assert_eq!(surprising_span(&l, 100).1, 8);
        assert_eq!(surprising_span(&[], 5), (0, 0, 0.0));
        assert_eq!(surprising_span(&[2.0], 0), (0, 1, 2.0));
    }
}
