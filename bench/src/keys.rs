//! The key space: `populate` makes <prefix>/k0000000000 ... (prefix /bench unless
//! --prefix says otherwise) and a run draws key indices
//! uniformly or from a Zipf distribution (index 0 hottest).

use rand::Rng;
use rand_distr::{Distribution, Zipf};

pub const KEY_PREFIX: &str = "/bench";
/// Where runs create (and delete) their own nodes, apart from the key space.
pub const SCRATCH: &str = "/bench-tmp";

/// Key `i` of the key space under `prefix` (default /bench).
pub fn key(prefix: &str, i: u64) -> String {
    format!("{prefix}/k{i:010}")
}

#[derive(Clone, Debug)]
pub enum KeyDist {
    Uniform(u64),
    Zipf { n: u64, s: f64, zipf: Zipf<f64> },
}

impl KeyDist {
    /// `uniform`, `zipf` (exponent 0.99) or `zipf:S`.
    pub fn parse(spec: &str, keys: u64) -> Result<KeyDist, String> {
        let keys = keys.max(1);
        match spec.split_once(':').unwrap_or((spec, "")) {
            ("uniform", "") => Ok(KeyDist::Uniform(keys)),
            ("zipf", s) => {
                let s: f64 = if s.is_empty() {
                    0.99
                } else {
                    s.parse().map_err(|_| format!("bad zipf exponent {s:?}"))?
                };
                let zipf = Zipf::new(keys, s).map_err(|e| format!("zipf: {e}"))?;
                Ok(KeyDist::Zipf { n: keys, s, zipf })
            }
            _ => Err(format!(
                "--dist: expected uniform, zipf or zipf:S, got {spec:?}"
            )),
        }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        match self {
            KeyDist::Uniform(n) => rng.gen_range(0..*n),
            // Zipf yields ranks 1..=n.
            KeyDist::Zipf { n, zipf, .. } => (zipf.sample(rng) as u64).clamp(1, *n) - 1,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            KeyDist::Uniform(_) => "uniform".into(),
            KeyDist::Zipf { s, .. } => format!("zipf:{s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn samples_stay_in_the_key_space_and_zipf_is_skewed() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let u = KeyDist::parse("uniform", 100).unwrap();
        let z = KeyDist::parse("zipf", 100).unwrap();
        let mut hot = 0;
        for _ in 0..10_000 {
            assert!(u.sample(&mut rng) < 100);
            let k = z.sample(&mut rng);
            assert!(k < 100);
            if k == 0 {
                hot += 1;
            }
        }
        // Rank 1 of 100 at s=0.99 draws about 19% of samples; uniform would give 1%.
        assert!((1500..2500).contains(&hot), "{hot}");
        assert!(KeyDist::parse("zipf:x", 10).is_err());
        assert!(KeyDist::parse("normal", 10).is_err());
    }
}
