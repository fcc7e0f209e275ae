#![no_main]
//! A batch of bus messages through decode, validate, render, tokenize,
//! context and the native forward: [`proprio_fuzz::Harness::event`].

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proprio_fuzz::Harness::get().event(data);
});
