//! The coverage-guided fuzzers' corpus (fuzz/corpus/, checked in,
//! minimized), replayed through the fuzz targets' own bodies
//! (fuzz/src/lib.rs) in an ordinary test: every input any `make fuzz` kept
//! for the coverage it reached, and every crash it ever found, runs on
//! every `make test` without building the instrumented tree (see README,
//! "Fuzzing", for why the libFuzzer runs themselves are in `make fuzz`).
//!
//! `cargo test --release --test it fuzz_corpus:: -- --nocapture`

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod harness;

use harness::Harness;
use std::path::Path;
use std::time::Instant;

/// Every file of `fuzz/corpus/<target>`, sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// Runs one input, naming it if it panics (the panic is the test's failure).
fn replay(target: &str, name: &str, run: impl FnOnce()) {
    if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        eprintln!("fuzz_corpus: fuzz/corpus/{target}/{name} panicked");
        std::panic::resume_unwind(e);
    }
}

#[test]
fn fuzz_corpus_replays_through_the_fuzz_targets() {
    let t0 = Instant::now();
    let h = Harness::get();
    let (mut inputs, mut prepared) = (0, 0);
    for (name, data) in corpus("event") {
        replay("event", &name, || prepared += h.event(&data));
        inputs += 1;
    }
    // The corpus reaches the model's door, not just the decoder's refusals.
    assert!(inputs >= 100, "event corpus: {inputs} inputs");
    assert!(
        prepared >= 50,
        "event corpus: only {prepared} events reached the model"
    );
    let mut counts = vec![("event", inputs)];
    for target in ["text", "tokens"] {
        let files = corpus(target);
        assert!(files.len() >= 5, "{target} corpus: {} inputs", files.len());
        for (name, data) in &files {
            match target {
                "text" => replay(target, name, || h.text(data)),
                _ => replay(target, name, || h.tokens(data)),
            }
        }
        counts.push((target, files.len()));
    }
    println!(
        "fuzz_corpus: {counts:?} inputs replayed, {prepared} events reached the model, 0 panics, {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}
