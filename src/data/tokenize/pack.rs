//! TRL 0.7.10's `ConstantLengthDataset` (the packing of `SFTTrainer` with
//! `packing=True`, which the handbook's `run_sft.py` @ ff618a4 always asks
//! for): documents are read into a buffer until their total character count
//! reaches `seq_length × chars_per_token × num_of_sequences`; the buffer's
//! token ids are concatenated (an `<eos>` after each document only with
//! `append_concat_token`), cut into consecutive chunks of exactly
//! `seq_length` tokens, and the incomplete tail of each buffer is dropped.
//! Every chunk is both `input_ids` and `labels`; documents attend to each
//! other inside a chunk (no per-document mask, positions `0..seq_length`).
//!
//! TRL shuffles the chunks of each buffer with Python's global `random`
//! (whose state depends on everything the script drew before); `shuffle`
//! here draws a seeded ChaCha8 permutation instead, so the order is
//! deterministic but not the original run's.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// `ConstantLengthDataset` arguments as `SFTTrainer` 0.7.10 passes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackOptions {
    pub seq_length: usize,
    /// SFTTrainer default 1024.
    pub num_of_sequences: usize,
    /// SFTTrainer default 3.6.
    pub chars_per_token: f64,
    /// `Some(eos)` with `append_concat_token` (TRL's default), else `None`.
    pub concat_token: Option<u32>,
    /// `Some(seed)`: shuffle each buffer's chunks (TRL's default, but not
    /// with Python's RNG); `None`: keep stream order.
    pub shuffle_seed: Option<u64>,
}

/// One document of the stream: its row in the split, its length in
/// characters (Python's `len(str)`, code points) and its token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackDocument {
    pub row: usize,
    pub chars: usize,
    pub ids: Vec<u32>,
}

/// Which part of a document fills which part of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Segment {
    pub row: usize,
    /// Offset of the first token inside the document.
    pub row_token_start: usize,
    /// Offset inside the chunk.
    pub chunk_start: usize,
    pub len: usize,
}

/// One packed sequence of exactly `seq_length` tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedSequence {
    /// Offset of its first token in the whole token stream (all buffers,
    /// dropped tails included).
    pub stream_start: usize,
    pub input_ids: Vec<u32>,
    pub segments: Vec<Segment>,
}

/// Pack `documents` (in dataset order). Returns the chunks in the order
/// the dataset yields them.
pub fn pack(documents: &[PackDocument], options: &PackOptions) -> Vec<PackedSequence> {
    let max_buffer_chars =
        options.seq_length as f64 * options.chars_per_token * options.num_of_sequences as f64;
    let mut packed = Vec::new();
    let mut stream_offset = 0;
    let mut start = 0;
    let mut buffer_index = 0;
    while start < documents.len() {
        let end = buffer_end(documents, start, max_buffer_chars);
        let (mut chunks, stream_len) = chunk_buffer(&documents[start..end], stream_offset, options);
        if let Some(seed) = options.shuffle_seed {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(buffer_index);
            chunks.shuffle(&mut rng);
        }
        packed.extend(chunks);
        stream_offset += stream_len;
        start = end;
        buffer_index += 1;
    }
    packed
}

/// Documents `start..end` fill one buffer: TRL appends while the running
/// character count is below the limit, so the last one may overshoot it.
fn buffer_end(documents: &[PackDocument], start: usize, max_chars: f64) -> usize {
    let mut chars = 0usize;
    let mut end = start;
    while end < documents.len() && (chars as f64) < max_chars {
        chars += documents[end].chars;
        end += 1;
    }
    end
}

/// The full chunks of one buffer and the buffer's stream length.
fn chunk_buffer(
    documents: &[PackDocument],
    stream_offset: usize,
    options: &PackOptions,
) -> (Vec<PackedSequence>, usize) {
    // (row, token index inside the row) of every stream position.
    let mut stream: Vec<(u32, usize, usize)> = Vec::new();
    for doc in documents {
        stream.extend(doc.ids.iter().enumerate().map(|(j, &id)| (id, doc.row, j)));
        if let Some(concat) = options.concat_token {
            stream.push((concat, doc.row, doc.ids.len()));
        }
    }
    let seq_length = options.seq_length.max(1);
    let chunks = stream
        .chunks_exact(seq_length)
        .enumerate()
        .map(|(k, chunk)| PackedSequence {
            stream_start: stream_offset + k * seq_length,
            input_ids: chunk.iter().map(|(id, _, _)| *id).collect(),
            segments: segments(chunk),
        })
        .collect();
    (chunks, stream.len())
}

fn segments(chunk: &[(u32, usize, usize)]) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    for (pos, &(_, row, j)) in chunk.iter().enumerate() {
        match segments.last_mut() {
            Some(last) if last.row == row => last.len += 1,
            _ => segments.push(Segment {
                row,
                row_token_start: j,
                chunk_start: pos,
                len: 1,
            }),
        }
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(row: usize, ids: &[u32]) -> PackDocument {
        PackDocument {
            row,
            chars: ids.len() * 4,
            ids: ids.to_vec(),
        }
    }

    fn options(seq_length: usize) -> PackOptions {
        PackOptions {
            seq_length,
            num_of_sequences: 1024,
            chars_per_token: 3.6,
            concat_token: None,
            shuffle_seed: None,
        }
    }

    #[test]
    fn chunks_cross_documents_and_the_tail_is_dropped() {
        let docs = [doc(0, &[2, 10, 11, 1]), doc(1, &[2, 12, 1])];
        let packed = pack(&docs, &options(3));
        let ids: Vec<_> = packed.iter().map(|p| p.input_ids.clone()).collect();
        assert_eq!(ids, [vec![2, 10, 11], vec![1, 2, 12]]);
        assert_eq!(packed[1].stream_start, 3);
        assert_eq!(
            packed[1].segments,
            [
                Segment {
                    row: 0,
                    row_token_start: 3,
                    chunk_start: 0,
                    len: 1
                },
                Segment {
                    row: 1,
                    row_token_start: 0,
                    chunk_start: 1,
                    len: 2
                },
            ]
        );
    }

    #[test]
    fn the_concat_token_follows_every_document() {
        let docs = [doc(0, &[5, 6]), doc(1, &[7])];
        let with_eos = PackOptions {
            concat_token: Some(1),
            ..options(2)
        };
        let ids: Vec<_> = pack(&docs, &with_eos)
            .into_iter()
            .map(|p| p.input_ids)
            .collect();
        assert_eq!(ids, [vec![5, 6], vec![1, 7]]);
    }

    #[test]
    fn each_buffer_drops_its_own_tail() {
        // A buffer holds 2 × 1.0 × 1 = 2 characters: each document fills one.
        let docs = [doc(0, &[1, 2, 3]), doc(1, &[4, 5, 6])];
        let small = PackOptions {
            num_of_sequences: 1,
            chars_per_token: 1.0,
            ..options(2)
        };
        let packed = pack(&docs, &small);
        let ids: Vec<_> = packed.iter().map(|p| p.input_ids.clone()).collect();
        assert_eq!(ids, [vec![1, 2], vec![4, 5]]);
        assert_eq!(packed[1].stream_start, 3);
    }

    #[test]
    fn shuffling_is_a_seeded_permutation_of_the_chunks() {
        let docs: Vec<_> = (0..20).map(|r| doc(r, &[r as u32; 4])).collect();
        let plain = pack(&docs, &options(4));
        let seeded = PackOptions {
            shuffle_seed: Some(42),
            ..options(4)
        };
        let shuffled = pack(&docs, &seeded);
        assert_eq!(shuffled, pack(&docs, &seeded));
        assert_ne!(shuffled, plain);
        let mut sorted = shuffled.clone();
        sorted.sort_by_key(|p| p.stream_start);
        assert_eq!(sorted, plain);
    }
}
