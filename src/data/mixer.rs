//! The handbook's dataset mixer: which rows of which splits make the train
//! and evaluation sets, in which order.
//!
//! 2024 form (`dataset_mixer`, handbook ff618a4 `mix_datasets`): each train
//! split keeps its first `int(fraction * len)` rows; the sets are
//! concatenated in mixer order and shuffled with seed 42; test splits are
//! kept whole and shuffled the same way.
//! 2025 form (`dataset_mixture`, handbook `get_dataset`): each source is
//! shuffled with the mixture seed and cut to `int(weight * len)` rows; the
//! sources are concatenated and, with `test_split_size`, split into train
//! and test.
//!
//! The shuffle is a seeded ChaCha8 Fisher-Yates, deterministic on every
//! platform but not the permutation of Python's `datasets`. With
//! `dataset_shuffle: false` every set keeps file order (the fixtures'
//! setting), and a mixture's test rows are its last rows.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::recipe::{DataPlan, MIXER_SEED, SplitRole, SplitSource};

use super::error::DataError;
use super::hub::{RepoKind, resolve};
use super::schema::{RawRow, RecordKind, SplitInput, read_rows};
use super::source::split_files;

/// Rows of one split role, mixed as the recipe says.
pub fn load_role(
    plan: &DataPlan,
    role: SplitRole,
    shuffle: bool,
    kind: &RecordKind,
) -> Result<Vec<RawRow>, DataError> {
    match plan {
        DataPlan::Mixer { train, test } => {
            let sources = match role {
                SplitRole::Train => train,
                SplitRole::Test => test,
            };
            let mut rows = Vec::new();
            for source in sources {
                let mut part = read_source(source, kind)?;
                part.truncate(keep_count(source.fraction, part.len()));
                rows.extend(part);
            }
            if shuffle {
                seeded_shuffle(&mut rows, MIXER_SEED);
            }
            Ok(rows)
        }
        DataPlan::Mixture {
            sources,
            seed,
            test_split_size,
        } => {
            let mut rows = Vec::new();
            for source in sources {
                let mut part = read_source(source, kind)?;
                if shuffle {
                    seeded_shuffle(&mut part, *seed);
                }
                part.truncate(keep_count(source.fraction, part.len()));
                rows.extend(part);
            }
            split_mixture(rows, role, *test_split_size, shuffle, *seed)
        }
    }
}

fn read_source(source: &SplitSource, kind: &RecordKind) -> Result<Vec<RawRow>, DataError> {
    let dir = resolve(&source.id, RepoKind::Dataset)?;
    let files = split_files(&dir, &source.id, &source.split, source.config.as_deref())?;
    let input = SplitInput {
        dataset: &source.id,
        split: &source.split,
        files: &files,
        columns: source.columns.as_deref(),
    };
    read_rows(&input, kind)
}

/// `int(fraction * len)`, as the handbook.
fn keep_count(fraction: f64, len: usize) -> usize {
    ((fraction * len as f64) as usize).min(len)
}

/// `train_test_split(test_size)`: a count, or a fraction rounded up.
fn split_mixture(
    mut rows: Vec<RawRow>,
    role: SplitRole,
    test_split_size: Option<f64>,
    shuffle: bool,
    seed: u64,
) -> Result<Vec<RawRow>, DataError> {
    let Some(size) = test_split_size else {
        return match role {
            SplitRole::Train => Ok(rows),
            SplitRole::Test => Err(DataError::Unsupported(
                "dataset_mixture has no test_split_size, so there is no evaluation split".into(),
            )),
        };
    };
    let n_test = if size < 1.0 {
        (size * rows.len() as f64).ceil() as usize
    } else {
        size as usize
    };
    if n_test > rows.len() {
        return Err(DataError::Unsupported(format!(
            "test_split_size {size} is larger than the mixture ({} rows)",
            rows.len()
        )));
    }
    if shuffle {
        seeded_shuffle(&mut rows, seed);
        // datasets: test = first n_test rows of the permutation.
        let train = rows.split_off(n_test);
        return Ok(if role == SplitRole::Test { rows } else { train });
    }
    let test = rows.split_off(rows.len() - n_test);
    Ok(if role == SplitRole::Test { test } else { rows })
}

/// Seeded, platform-independent Fisher-Yates shuffle.
pub fn seeded_shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    items.shuffle(&mut rng);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_keeps_the_floor_like_python_int() {
        assert_eq!(keep_count(0.5, 7), 3);
        assert_eq!(keep_count(1.0, 7), 7);
        assert_eq!(keep_count(0.0, 7), 0);
    }

    #[test]
    fn shuffle_is_seeded() {
        let mut a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        seeded_shuffle(&mut a, 42);
        seeded_shuffle(&mut b, 42);
        assert_eq!(a, b);
        assert_ne!(a, (0..50).collect::<Vec<_>>());
    }
}
