//! TRL 1.x SFT packing (`packing: true`, `packing_strategy: bfd`): each
//! tokenized conversation (already cut to `max_length`) goes whole into one
//! block of at most `max_length` tokens, by Best Fit Decreasing: longest
//! first, each into the open block with the least room that still fits it
//! (among equals, the one that reached that room first), else a new block.
//!
//! TRL trains such blocks "padding-free": position ids restart at every
//! conversation and flash attention keeps conversations from seeing each
//! other. Here the blocks keep their conversation lengths
//! ([`SftExample::documents`]): the model restarts positions and masks
//! attention across them on every backend. The first token of each
//! conversation is not a label (TRL sets `labels[position_ids == 0] = -100`).

use std::collections::{BTreeMap, VecDeque};

use super::sft::{IGNORE_INDEX, SftExample};

/// The blocks, in the order they were opened.
pub fn pack_bfd(examples: &[SftExample], max_length: usize) -> Vec<SftExample> {
    let mut order: Vec<usize> = (0..examples.len())
        .filter(|&i| !examples[i].input_ids.is_empty())
        .collect();
    // Stable: equal lengths keep their dataset order, as Arrow's sort does.
    order.sort_by_key(|&i| std::cmp::Reverse(examples[i].input_ids.len().min(max_length)));
    let mut bins: Vec<(Vec<usize>, usize)> = Vec::new();
    let mut by_room: BTreeMap<usize, VecDeque<usize>> = BTreeMap::new();
    for index in order {
        let length = examples[index].input_ids.len().min(max_length);
        let fitting = by_room.range(length..).next().map(|(&room, _)| room);
        let bin = match fitting {
            Some(room) => {
                let queue = by_room.get_mut(&room).expect("a listed room");
                let bin = queue.pop_front().expect("non-empty queue");
                if queue.is_empty() {
                    by_room.remove(&room);
                }
                bin
            }
            None => {
                bins.push((Vec::new(), 0));
                bins.len() - 1
            }
        };
        bins[bin].0.push(index);
        bins[bin].1 += length;
        let room = max_length - bins[bin].1;
        if room > 0 {
            by_room.entry(room).or_default().push_back(bin);
        }
    }
    bins.iter()
        .map(|(members, _)| block(examples, members, max_length))
        .collect()
}

fn block(examples: &[SftExample], members: &[usize], max_length: usize) -> SftExample {
    let first = &examples[members[0]];
    let mut packed = SftExample {
        location: first.location.clone(),
        text: String::new(),
        input_ids: Vec::new(),
        labels: Vec::new(),
        truncated: false,
        full_length: 0,
        documents: Vec::new(),
    };
    for &index in members {
        let example = &examples[index];
        let length = example.input_ids.len().min(max_length);
        packed.text += &example.text;
        packed
            .input_ids
            .extend_from_slice(&example.input_ids[..length]);
        packed.labels.push(IGNORE_INDEX);
        packed.labels.extend_from_slice(&example.labels[1..length]);
        packed.truncated |= example.truncated;
        packed.full_length += length;
        packed.documents.push(length);
    }
    packed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::RowLocation;

    fn example(length: usize, tag: u32) -> SftExample {
        SftExample {
            location: RowLocation {
                dataset: "d".into(),
                split: "s".into(),
                row: 0,
            },
            text: format!("{tag}"),
            input_ids: vec![tag; length],
            labels: vec![i64::from(tag); length],
            truncated: false,
            full_length: length,
            documents: Vec::new(),
        }
    }

    /// TRL's docstring example: lengths [3, 4, 2, 1] into blocks of 4 give
    /// [[4], [3, 1], [2]].
    #[test]
    fn best_fit_decreasing_as_trl() {
        let examples: Vec<SftExample> = [3, 4, 2, 1]
            .iter()
            .enumerate()
            .map(|(i, &n)| example(n, i as u32 + 1))
            .collect();
        let blocks = pack_bfd(&examples, 4);
        let documents: Vec<Vec<usize>> = blocks.iter().map(|b| b.documents.clone()).collect();
        assert_eq!(documents, [vec![4], vec![3, 1], vec![2]]);
        assert_eq!(blocks[1].input_ids, [1, 1, 1, 4]);
        // Each conversation's first token is no label.
        assert_eq!(blocks[1].labels, [-100, 1, 1, -100]);
    }

    #[test]
    fn equal_rooms_fill_the_earliest_block_first() {
        let examples: Vec<SftExample> = [5, 5, 2, 2]
            .iter()
            .enumerate()
            .map(|(i, &n)| example(n, i as u32))
            .collect();
        let blocks = pack_bfd(&examples, 8);
        let documents: Vec<Vec<usize>> = blocks.iter().map(|b| b.documents.clone()).collect();
        assert_eq!(documents, [vec![5, 2], vec![5, 2]]);
        assert_eq!(blocks[0].input_ids, [0, 0, 0, 0, 0, 2, 2]);
    }
}
