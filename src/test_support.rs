//! Helpers shared by unit tests.

/// A small deterministic xorshift generator: reproducible pseudo-random bytes for the
/// robustness tests that feed damaged input to parsers.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed.max(1);
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
