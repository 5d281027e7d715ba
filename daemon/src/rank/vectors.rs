//! Block vectors in memory as 8-bit integers with one scale per vector: a quarter of the memory
//! of `f32` (384 bytes instead of 1,536 for MiniLM), and cosine scores within about 1% of a
//! component's largest value of the exact ones. A search quantizes its query the same way once
//! ([`QueryVector`]) and scores each row by an integer dot product (`simsimd`: AVX2, AVX-512 or
//! NEON, chosen at run time). `--set quantize_vectors=false` keeps `f32` to measure the
//! difference.

use simsimd::SpatialSimilarity;

use super::weights;

/// A query vector prepared once per search: as given, and as 8-bit codes with a scale, so that
/// each stored row is scored by an integer dot product (SIMD, via `simsimd`).
pub struct QueryVector {
    exact: Vec<f32>,
    codes: Vec<i8>,
    scale: f32,
}

impl QueryVector {
    pub fn new(vector: &[f32]) -> QueryVector {
        let (codes, scale) = quantize(vector);
        QueryVector {
            exact: vector.to_vec(),
            codes,
            scale,
        }
    }

    pub fn dims(&self) -> usize {
        self.exact.len()
    }
}

/// 8-bit codes of `vector` and the value of code 1 (the largest component maps to ±127).
fn quantize(vector: &[f32]) -> (Vec<i8>, f32) {
    let largest = vector.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
    let codes = vector
        .iter()
        .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (codes, scale)
}

pub struct Vectors {
    dims: usize,
    /// Read once: a weight changed later must not mix the two layouts.
    quantize: bool,
    exact: Vec<f32>,
    codes: Vec<i8>,
    /// Per vector: the value of code 1.
    scales: Vec<f32>,
}

impl Vectors {
    pub fn with_capacity(rows: usize, dims: usize) -> Vectors {
        let quantize = weights::w().quantize_vectors;
        Vectors {
            dims,
            quantize,
            exact: Vec::with_capacity(if quantize { 0 } else { rows * dims }),
            codes: Vec::with_capacity(if quantize { rows * dims } else { 0 }),
            scales: Vec::with_capacity(if quantize { rows } else { 0 }),
        }
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Appends `vector`, or zeros when it is not `dims` long (a block not embedded yet).
    pub fn push(&mut self, vector: &[f32]) {
        if vector.len() != self.dims {
            if self.quantize {
                self.codes.extend(std::iter::repeat_n(0, self.dims));
                self.scales.push(1.0);
            } else {
                self.exact.extend(std::iter::repeat_n(0.0, self.dims));
            }
            return;
        }
        if !self.quantize {
            self.exact.extend_from_slice(vector);
            return;
        }
        let (codes, scale) = quantize(vector);
        self.codes.extend(codes);
        self.scales.push(scale);
    }

    /// Adds vector `row` to `sum` (`dims` long).
    pub fn add_to(&self, row: usize, sum: &mut [f32]) {
        let range = row * self.dims..(row + 1) * self.dims;
        if !self.quantize {
            for (s, v) in sum.iter_mut().zip(&self.exact[range]) {
                *s += v;
            }
            return;
        }
        let scale = self.scales[row];
        for (s, &c) in sum.iter_mut().zip(&self.codes[range]) {
            *s += f32::from(c) * scale;
        }
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.exact.capacity() * 4 + self.codes.capacity() + self.scales.capacity() * 4
    }

    /// The dot product of vector `row` with `query`.
    pub fn dot(&self, row: usize, query: &QueryVector) -> f32 {
        let range = row * self.dims..(row + 1) * self.dims;
        if !self.quantize {
            return f32::dot(&self.exact[range], &query.exact).unwrap_or(0.0) as f32;
        }
        let sum = i8::dot(&self.codes[range], &query.codes).unwrap_or(0.0) as f32;
        sum * self.scales[row] * query.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantized_dot_products_stay_close_to_exact() {
        let dims = 384;
        let unit = |seed: u32| -> Vec<f32> {
            let v: Vec<f32> = (0..dims)
                .map(|i| (((i as u32 + 1) * (seed * 2 + 7)) % 97) as f32 - 48.0)
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        };
        let mut vectors = Vectors::with_capacity(3, dims);
        assert!(vectors.quantize, "quantized by default");
        let rows: Vec<Vec<f32>> = (1..=3).map(unit).collect();
        for row in &rows {
            vectors.push(row);
        }
        vectors.push(&[]);
        let exact_query = unit(9);
        let query = QueryVector::new(&exact_query);
        for (i, row) in rows.iter().enumerate() {
            let exact: f32 = row.iter().zip(&exact_query).map(|(a, b)| a * b).sum();
            assert!((vectors.dot(i, &query) - exact).abs() < 0.01);
        }
        assert_eq!(vectors.dot(3, &query), 0.0);
    }
}
