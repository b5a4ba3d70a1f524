//! Scaled dot-product attention, fused: `out = softmax(where(blocked,
//! f32::MIN, scale·q·kᵀ))·v` and its backward, one `(batch, head)` matrix
//! per rayon task, in tiles of query rows.
//!
//! Why fused: causal attention blocks the upper triangle of every score
//! matrix, so a tile of query rows need only see the keys up to its last
//! visible one. Products and softmax over that span alone do about 60% of
//! the dense work at the CPU bench's 256 positions, and skip the zeros that
//! would be multiplied in; blocked entries beyond the span are exactly zero
//! in the dense result too (`exp(f32::MIN - max)` underflows), so the
//! values are the dense ones.
//!
//! Which keys a row can see comes from the mask itself, not from a
//! causality flag: padding, packed documents and a KV cache's offset mask
//! all work, and a row with no visible key is spread uniformly over every
//! key, as transformers' eager attention does.
//!
//! Grouped-query attention reads each key/value head for its group of query
//! heads; their gradients are summed over the group.

use std::mem::MaybeUninit;

use gemm::Parallelism;
use rayon::prelude::*;

use crate::matmul::{Destination, Matrix, product_into};
use crate::softmax::{softmax_row, softmax_row_backward};
use crate::{Output, wide};

/// Query rows per tile: small enough that the span of each tile follows
/// the causal diagonal closely, large enough for efficient products.
const QUERY_TILE: usize = 64;

/// The sizes of one attention call. `q` is `[batch, heads, queries,
/// head_dim]`, `k` and `v` `[batch, kv_heads, keys, head_dim]`, the mask
/// `[mask_batch, mask_heads, queries, keys]` bytes (non-zero = blocked),
/// broadcast where `mask_batch` or `mask_heads` is 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub queries: usize,
    pub keys: usize,
    pub head_dim: usize,
    pub mask_batch: usize,
    pub mask_heads: usize,
}

impl AttentionShape {
    fn check(&self, q: usize, k: usize, v: usize, blocked: usize) {
        let s = self;
        assert!(
            s.queries > 0 && s.keys > 0 && s.head_dim > 0,
            "attention: empty matrices in {s:?}"
        );
        assert!(
            s.kv_heads > 0 && s.heads.is_multiple_of(s.kv_heads),
            "attention: {} query heads for {} key/value heads",
            s.heads,
            s.kv_heads
        );
        assert!(
            [1, s.batch].contains(&s.mask_batch) && [1, s.heads].contains(&s.mask_heads),
            "attention: a mask of [{}, {}] for {} rows of {} heads",
            s.mask_batch,
            s.mask_heads,
            s.batch,
            s.heads
        );
        let want = [
            s.batch * s.heads * s.queries * s.head_dim,
            s.batch * s.kv_heads * s.keys * s.head_dim,
            s.batch * s.kv_heads * s.keys * s.head_dim,
            s.mask_batch * s.mask_heads * s.queries * s.keys,
        ];
        assert_eq!(
            [q, k, v, blocked],
            want,
            "attention: q, k, v and mask lengths for {s:?}"
        );
    }

    fn query_matrix(&self) -> usize {
        self.queries * self.head_dim
    }

    fn key_matrix(&self) -> usize {
        self.keys * self.head_dim
    }

    fn score_matrix(&self) -> usize {
        self.queries * self.keys
    }

    /// The key/value head of matrix `index` (`batch · heads + head`).
    fn key_head(&self, index: usize) -> usize {
        let (b, h) = (index / self.heads, index % self.heads);
        b * self.kv_heads + h / (self.heads / self.kv_heads)
    }

    /// The mask matrix of matrix `index`.
    fn mask_matrix(&self, index: usize) -> usize {
        let (b, h) = (index / self.heads, index % self.heads);
        let b = if self.mask_batch == 1 { 0 } else { b };
        let h = if self.mask_heads == 1 { 0 } else { h };
        b * self.mask_heads + h
    }
}

/// One `(batch, head)` matrix's operands.
struct Operands<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    blocked: &'a [u8],
}

impl<'a> Operands<'a> {
    fn of(
        index: usize,
        shape: &AttentionShape,
        q: &'a [f32],
        k: &'a [f32],
        v: &'a [f32],
        blocked: &'a [u8],
    ) -> Self {
        let key_head = shape.key_head(index);
        Self {
            q: &q[index * shape.query_matrix()..][..shape.query_matrix()],
            k: &k[key_head * shape.key_matrix()..][..shape.key_matrix()],
            v: &v[key_head * shape.key_matrix()..][..shape.key_matrix()],
            blocked: &blocked[shape.mask_matrix(index) * shape.score_matrix()..]
                [..shape.score_matrix()],
        }
    }
}

/// Query rows `rows` and the keys `0..span` that any of them can see.
struct Tile {
    rows: std::ops::Range<usize>,
    span: usize,
}

/// The tiles of a `[queries, keys]` mask.
fn tiles(blocked: &[u8], queries: usize, keys: usize) -> impl Iterator<Item = Tile> + '_ {
    (0..queries).step_by(QUERY_TILE).map(move |start| {
        let rows = start..(start + QUERY_TILE).min(queries);
        let span = rows
            .clone()
            .map(|row| visible_span(&blocked[row * keys..][..keys]))
            .max()
            .unwrap_or(0);
        Tile { rows, span }
    })
}

/// One past the last visible key of a mask row, or the whole row when none
/// is visible (its probabilities are then uniform over every key).
fn visible_span(blocked: &[u8]) -> usize {
    // Eight blocked keys at a time first: a causal row's blocked tail is long.
    let mut end = blocked.len();
    while end >= 8 && blocked[end - 8..end].iter().all(|&b| b != 0) {
        end -= 8;
    }
    blocked[..end]
        .iter()
        .rposition(|&b| b == 0)
        .map_or(blocked.len(), |last| last + 1)
}

/// `values` initialised.
///
/// # Safety
/// Every element of `values` has been written.
unsafe fn assume_init(values: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout; the caller vouches
    // that every element is initialised.
    unsafe { &mut *(std::ptr::from_mut(values) as *mut [f32]) }
}

/// The attention output `[batch, heads, queries, head_dim]` and the
/// probabilities `[batch, heads, queries, keys]` (which the backward reads).
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    blocked: &[u8],
    shape: AttentionShape,
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    shape.check(q.len(), k.len(), v.len(), blocked.len());
    let probs_len = shape.batch * shape.heads * shape.score_matrix();
    let (mut out, mut probs) = (Output::new(q.len()), Output::new(probs_len));
    out.slots()
        .par_chunks_mut(shape.query_matrix())
        .zip(probs.slots().par_chunks_mut(shape.score_matrix()))
        .enumerate()
        .for_each(|(index, (out, probs))| {
            let operands = Operands::of(index, &shape, q, k, v, blocked);
            wide(
                #[inline(always)]
                || attend_one(&operands, &shape, scale, out, probs),
            );
        });
    // SAFETY: the tasks cover both buffers, one matrix each, and
    // `attend_one` writes the whole of its output and probabilities.
    unsafe { (out.written(), probs.written()) }
}

/// One matrix's forward; initialises all of `out` and `probs`.
#[inline(always)]
fn attend_one(
    operands: &Operands,
    shape: &AttentionShape,
    scale: f32,
    out: &mut [MaybeUninit<f32>],
    probs: &mut [MaybeUninit<f32>],
) {
    let (keys, d) = (shape.keys, shape.head_dim);
    for Tile { rows, span } in tiles(operands.blocked, shape.queries, keys) {
        let m = rows.len();
        let tile_probs = &mut probs[rows.start * keys..rows.end * keys];
        product_into(
            Matrix::row_major(&operands.q[rows.start * d..rows.end * d], m, d),
            Matrix::row_major(&operands.k[..span * d], span, d).transposed(),
            Destination {
                out: tile_probs,
                row_stride: keys,
                accumulate: false,
            },
            Parallelism::None,
        );
        for row in tile_probs.chunks_exact_mut(keys) {
            row[span..].fill(MaybeUninit::new(0.0));
        }
        // SAFETY: the product wrote columns `..span` of every row, the fill the rest.
        let tile_probs = unsafe { assume_init(tile_probs) };
        for (row, blocked) in tile_probs
            .chunks_exact_mut(keys)
            .zip(operands.blocked[rows.start * keys..].chunks_exact(keys))
        {
            softmax_row(&mut row[..span], &blocked[..span], scale);
        }
        product_into(
            Matrix::rows_apart(tile_probs, m, span, keys),
            Matrix::row_major(&operands.v[..span * d], span, d),
            Destination {
                out: &mut out[rows.start * d..rows.end * d],
                row_stride: d,
                accumulate: false,
            },
            Parallelism::None,
        );
    }
}

/// The gradients `(dq, dk, dv)` of [`attention`]'s inputs, in their
/// shapes, from `grad` (that of the output) and the forward's `probs`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    blocked: &[u8],
    probs: &[f32],
    grad: &[f32],
    shape: AttentionShape,
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    shape.check(q.len(), k.len(), v.len(), blocked.len());
    let matrices = shape.batch * shape.heads;
    assert_eq!(
        [probs.len(), grad.len()],
        [matrices * shape.score_matrix(), q.len()],
        "attention backward: probabilities and gradient for {shape:?}"
    );
    // Key/value gradients per query head; summed over each group below.
    let per_head = matrices * shape.key_matrix();
    let (mut dk, mut dv) = (crate::zeros(per_head), crate::zeros(per_head));
    let mut dq = Output::new(q.len());
    dq.slots()
        .par_chunks_mut(shape.query_matrix())
        .zip(dk.par_chunks_mut(shape.key_matrix()))
        .zip(dv.par_chunks_mut(shape.key_matrix()))
        .enumerate()
        .for_each(|(index, ((dq, dk), dv))| {
            let operands = Operands::of(index, &shape, q, k, v, blocked);
            let upstream = (
                &probs[index * shape.score_matrix()..][..shape.score_matrix()],
                &grad[index * shape.query_matrix()..][..shape.query_matrix()],
            );
            let gradients = Gradients { dq, dk, dv };
            wide(
                #[inline(always)]
                || backward_one(&operands, upstream, &shape, scale, gradients),
            );
        });
    // SAFETY: the tasks cover `dq`, one matrix each, and `backward_one`
    // writes the whole of its query gradient.
    let dq = unsafe { dq.written() };
    let groups = shape.heads / shape.kv_heads;
    let summed = |per_head| sum_groups(per_head, groups, shape.key_matrix());
    (dq, summed(dk), summed(dv))
}

/// One matrix's input gradients: `dq` to initialise, `dk` and `dv` (zeroed) to add to.
struct Gradients<'a> {
    dq: &'a mut [MaybeUninit<f32>],
    dk: &'a mut [f32],
    dv: &'a mut [f32],
}

/// One matrix's backward, for `C = P·V`, `P = softmax(S)`, `S = scale·Q·Kᵀ`:
/// `dP = dC·Vᵀ`, `dS = P ⊙ (dP − rowsum(dP ⊙ P))·scale`, `dQ = dS·K`,
/// `dK = dSᵀ·Q`, `dV = Pᵀ·dC`, each over the tile's visible span.
#[inline(always)]
fn backward_one(
    operands: &Operands,
    (probs, grad): (&[f32], &[f32]),
    shape: &AttentionShape,
    scale: f32,
    gradients: Gradients,
) {
    let (keys, d) = (shape.keys, shape.head_dim);
    let Gradients { dq, dk, dv } = gradients;
    let mut grad_scores = vec![0.0f32; QUERY_TILE.min(shape.queries) * keys];
    for Tile { rows, span } in tiles(operands.blocked, shape.queries, keys) {
        let m = rows.len();
        let tile_grad = Matrix::row_major(&grad[rows.start * d..rows.end * d], m, d);
        let tile_probs =
            Matrix::rows_apart(&probs[rows.start * keys..rows.end * keys], m, span, keys);
        let scores_grad = &mut grad_scores[..m * span];
        product_into(
            tile_grad,
            Matrix::row_major(&operands.v[..span * d], span, d).transposed(),
            Destination {
                out: as_uninit(scores_grad),
                row_stride: span,
                accumulate: false,
            },
            Parallelism::None,
        );
        for ((row_grad, row_probs), blocked) in scores_grad
            .chunks_exact_mut(span)
            .zip(probs[rows.start * keys..].chunks_exact(keys))
            .zip(operands.blocked[rows.start * keys..].chunks_exact(keys))
        {
            softmax_row_backward(&row_probs[..span], row_grad, &blocked[..span], scale);
        }
        let scores_grad = Matrix::row_major(scores_grad, m, span);
        let tile_q = Matrix::row_major(&operands.q[rows.start * d..rows.end * d], m, d);
        let key_rows = |data| Matrix::row_major(data, span, d);
        product_into(
            scores_grad,
            key_rows(&operands.k[..span * d]),
            Destination {
                out: &mut dq[rows.start * d..rows.end * d],
                row_stride: d,
                accumulate: false,
            },
            Parallelism::None,
        );
        for (lhs, rhs, out) in [
            (scores_grad.transposed(), tile_q, &mut dk[..span * d]),
            (tile_probs.transposed(), tile_grad, &mut dv[..span * d]),
        ] {
            product_into(
                lhs,
                rhs,
                Destination {
                    out: as_uninit(out),
                    row_stride: d,
                    accumulate: true,
                },
                Parallelism::None,
            );
        }
    }
}

/// An initialised slice as a destination (writing `f32`s keeps it initialised).
fn as_uninit(values: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and every write through
    // the result stores an initialised `f32`.
    unsafe { &mut *(std::ptr::from_mut(values) as *mut [MaybeUninit<f32>]) }
}

/// `[batch, heads, …]` matrices summed over each group of `groups`
/// consecutive heads: `[batch, heads / groups, …]`.
fn sum_groups(per_head: Vec<f32>, groups: usize, matrix: usize) -> Vec<f32> {
    if groups == 1 {
        return per_head;
    }
    let mut summed = crate::zeros(per_head.len() / groups);
    summed
        .par_chunks_mut(matrix)
        .zip(per_head.par_chunks(groups * matrix))
        .for_each(|(out, group)| {
            for head in group.chunks_exact(matrix) {
                for (o, &x) in out.iter_mut().zip(head) {
                    *o += x;
                }
            }
        });
    summed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dense attention of one matrix, in f64, with its backward: the
    /// textbook formulas, blocked entries excluded (all keys for a row with
    /// none visible).
    struct Dense {
        out: Vec<f64>,
        probs: Vec<f64>,
        dq: Vec<f64>,
        dk: Vec<f64>,
        dv: Vec<f64>,
    }

    fn dense(
        o: &Operands,
        grad: &[f32],
        queries: usize,
        keys: usize,
        d: usize,
        scale: f32,
    ) -> Dense {
        let f = |x: f32| f64::from(x);
        let product = |a: &dyn Fn(usize, usize) -> f64,
                       b: &dyn Fn(usize, usize) -> f64,
                       (m, inner, n): (usize, usize, usize)| {
            (0..m * n)
                .map(|x| (0..inner).map(|t| a(x / n, t) * b(t, x % n)).sum::<f64>())
                .collect::<Vec<f64>>()
        };
        let scores = product(
            &|i, c| f(o.q[i * d + c]) * f(scale),
            &|c, j| f(o.k[j * d + c]),
            (queries, d, keys),
        );
        let visible = |i: usize, j: usize| o.blocked[i * keys + j] == 0;
        let mut probs = vec![0.0; queries * keys];
        for i in 0..queries {
            let row = &mut probs[i * keys..][..keys];
            if (0..keys).any(|j| visible(i, j)) {
                let max = (0..keys)
                    .filter(|&j| visible(i, j))
                    .map(|j| scores[i * keys + j])
                    .fold(f64::MIN, f64::max);
                for j in (0..keys).filter(|&j| visible(i, j)) {
                    row[j] = (scores[i * keys + j] - max).exp();
                }
            } else {
                row.fill(1.0);
            }
            let total: f64 = row.iter().sum();
            row.iter_mut().for_each(|p| *p /= total);
        }
        let p = |i: usize, j: usize| probs[i * keys + j];
        let dy = |i: usize, c: usize| f(grad[i * d + c]);
        let out = product(&p, &|j, c| f(o.v[j * d + c]), (queries, keys, d));
        let dprobs = product(&dy, &|c, j| f(o.v[j * d + c]), (queries, d, keys));
        let mut dscores = vec![0.0; queries * keys];
        for i in 0..queries {
            let dot: f64 = (0..keys).map(|j| dprobs[i * keys + j] * p(i, j)).sum();
            for j in (0..keys).filter(|&j| visible(i, j)) {
                dscores[i * keys + j] = f(scale) * p(i, j) * (dprobs[i * keys + j] - dot);
            }
        }
        let ds = |i: usize, j: usize| dscores[i * keys + j];
        let dq = product(&ds, &|j, c| f(o.k[j * d + c]), (queries, keys, d));
        let dk = product(
            &|j, i| ds(i, j),
            &|i, c| f(o.q[i * d + c]),
            (keys, queries, d),
        );
        let dv = product(&|j, i| p(i, j), &dy, (keys, queries, d));
        Dense {
            out,
            probs,
            dq,
            dk,
            dv,
        }
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 37 + seed * 11) % 23) as f32 - 11.0) / 9.0)
            .collect()
    }

    fn assert_close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// Causal over 80 positions (two tiles), batch row 1 right-padded after
    /// 50 tokens, batch row 0's query 0 blocked from every key; two query
    /// heads per key/value head.
    #[test]
    fn matches_dense_attention_with_padding_and_groups() {
        let shape = AttentionShape {
            batch: 2,
            heads: 4,
            kv_heads: 2,
            queries: 80,
            keys: 80,
            head_dim: 8,
            mask_batch: 2,
            mask_heads: 1,
        };
        let (n, d) = (shape.queries, shape.head_dim);
        let blocked: Vec<u8> = (0..2 * n * n)
            .map(|x| {
                let (b, i, j) = (x / (n * n), x / n % n, x % n);
                u8::from(j > i || (b == 1 && j >= 50) || (b == 0 && i == 0))
            })
            .collect();
        let q = values(shape.batch * shape.heads * n * d, 1);
        let k = values(shape.batch * shape.kv_heads * n * d, 2);
        let v = values(shape.batch * shape.kv_heads * n * d, 3);
        let grad = values(q.len(), 4);
        let scale = 0.35;
        let (out, probs) = attention(&q, &k, &v, &blocked, shape, scale);
        let (dq, dk, dv) = attention_backward(&q, &k, &v, &blocked, &probs, &grad, shape, scale);
        let mut want_dk = vec![0.0; k.len()];
        let mut want_dv = vec![0.0; v.len()];
        for index in 0..shape.batch * shape.heads {
            let o = Operands::of(index, &shape, &q, &k, &v, &blocked);
            let matrix_grad = &grad[index * n * d..][..n * d];
            let want = dense(&o, matrix_grad, n, n, d, scale);
            let at = |size: usize| index * size..(index + 1) * size;
            assert_close("out", &out[at(n * d)], &want.out);
            assert_close("probs", &probs[at(n * n)], &want.probs);
            assert_close("dq", &dq[at(n * d)], &want.dq);
            let key_head = shape.key_head(index);
            for (total, part) in [(&mut want_dk, &want.dk), (&mut want_dv, &want.dv)] {
                for (t, p) in total[key_head * n * d..][..n * d].iter_mut().zip(part) {
                    *t += p;
                }
            }
        }
        assert_close("dk", &dk, &want_dk);
        assert_close("dv", &dv, &want_dv);
    }

    /// A KV cache's offset mask: 3 new queries after 5 cached keys, one mask for every head.
    #[test]
    fn matches_dense_attention_after_cached_keys() {
        let shape = AttentionShape {
            batch: 1,
            heads: 2,
            kv_heads: 1,
            queries: 3,
            keys: 8,
            head_dim: 4,
            mask_batch: 1,
            mask_heads: 1,
        };
        let blocked: Vec<u8> = (0..3 * 8).map(|x| u8::from(x % 8 > 5 + x / 8)).collect();
        let q = values(2 * 3 * 4, 5);
        let (k, v) = (values(8 * 4, 6), values(8 * 4, 7));
        let grad = values(q.len(), 8);
        let (out, probs) = attention(&q, &k, &v, &blocked, shape, 0.5);
        let (dq, dk, dv) = attention_backward(&q, &k, &v, &blocked, &probs, &grad, shape, 0.5);
        let mut want_dk = vec![0.0; k.len()];
        let mut want_dv = vec![0.0; v.len()];
        for index in 0..2 {
            let o = Operands::of(index, &shape, &q, &k, &v, &blocked);
            let want = dense(&o, &grad[index * 12..][..12], 3, 8, 4, 0.5);
            assert_close("out", &out[index * 12..][..12], &want.out);
            assert_close("dq", &dq[index * 12..][..12], &want.dq);
            want_dk.iter_mut().zip(&want.dk).for_each(|(t, p)| *t += p);
            want_dv.iter_mut().zip(&want.dv).for_each(|(t, p)| *t += p);
        }
        assert_close("dk", &dk, &want_dk);
        assert_close("dv", &dv, &want_dv);
    }
}
