//! Key choice for the benchmark: uniform, zipfian (YCSB's, θ = 0.99) or a
//! sequential pass; each client has its own seeded generator.

pub use crate::core::rng::Rng;

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// A few hot keys (YCSB's zipfian, θ = 0.99), scattered over the key space.
    Zipfian,
    /// Each key once, in order, clients interleaved.
    Sequential,
}

/// Draws key indexes in `0..keys`.
#[derive(Debug, Clone)]
pub struct KeyChooser {
    keys: u64,
    distribution: Distribution,
    zeta_n: f64,
    alpha: f64,
    eta: f64,
    theta: f64,
}

const THETA: f64 = 0.99;

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl KeyChooser {
    /// A chooser over `keys` keys.
    pub fn new(keys: u64, distribution: Distribution) -> Self {
        let keys = keys.max(1);
        let (zeta_n, alpha, eta) = if distribution == Distribution::Zipfian {
            let zeta_n = zeta(keys, THETA);
            let zeta_2 = zeta(2, THETA);
            let eta = (1.0 - (2.0 / keys as f64).powf(1.0 - THETA)) / (1.0 - zeta_2 / zeta_n);
            (zeta_n, 1.0 / (1.0 - THETA), eta)
        } else {
            (0.0, 0.0, 0.0)
        };
        KeyChooser {
            keys,
            distribution,
            zeta_n,
            alpha,
            eta,
            theta: THETA,
        }
    }

    /// The key index for the `sequence`-th operation of a client.
    pub fn next(&self, rng: &mut Rng, sequence: u64) -> u64 {
        match self.distribution {
            Distribution::Uniform => rng.next_u64() % self.keys,
            Distribution::Sequential => sequence % self.keys,
            Distribution::Zipfian => {
                let u = rng.unit();
                let uz = u * self.zeta_n;
                let rank = if uz < 1.0 {
                    0
                } else if uz < 1.0 + 0.5f64.powf(self.theta) {
                    1
                } else {
                    ((self.keys as f64) * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64
                };
                // Scatter the hot ranks over the key space, as YCSB's scrambled zipfian does.
                scramble(rank.min(self.keys - 1)) % self.keys
            }
        }
    }
}

fn scramble(rank: u64) -> u64 {
    let mut z = rank.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipfian_keys_stay_in_range_and_favour_a_few() {
        let chooser = KeyChooser::new(1_000, Distribution::Zipfian);
        let mut rng = Rng::new(7);
        let mut counts = vec![0u32; 1_000];
        for i in 0..100_000 {
            counts[chooser.next(&mut rng, i) as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top_ten: u32 = counts[..10].iter().sum();
        assert!(
            top_ten > 20_000,
            "the 10 hottest keys take a large share: {top_ten}"
        );
    }

    #[test]
    fn uniform_and_sequential_cover_the_key_space() {
        let mut rng = Rng::new(1);
        let uniform = KeyChooser::new(10, Distribution::Uniform);
        assert!((0..1_000).all(|i| uniform.next(&mut rng, i) < 10));
        let sequential = KeyChooser::new(10, Distribution::Sequential);
        assert_eq!(
            (0..12)
                .map(|i| sequential.next(&mut rng, i))
                .collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
        );
    }
}
