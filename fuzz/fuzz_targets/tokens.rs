#![no_main]
//! The native forward on arbitrary token ids, cached against uncached:
//! [`proprio_fuzz::Harness::tokens`].

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proprio_fuzz::Harness::get().tokens(data);
});
