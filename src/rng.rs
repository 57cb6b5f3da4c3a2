//! Random numbers. The counter-based generator behind `random` loss weighting (RLW, Lin et al. 2021).
//!
//! Only 32-bit integer arithmetic, so the GPU (`shaders/combine.wgsl`, `rlw_uniform`) and the CPU
//! reference draw bit-identical uniforms from (seed, step, k); the normal deviates are then formed
//! in f32 on the GPU and in f64 here. Changing anything here changes reproducibility of old runs.

/// PCG-RXS-M-XS 32-bit output hash (Jarzynski & Olano, "Hash Functions for GPU Rendering", 2020).
pub fn pcg_hash(x: u32) -> u32 {
    let state = x.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// The j-th (0 or 1) uniform in (0, 1) for term k at `step`: 24 random bits, centred in their cell,
/// so it is exact in f32 and never 0 or 1.
pub fn rlw_uniform(seed: u32, step: u32, k: u32, j: u32) -> f64 {
    let h = pcg_hash(pcg_hash(pcg_hash(seed) ^ step) ^ (2 * k + j));
    ((h >> 8) as f64 + 0.5) / 16_777_216.0
}

/// RLW weights for `count` terms at `step`: softmax of Box–Muller normals.
pub fn rlw_weights(seed: u32, step: u32, count: usize) -> Vec<f64> {
    let normals: Vec<f64> = (0..count as u32)
        .map(|k| {
            let u1 = rlw_uniform(seed, step, k, 0);
            let u2 = rlw_uniform(seed, step, k, 1);
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect();
    let m = normals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = normals.iter().map(|n| (n - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// The k-th (0-based) cyclic shift in [1, B) of `softmax_cross_entropy_with_negative_mining` with a
/// seed, at `step`: row i's k-th negative is item row (i − shift) mod B (TF `tf.roll`). The GPU
/// (`shaders/mining.wgsl`) draws the same integers.
pub fn mining_shift(seed: u32, step: u32, k: u32, batch: u32) -> u32 {
    let h = pcg_hash(pcg_hash(pcg_hash(seed) ^ step) ^ k);
    1 + h % batch.saturating_sub(1).max(1)
}

/// splitmix64 (Steele, Lea & Flood 2014): seeded inputs for tests, benchmarks and examples, so that
/// every run sees the same values without a dependency.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A stream starting at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 24 bits (exact in f32).
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u32 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn range_f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit_f32()
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in [0, n) (n > 0; the modulo bias is negligible for small n).
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n.max(1) as u64) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_a_distribution_and_reproducible() {
        let a = rlw_weights(7, 3, 4);
        assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(a, rlw_weights(7, 3, 4));
        assert_ne!(a, rlw_weights(7, 4, 4));
        assert_ne!(a, rlw_weights(8, 3, 4));
    }

    #[test]
    fn uniforms_look_uniform() {
        let n = 20_000u32;
        let mean: f64 = (0..n).map(|s| rlw_uniform(1, s, 0, 0)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
    }
}
