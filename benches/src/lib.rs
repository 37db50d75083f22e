//! Benchmarks live in `benches/`; run them with `cargo bench -p ragvault-benches`. The library holds the load
//! harness the `scenarios` binary and `benches/scenarios/run.sh` use: the load generator (`load`), the
//! processes a scenario starts and breaks (`process`), and one scenario's whole stack (`stack`).
// A harness, like testkit: a setup that cannot proceed panics with what went wrong.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod load;
pub mod process;
pub mod stack;
