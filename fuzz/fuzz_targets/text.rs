#![no_main]
//! Free text through escape, mask and both vocabularies:
//! [`proprio_fuzz::Harness::text`].

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proprio_fuzz::Harness::get().text(data);
});
