//! The next token from the last position's logits: greedy (argmax, ties to
//! the lowest id as torch's `argmax`), or sampled after temperature, top-k
//! and top-p (nucleus) filtering as transformers' logits warpers apply them,
//! from a seeded ChaCha stream so a seed repeats a generation.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `--temperature`, `--top-k`, `--top-p`, `--seed`, `--max-new-tokens`.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingSettings {
    /// 0 means greedy.
    pub temperature: f64,
    /// 0 means no top-k filter.
    pub top_k: usize,
    /// 1 means no nucleus filter.
    pub top_p: f64,
    pub seed: u64,
    pub max_new_tokens: usize,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 42,
            max_new_tokens: 256,
        }
    }
}

/// Picks tokens; owns the random stream.
pub struct Sampler {
    settings: SamplingSettings,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(settings: SamplingSettings) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(settings.seed);
        Self { settings, rng }
    }

    pub fn settings(&self) -> &SamplingSettings {
        &self.settings
    }

    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.settings.temperature <= 0.0 {
            return argmax(logits);
        }
        let candidates = self.candidates(logits);
        let total: f64 = candidates.iter().map(|(_, p)| p).sum();
        let mut target = self.rng.random::<f64>() * total;
        for &(id, p) in &candidates {
            if target < p {
                return id;
            }
            target -= p;
        }
        candidates.last().map_or(0, |&(id, _)| id)
    }

    /// Tokens left after the filters with their (unnormalised) probabilities,
    /// most likely first.
    fn candidates(&self, logits: &[f32]) -> Vec<(u32, f64)> {
        let SamplingSettings {
            temperature,
            top_k,
            top_p,
            ..
        } = self.settings;
        let mut scored: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(id, &l)| (id as u32, f64::from(l) / temperature))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if top_k > 0 {
            scored.truncate(top_k);
        }
        let max = scored.first().map_or(0.0, |s| s.1);
        let mut probs: Vec<(u32, f64)> = scored
            .into_iter()
            .map(|(id, l)| (id, (l - max).exp()))
            .collect();
        if top_p < 1.0 {
            let total: f64 = probs.iter().map(|(_, p)| p).sum();
            let mut cumulative = 0.0;
            let mut keep = 0;
            for &(_, p) in &probs {
                keep += 1;
                cumulative += p / total;
                if cumulative >= top_p {
                    break;
                }
            }
            probs.truncate(keep.max(1));
        }
        probs
    }
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (id, &value) in logits.iter().enumerate() {
        if value > logits[best] {
            best = id;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(temperature: f64, top_k: usize, top_p: f64, seed: u64) -> Sampler {
        Sampler::new(SamplingSettings {
            temperature,
            top_k,
            top_p,
            seed,
            max_new_tokens: 1,
        })
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(sampler(0.0, 0, 1.0, 0).pick(&[0.5, 2.0, 2.0, -1.0]), 1);
    }

    #[test]
    fn filters_keep_what_transformers_keeps() {
        let logits = [1.0f32, 3.0, 2.0, 0.0];
        // top-k 1 is greedy whatever the seed.
        for seed in 0..20 {
            assert_eq!(sampler(1.0, 1, 1.0, seed).pick(&logits), 1);
        }
        // Probabilities ∝ e^3, e^2, e^1, e^0 = 0.644, 0.237, 0.087, 0.032:
        // top-p 0.8 keeps the two tokens whose cumulative mass reaches 0.8.
        let kept: Vec<u32> = sampler(1.0, 0, 0.8, 0)
            .candidates(&logits)
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(kept, [1, 2]);
        // Sampling visits only kept tokens, and a seed repeats itself.
        let draws = |seed| {
            let mut s = sampler(1.0, 0, 0.8, seed);
            (0..50).map(|_| s.pick(&logits)).collect::<Vec<_>>()
        };
        assert!(draws(3).iter().all(|id| [1, 2].contains(id)));
        assert_eq!(draws(3), draws(3));
        assert!(draws(3).contains(&2));
    }
}
