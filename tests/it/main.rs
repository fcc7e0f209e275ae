//! The integration tests, one binary: libtorch is linked once instead of
//! once per test file. Each module is one area, run alone with
//! `cargo test --release --test it <module>::`; `support` starts real
//! nats-servers and proprio processes for them.

mod support;

mod bad_input;
mod bus;
mod cluster;
mod config;
mod crash_safety;
mod deploy;
mod engine;
mod epoch;
mod eval;
mod fuzz;
mod fuzz_corpus;
mod harvester;
mod import;
mod incidents;
mod kv_cache;
mod living_loop;
mod load;
mod metricbench;
mod metrics;
mod model;
mod no_loss;
mod partition;
mod security;
mod silence;
mod sim;
mod sizing;
mod wire;
