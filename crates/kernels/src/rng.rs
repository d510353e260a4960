//! A small, value-stable random number generator for the simulator.
//!
//! tessera promises bit-identical outputs for the same seed on every machine and every release, so
//! the simulator does not use a general-purpose RNG crate whose streams and distribution algorithms
//! may change between versions. Instead it fixes the algorithms here:
//! - seeding: SplitMix64 (Steele, Lea & Flood 2014) expands `(seed, stream)` into 256 bits of state;
//! - generator: xoshiro256++ (Blackman & Vigna 2019);
//! - normals: the Marsaglia polar method;
//! - Poisson (exact at every mean): inversion by sequential search for means below
//!   [`POISSON_PTRS_THRESHOLD`], Hoermann's transformed rejection with squeeze (PTRS; Hoermann 1993,
//!   "The transformed rejection method for generating Poisson random variables", the algorithm numpy
//!   uses) above it.
//!
//! Independent streams (one per frame, one per cell) make results independent of thread count.

/// Means at or above which Poisson draws use PTRS instead of inversion (PTRS is valid for >= 10).
pub const POISSON_PTRS_THRESHOLD: f64 = 10.0;

/// `ln(k!)` for integer-valued `k >= 0`: a table below 10, Stirling's series above (error < 1e-10).
fn ln_factorial(k: f64) -> f64 {
    const TABLE: [f64; 10] = [
        0.0,
        0.0,
        std::f64::consts::LN_2,
        1.791_759_469_228_055,
        3.178_053_830_347_945_8,
        4.787_491_742_782_046,
        6.579_251_212_010_101,
        8.525_161_361_065_415,
        10.604_602_902_745_25,
        12.801_827_480_081_469,
    ];
    if k < 10.0 {
        return TABLE[k as usize];
    }
    let x = k + 1.0;
    let x2 = 1.0 / (x * x);
    let series = (((-1.0 / 1680.0 * x2 + 1.0 / 1260.0) * x2 - 1.0 / 360.0) * x2 + 1.0 / 12.0) / x;
    (x - 0.5) * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI).ln() + series
}

/// xoshiro256++ seeded through SplitMix64.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
    spare_normal: Option<f64>,
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for stream `stream` of seed `seed`; distinct `(seed, stream)` pairs give
    /// independent-looking sequences.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut st = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03).rotate_left(17);
        let mut s = [0u64; 4];
        for v in &mut s {
            *v = splitmix64(&mut st);
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Rng {
            s,
            spare_normal: None,
        }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[0]
            .wrapping_add(self.s[3])
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Marsaglia polar method).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let m = (-2.0 * s.ln() / s).sqrt();
                self.spare_normal = Some(v * m);
                return u * m;
            }
        }
    }

    /// Log-normal with the given median and log-space standard deviation.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Poisson-distributed count with mean `lambda` (exact; see the module docs for the method).
    pub fn poisson(&mut self, lambda: f64) -> f64 {
        if lambda.is_nan() || lambda <= 0.0 {
            return 0.0;
        }
        if lambda < POISSON_PTRS_THRESHOLD {
            // Inversion: walk the CDF from k = 0 with p_{k+1} = p_k * lambda / (k + 1).
            // Reciprocals replace a division per step (the loop is a dependency chain).
            const INV: [f64; 64] = {
                let mut t = [0.0; 64];
                let mut i = 1;
                while i < 64 {
                    t[i] = 1.0 / i as f64;
                    i += 1;
                }
                t
            };
            let u = self.uniform();
            let mut p = (-lambda).exp();
            let mut cdf = p;
            let mut k = 0usize;
            // P(k >= 63 | lambda < 10) < 1e-25: the cap never binds in practice.
            while u > cdf && k < 63 {
                k += 1;
                p *= lambda * INV[k];
                cdf += p;
            }
            return k as f64;
        }
        let slam = lambda.sqrt();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.02483 * b;
        let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
        let v_r = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.uniform() - 0.5;
            let v = self.uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
            if us >= 0.07 && v <= v_r {
                return k;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            let lhs = v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln();
            if lhs <= -lambda + k * lambda.ln() - ln_factorial(k) {
                return k;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_var(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
        (m, v)
    }

    #[test]
    fn streams_are_deterministic_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7, 1).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::new(7, 1).next_u64(), Rng::new(7, 2).next_u64());
        assert_ne!(Rng::new(7, 1).next_u64(), Rng::new(8, 1).next_u64());
    }

    #[test]
    fn distributions_have_the_right_moments() {
        let mut r = Rng::new(1, 0);
        let n: Vec<f64> = (0..200_000).map(|_| r.normal()).collect();
        let (m, v) = mean_var(&n);
        assert!(m.abs() < 0.01 && (v - 1.0).abs() < 0.02, "normal {m} {v}");
        for lambda in [0.3, 4.0, 9.99, 10.0, 25.0, 80.0, 1000.0] {
            let p: Vec<f64> = (0..200_000).map(|_| r.poisson(lambda)).collect();
            let (m, v) = mean_var(&p);
            assert!(
                (m / lambda - 1.0).abs() < 0.02,
                "poisson mean {lambda}: {m}"
            );
            assert!((v / lambda - 1.0).abs() < 0.03, "poisson var {lambda}: {v}");
        }
        let u: Vec<f64> = (0..100_000).map(|_| r.uniform()).collect();
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
    }

    #[test]
    fn poisson_pmf_matches_the_exact_distribution() {
        // Frequencies of each count against the exact pmf, on both sides of the method switch.
        for lambda in [6.5f64, 15.0] {
            let mut r = Rng::new(2, lambda as u64);
            let n = 400_000;
            let mut counts = vec![0usize; 80];
            for _ in 0..n {
                counts[(r.poisson(lambda) as usize).min(79)] += 1;
            }
            let mut chi2 = 0.0;
            let mut cells = 0;
            for (k, &c) in counts.iter().enumerate() {
                let pmf = (-lambda + k as f64 * lambda.ln() - ln_factorial(k as f64)).exp();
                let expected = pmf * n as f64;
                if expected > 20.0 {
                    chi2 += (c as f64 - expected).powi(2) / expected;
                    cells += 1;
                }
            }
            // Mean of chi2 is the degrees of freedom; 2x is far beyond p = 0.001 for these sizes.
            assert!(
                chi2 < 2.0 * cells as f64,
                "lambda {lambda}: chi2 {chi2} over {cells} cells"
            );
        }
    }

    #[test]
    fn ln_factorial_matches_direct_sums() {
        let mut direct = 0.0f64;
        for k in 1..200u32 {
            direct += f64::from(k).ln();
            let got = ln_factorial(f64::from(k));
            assert!(
                (got - direct).abs() < 1e-9 * direct.max(1.0),
                "{k}: {got} vs {direct}"
            );
        }
    }

    #[test]
    fn uniforms_stay_in_range() {
        let mut r = Rng::new(4, 0);
        let u: Vec<f64> = (0..100_000).map(|_| r.uniform()).collect();
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
    }
}
