//! An exact in-memory cosine index: vectors are normalised once on insert, so a search
//! is one dot product per stored vector and a bounded top-k selection. No approximation:
//! its recall is that of brute force, by construction.
//!
//! A scan of 100k × 384 f32 rows reads 154 MB and is bound by memory bandwidth (≈15 ms
//! on one core here). So each row is also kept as 8-bit codes with a per-row scale and
//! a bound on the quantisation error: the search first scans the codes (a quarter of
//! the bytes, ≈2.5 ms), then rescores exactly, with the f32 rows, only the rows whose
//! upper bound reaches the k-th best lower bound. Every row of the true top-k passes
//! that test, so the result is *identical* to brute force over the f32 rows — the
//! codes only decide which rows are worth an exact look.
//!
//! Memory layout is flat and row-major (`dim` values per point) so that the scans are
//! linear walks the hardware prefetcher follows; deletions swap the last row into the
//! hole to keep it dense.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use bytes::Bytes;

use crate::ports::vector::{VectorError, VectorFilter, VectorHit, VectorPoint};

/// The points of one namespace.
#[derive(Debug, Clone, Default)]
pub struct ExactIndex {
    dim: usize,
    /// Unit-length rows.
    data: Vec<f32>,
    /// `round(x / scale)` per component, in [-127, 127].
    codes: Vec<i8>,
    /// Per row: `max |x_i| / 127`.
    scales: Vec<f32>,
    /// Per row: an upper bound on `|x·q − scale·(codes·q)|` for any unit `q`, i.e. the
    /// quantisation error's norm plus float rounding slack.
    errs: Vec<f32>,
    ids: Vec<Arc<str>>,
    payloads: Vec<Bytes>,
    slots: HashMap<Arc<str>, usize>,
}

/// Checks that a vector can be compared: non-empty, finite, not all zeros.
pub fn validate(vector: &[f32]) -> Result<(), VectorError> {
    if vector.is_empty() {
        return Err(VectorError::Invalid("the vector is empty".into()));
    }
    if vector.iter().any(|x| !x.is_finite()) {
        return Err(VectorError::Invalid(
            "the vector holds NaN or infinity".into(),
        ));
    }
    if norm(vector) == 0.0 {
        return Err(VectorError::Invalid(
            "the vector is all zeros, so it has no direction".into(),
        ));
    }
    Ok(())
}

fn norm(v: &[f32]) -> f32 {
    // f64 so that 2,000 squares cannot lose the small components.
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt() as f32
}

/// `v / |v|` (callers have validated `v`).
pub fn normalized(v: &[f32]) -> Vec<f32> {
    let n = norm(v);
    v.iter().map(|x| x / n).collect()
}

/// Dot product with eight independent accumulators: without them the compiler must add
/// in order and cannot use SIMD lanes; with them it vectorises the loop (SSE2 by default,
/// AVX2+FMA through [`dot`]'s runtime dispatch).
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn scan_avx2(data: &[f32], query: &[f32], out: &mut [f32]) {
    scan_portable(data, query, out);
}

#[inline(always)]
fn scan_portable(data: &[f32], query: &[f32], out: &mut [f32]) {
    for (row, score) in data.chunks_exact(query.len()).zip(out.iter_mut()) {
        *score = dot_lanes(row, query);
    }
}

/// `codes · query` with sixteen accumulators (vectorised like [`dot_lanes`]).
#[inline(always)]
fn dot_codes(codes: &[i8], query: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, ra) = codes.as_chunks::<16>();
    let (cq, rq) = query.as_chunks::<16>();
    for (x, y) in ca.iter().zip(cq) {
        for i in 0..16 {
            acc[i] += f32::from(x[i]) * y[i];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rq) {
        tail += f32::from(*x) * y;
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn scan_codes_portable(codes: &[i8], scales: &[f32], query: &[f32], out: &mut [f32]) {
    for ((row, scale), score) in codes
        .chunks_exact(query.len())
        .zip(scales)
        .zip(out.iter_mut())
    {
        *score = scale * dot_codes(row, query);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn scan_codes_avx2(codes: &[i8], scales: &[f32], query: &[f32], out: &mut [f32]) {
    scan_codes_portable(codes, scales, query, out);
}

/// Approximate scores (`scale · codes·query`) of every coded row into `out`.
fn scan_codes(codes: &[i8], scales: &[f32], query: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: as in `scan`: the CPU supports the features just checked.
        #[allow(unsafe_code)]
        unsafe {
            scan_codes_avx2(codes, scales, query, out)
        };
        return;
    }
    scan_codes_portable(codes, scales, query, out);
}

/// Quantises one unit row: its codes, scale and error bound.
fn quantize(unit: &[f32], codes: &mut Vec<i8>) -> (f32, f32) {
    let max = unit.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = max / 127.0;
    let mut err2 = 0.0f64;
    for &x in unit {
        let c = (x / scale).round().clamp(-127.0, 127.0);
        codes.push(c as i8);
        let e = f64::from(x) - f64::from(scale) * f64::from(c);
        err2 += e * e;
    }
    // Float rounding in the two dot products (approximate and exact) is at most about
    // d·ε each for unit vectors; 4·d·ε covers both plus the query's normalisation.
    let slack = 4.0 * unit.len() as f64 * f64::from(f32::EPSILON);
    (scale, (err2.sqrt() + slack) as f32 * 1.0001)
}

/// Scores every row of `data` against `query` into `out`.
pub fn scan(data: &[f32], query: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has just been checked to support AVX2 and FMA, the only
        // requirement `target_feature` adds; the function itself is safe Rust.
        #[allow(unsafe_code)]
        unsafe {
            scan_avx2(data, query, out)
        };
        return;
    }
    scan_portable(data, query, out);
}

/// The dot product of two equal-length slices.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut out = [0.0];
    scan(a, b, &mut out);
    out[0]
}

/// A candidate in the top-k heap. `Ord` puts the *worst* hit on top (lower score, or
/// equal score and greater id), so the heap's root is the one to evict.
#[derive(Debug)]
struct Candidate {
    score: f32,
    slot: usize,
    id: Arc<str>,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // "Greater" = worse: lower score first, then larger id.
        other
            .score
            .total_cmp(&self.score)
            .then_with(|| self.id.cmp(&other.id))
    }
}

/// Keeps the best `k` of a stream of (score, slot) in the contract's order.
struct TopK {
    k: usize,
    heap: BinaryHeap<Candidate>,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    #[inline]
    fn offer(&mut self, score: f32, slot: usize, ids: &[Arc<str>]) {
        if self.heap.len() == self.k {
            let Some(worst) = self.heap.peek() else {
                return;
            };
            // Cheap reject on the score alone; only exact ties compare ids.
            match score.total_cmp(&worst.score) {
                Ordering::Less => return,
                Ordering::Equal if ids[slot] >= worst.id => return,
                _ => {}
            }
            self.heap.pop();
        }
        self.heap.push(Candidate {
            score,
            slot,
            id: ids[slot].clone(),
        });
    }

    fn into_sorted(self) -> Vec<Candidate> {
        // Ascending by `Ord` = best first.
        self.heap.into_sorted_vec()
    }
}

impl ExactIndex {
    /// The exact score of one row.
    fn exact(&self, slot: usize, q: &[f32]) -> f32 {
        clamp(dot(&self.data[slot * self.dim..(slot + 1) * self.dim], q))
    }

    /// Two passes: approximate scores from the codes give, for each row, a lower and an
    /// upper bound on its exact score; `floor` = the k-th best lower bound. A row whose
    /// upper bound is below `floor` has k rows certainly better, so only the others are
    /// rescored exactly — which includes every row of the true top-k and its ties.
    fn scan_all(&self, q: &[f32], top: &mut TopK) {
        let n = self.len();
        if n <= top.k {
            for slot in 0..n {
                top.offer(self.exact(slot, q), slot, &self.ids);
            }
            return;
        }
        let mut approx = vec![0.0f32; n];
        scan_codes(&self.codes, &self.scales, q, &mut approx);
        // k-th largest lower bound, with a min-heap of k totally-ordered floats.
        let mut lows: BinaryHeap<std::cmp::Reverse<OrdF32>> = BinaryHeap::with_capacity(top.k);
        for (a, e) in approx.iter().zip(&self.errs) {
            let low = OrdF32(a - e);
            if lows.len() < top.k {
                lows.push(std::cmp::Reverse(low));
            } else if lows.peek().is_some_and(|m| low > m.0) {
                lows.pop();
                lows.push(std::cmp::Reverse(low));
            }
        }
        let floor = lows.peek().map_or(f32::NEG_INFINITY, |m| m.0.0);
        for (slot, (a, e)) in approx.iter().zip(&self.errs).enumerate() {
            if a + e >= floor {
                top.offer(self.exact(slot, q), slot, &self.ids);
            }
        }
    }

    /// An empty index whose dimension the first insert fixes.
    pub fn new() -> Self {
        Self::default()
    }

    /// The dimension (0 while empty).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// How many points.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no points.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Bytes held (vectors, ids, payloads), for metrics and benchmarks.
    pub fn heap_bytes(&self) -> usize {
        self.data.capacity() * 4
            + self.codes.capacity()
            + (self.scales.capacity() + self.errs.capacity()) * 4
            + self.ids.iter().map(|i| i.len() + 16).sum::<usize>()
            + self.payloads.iter().map(Bytes::len).sum::<usize>()
    }

    /// Checks that `len` fits this namespace.
    pub fn check_dim(&self, len: usize) -> Result<(), VectorError> {
        if self.dim != 0 && len != self.dim {
            return Err(VectorError::DimensionMismatch {
                expected: self.dim,
                got: len,
            });
        }
        Ok(())
    }

    /// Validates a whole batch against this namespace and itself without changing
    /// anything, so that an upsert is all-or-nothing.
    pub fn check_batch(&self, points: &[VectorPoint]) -> Result<(), VectorError> {
        let mut dim = self.dim;
        for p in points {
            validate(&p.vector)?;
            if dim != 0 && p.vector.len() != dim {
                return Err(VectorError::DimensionMismatch {
                    expected: dim,
                    got: p.vector.len(),
                });
            }
            dim = p.vector.len();
        }
        Ok(())
    }

    /// Inserts or replaces one point whose vector is already unit-length and of the
    /// right dimension (as [`check_batch`](Self::check_batch) + [`normalized`] ensure).
    pub fn insert_normalized(&mut self, id: &str, unit: &[f32], payload: Bytes) {
        if self.dim == 0 {
            self.dim = unit.len();
        }
        debug_assert_eq!(unit.len(), self.dim);
        let mut codes = Vec::with_capacity(unit.len());
        let (scale, err) = quantize(unit, &mut codes);
        if let Some(&slot) = self.slots.get(id) {
            let rows = slot * self.dim..(slot + 1) * self.dim;
            self.data[rows.clone()].copy_from_slice(unit);
            self.codes[rows].copy_from_slice(&codes);
            self.scales[slot] = scale;
            self.errs[slot] = err;
            self.payloads[slot] = payload;
            return;
        }
        let id: Arc<str> = Arc::from(id);
        self.slots.insert(id.clone(), self.ids.len());
        self.ids.push(id);
        self.data.extend_from_slice(unit);
        self.codes.extend_from_slice(&codes);
        self.scales.push(scale);
        self.errs.push(err);
        self.payloads.push(payload);
    }

    /// Validates and inserts a batch (all or nothing); returns how many.
    pub fn upsert(&mut self, points: &[VectorPoint]) -> Result<usize, VectorError> {
        self.check_batch(points)?;
        for p in points {
            self.insert_normalized(&p.id, &normalized(&p.vector), p.payload.clone());
        }
        Ok(points.len())
    }

    /// Removes one id; whether it was there.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(slot) = self.slots.remove(id) else {
            return false;
        };
        let last = self.ids.len() - 1;
        if slot != last {
            let (dim, moved) = (self.dim, self.ids[last].clone());
            self.data
                .copy_within(last * dim..(last + 1) * dim, slot * dim);
            self.ids.swap(slot, last);
            self.payloads.swap(slot, last);
            self.slots.insert(moved, slot);
        }
        self.data.truncate(last * self.dim);
        self.codes.truncate(last * self.dim);
        self.scales.pop();
        self.errs.pop();
        self.ids.pop();
        self.payloads.pop();
        if self.ids.is_empty() {
            // The port's contract: an emptied namespace takes any dimension again.
            self.dim = 0;
            self.data = Vec::new();
            self.codes = Vec::new();
        }
        true
    }

    /// The exact top-k by cosine, best first, ties by id.
    pub fn search(
        &self,
        query: &[f32],
        top_k: usize,
        filter: &VectorFilter,
    ) -> Result<Vec<VectorHit>, VectorError> {
        validate(query)?;
        if self.is_empty() {
            return Ok(Vec::new());
        }
        self.check_dim(query.len())?;
        if top_k == 0 {
            return Ok(Vec::new());
        }
        let q = normalized(query);
        let mut top = TopK::new(top_k);
        match &filter.ids {
            Some(ids) => {
                for id in ids {
                    if let Some(&slot) = self.slots.get(id.as_str()) {
                        top.offer(self.exact(slot, &q), slot, &self.ids);
                    }
                }
            }
            None => self.scan_all(&q, &mut top),
        }
        Ok(top
            .into_sorted()
            .into_iter()
            .map(|c| VectorHit {
                id: c.id.to_string(),
                score: c.score,
                payload: self.payloads[c.slot].clone(),
            })
            .collect())
    }
}

/// An `f32` ordered by `total_cmp`, for heaps.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdF32(f32);
impl Eq for OrdF32 {}
impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF32 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Rounding can put the cosine of two unit vectors a hair outside [-1, 1].
fn clamp(s: f32) -> f32 {
    s.clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, v: &[f32]) -> VectorPoint {
        VectorPoint {
            id: id.into(),
            vector: v.to_vec(),
            payload: Bytes::from(id.to_owned()),
        }
    }

    #[test]
    fn dot_matches_naive_for_every_tail_length() {
        for len in 1..40 {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-4, "len {len}");
        }
    }

    #[test]
    fn remove_keeps_the_rest_searchable() {
        let mut ix = ExactIndex::new();
        ix.upsert(&[
            p("a", &[1.0, 0.0]),
            p("b", &[0.0, 1.0]),
            p("c", &[1.0, 1.0]),
        ])
        .expect("upsert");
        assert!(ix.remove("a"));
        assert!(!ix.remove("a"));
        let hits = ix
            .search(&[1.0, 0.0], 10, &VectorFilter::default())
            .expect("search");
        let ids: Vec<_> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["c", "b"]);
        assert_eq!(ix.dim(), 2);
        assert!(ix.remove("b") && ix.remove("c"));
        assert_eq!(
            ix.dim(),
            0,
            "an emptied namespace takes any dimension again"
        );
    }

    /// The two-pass search returns exactly brute force's top-k, on random data and on
    /// near-duplicates whose scores differ by less than the quantisation error.
    #[test]
    fn two_pass_search_is_brute_force() {
        let dim = 48;
        let mut pts: Vec<VectorPoint> = (0..3000)
            .map(|i| {
                p(
                    &format!("r{i}"),
                    &crate::testing::vectors::random_vector(i + 7, dim),
                )
            })
            .collect();
        let base = crate::testing::vectors::random_vector(99, dim);
        for j in 0..200 {
            let mut v = base.clone();
            v[j % dim] += 1e-4 * (j as f32);
            pts.push(p(&format!("near{j}"), &v));
        }
        let mut ix = ExactIndex::new();
        ix.upsert(&pts).expect("upsert");
        for qi in 0..40u64 {
            let q = if qi % 2 == 0 {
                base.clone()
            } else {
                crate::testing::vectors::random_vector(5000 + qi, dim)
            };
            let qn = normalized(&q);
            let mut truth: Vec<(f32, &str)> = pts
                .iter()
                .map(|p| (clamp(dot(&normalized(&p.vector), &qn)), p.id.as_str()))
                .collect();
            truth.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
            let hits = ix.search(&q, 10, &VectorFilter::default()).expect("search");
            let got: Vec<(f32, &str)> = hits.iter().map(|h| (h.score, h.id.as_str())).collect();
            assert_eq!(got, truth[..10].to_vec(), "query {qi}");
        }
    }

    #[test]
    fn top_k_matches_a_full_sort_on_many_ties() {
        let mut ix = ExactIndex::new();
        let pts: Vec<_> = (0..500)
            .map(|i| {
                p(
                    &format!("id{:03}", (i * 7919) % 500),
                    &[(i % 5) as f32 + 1.0, 1.0],
                )
            })
            .collect();
        ix.upsert(&pts).expect("upsert");
        let hits = ix
            .search(&[1.0, 0.0], 37, &VectorFilter::default())
            .expect("search");
        let mut all = ix
            .search(&[1.0, 0.0], 1000, &VectorFilter::default())
            .expect("search");
        for w in all.windows(2) {
            assert!(w[0].score > w[1].score || (w[0].score == w[1].score && w[0].id < w[1].id));
        }
        all.truncate(37);
        assert_eq!(hits, all);
    }
}
