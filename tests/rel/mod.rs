//! What the reliability tests (`tests/reliability_*.rs`) share beyond the end-to-end
//! harness (`tests/common`): seeds that are printed and replayable, and the invariants
//! every interrupted or faulted run must end in.
#![allow(dead_code)]

/// The seed of a test: `KBG_TEST_SEED` when set (to replay a failure), else `default`.
/// Printed, so a failing run's output names the seed that replays it.
pub fn seed(test: &str, default: u64) -> u64 {
    let seed = std::env::var("KBG_TEST_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default);
    eprintln!("{test}: seed {seed} (KBG_TEST_SEED={seed} replays it)");
    seed
}
