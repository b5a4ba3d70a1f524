//! `precompute_ref_log_probs: true`: the frozen reference scores every pair
//! once before training, so it need not stay in memory while the policy
//! trains. As in TRL, the values are cached on disk under a key made of the
//! data and the reference weights, so a restarted run skips the pass; a
//! changed dataset, tokenizer rule or reference gives a new key, never stale
//! values.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use xxhash_rust::xxh3::Xxh3;

use super::LogpsBackend;
use super::logps::{ScoredBatch, sequence_logps};
use super::preference::PreferenceBatch;
use crate::data::micro_batches;
use crate::model::gemma::Gemma;
use crate::model::hf::named_tensors;

const MAGIC: &[u8; 8] = b"ALIGNREF";

/// Reference log-prob sums of one split, by example index.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceLogps {
    pub chosen: Vec<f32>,
    pub rejected: Vec<f32>,
}

impl ReferenceLogps {
    /// The values of the pairs `indices`, in the batch layout
    /// `[chosen of each pair; rejected of each pair]`.
    pub fn for_pairs(&self, indices: &[usize]) -> Vec<f32> {
        let chosen = indices.iter().map(|&i| self.chosen[i]);
        let rejected = indices.iter().map(|&i| self.rejected[i]);
        chosen.chain(rejected).collect()
    }

    fn len(&self) -> usize {
        self.chosen.len()
    }
}

/// Where the pass reads and writes its cache, and how it reports.
pub struct PrecomputeSettings<'a> {
    pub cache_dir: &'a Path,
    /// `train` or `eval`: part of the cache file name and of the messages.
    pub split: &'a str,
    pub batch_size: usize,
    pub quiet: bool,
}

/// A content hash of the reference weights (names, dtypes, values), as TRL's
/// `hash_module`; computed once and shared by the train and eval passes.
pub fn weights_fingerprint<B: Backend>(model: &Gemma<B>) -> u128 {
    let mut hasher = Xxh3::new();
    let mut tensors = named_tensors(model);
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, data) in tensors {
        hasher.update(name.as_bytes());
        hasher.update(format!("{:?}{:?}", data.dtype, data.shape).as_bytes());
        hasher.update(&data.bytes);
    }
    hasher.digest128()
}

/// The reference log-probs of `count` examples, read from the cache when a
/// file with the same key exists, else computed in sequential batches of
/// `settings.batch_size` and cached.
pub fn precompute<B: LogpsBackend>(
    model: &Gemma<B>,
    weights: u128,
    count: usize,
    collate: &dyn Fn(&[usize]) -> PreferenceBatch,
    settings: &PrecomputeSettings<'_>,
    device: &B::Device,
) -> std::io::Result<ReferenceLogps> {
    let order: Vec<usize> = (0..count).collect();
    let batches: Vec<Vec<usize>> = micro_batches(&order, settings.batch_size.max(1), false);
    let key = cache_key(weights, batches.iter().map(|indices| collate(indices)));
    let path = settings
        .cache_dir
        .join(format!("{}-{key:032x}.bin", settings.split));
    if let Some(cached) = read_cache(&path, count)? {
        if !settings.quiet {
            eprintln!(
                "reference log-probs ({}): reusing {}",
                settings.split,
                path.display()
            );
        }
        return Ok(cached);
    }
    if !settings.quiet {
        eprintln!(
            "reference log-probs ({}): scoring {count} pairs in {} batches",
            settings.split,
            batches.len()
        );
    }
    let mut values = ReferenceLogps {
        chosen: Vec::with_capacity(count),
        rejected: Vec::with_capacity(count),
    };
    for indices in &batches {
        let batch = collate(indices);
        let sums = sequence_logps(model, &batch.sequences, device).sums;
        let sums: Vec<f32> = sums
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 sums");
        let (chosen, rejected) = sums.split_at(batch.pairs);
        values.chosen.extend_from_slice(chosen);
        values.rejected.extend_from_slice(rejected);
    }
    write_cache(&path, &values)?;
    Ok(values)
}

/// Hash of the reference weights and of what the reference sees: each
/// sequence's unpadded tokens and scored positions (so the key does not
/// depend on the batch size used to compute it).
fn cache_key(weights: u128, batches: impl Iterator<Item = PreferenceBatch>) -> u128 {
    let mut hasher = Xxh3::new();
    hasher.update(&weights.to_le_bytes());
    for batch in batches {
        hash_sequences(&mut hasher, &batch.sequences);
    }
    hasher.digest128()
}

fn hash_sequences(hasher: &mut Xxh3, batch: &ScoredBatch) {
    let width = batch.width;
    for row in 0..batch.rows {
        let span = row * width..(row + 1) * width;
        for position in span {
            if batch.attention_mask[position] == 1 {
                hasher.update(&batch.input_ids[position].to_le_bytes());
                hasher.update(&[u8::from(batch.scored[position])]);
            }
        }
        hasher.update(b"|");
    }
}

/// Layout: magic, u64 count, then `count` chosen f32 and `count` rejected
/// f32, little-endian. A file of another length is ignored and rewritten.
fn read_cache(path: &Path, count: usize) -> std::io::Result<Option<ReferenceLogps>> {
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut file) => file.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let expected = MAGIC.len() + 8 + 8 * count;
    if bytes.len() != expected || &bytes[..8] != MAGIC || read_u64(&bytes[8..16]) != count as u64 {
        return Ok(None);
    }
    let floats: Vec<f32> = bytes[16..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let (chosen, rejected) = floats.split_at(count);
    Ok(Some(ReferenceLogps {
        chosen: chosen.to_vec(),
        rejected: rejected.to_vec(),
    }))
}

fn read_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

/// Written to a temporary file and renamed, so a crash never leaves a
/// truncated cache that a restart would trust.
fn write_cache(path: &Path, values: &ReferenceLogps) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Unique per writer: the replicas of a data-parallel run each write
    // the same table; the last rename wins, whole.
    static WRITERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let writer = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = PathBuf::from(format!(
        "{}.{}-{writer}.partial",
        path.display(),
        std::process::id()
    ));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(MAGIC)?;
    file.write_all(&(values.len() as u64).to_le_bytes())?;
    for value in values.chosen.iter().chain(&values.rejected) {
        file.write_all(&value.to_le_bytes())?;
    }
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_round_trip_is_exact_and_checks_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train-0.bin");
        let values = ReferenceLogps {
            chosen: vec![-1.5, f32::MIN_POSITIVE, -123.456_79],
            rejected: vec![-0.1, -2.0e-7, -9_999.123],
        };
        write_cache(&path, &values).unwrap();
        assert_eq!(read_cache(&path, 3).unwrap(), Some(values.clone()));
        assert_eq!(read_cache(&path, 4).unwrap(), None);
        assert_eq!(
            values.for_pairs(&[2, 0]),
            vec![-123.456_79, -1.5, -9_999.123, -0.1]
        );
    }
}
