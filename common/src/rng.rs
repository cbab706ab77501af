//! xorshift64*: a deterministic, seeded generator, cheap to copy and hash, for the sync
//! core's election jitter (its state must replay exactly in the model and the simulator)
//! and for the stores' seeded random-write tests.

/// The generator's state; a seed of 0 would stay 0, so seed it with an odd number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct XorShift64Star(pub u64);

impl XorShift64Star {
    /// Return a number in `[0, n)` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}
