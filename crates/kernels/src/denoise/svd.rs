//! Truncated SVD by randomized range finding, and the small symmetric eigensolver it ends with.
//!
//! [`truncated_svd`] follows Halko, Martinsson & Tropp (2011), "Finding structure with randomness",
//! algorithms 4.4 (randomized subspace iteration) and 5.1 (direct SVD of the projected matrix):
//!
//! ```text
//! Y = A Ω            Ω: n x l standard normal, l = rank + oversampling
//! Q = orth(Y)        then q times: Q = orth(A orth(Aᵀ Q))   (power iterations)
//! B = Qᵀ A           l x n
//! B Bᵀ = W Λ Wᵀ      symmetric eigendecomposition (cyclic Jacobi, f64)
//! U = Q W,  σᵢ = sqrt(λᵢ),  vᵢ = Bᵀ wᵢ / σᵢ
//! ```
//!
//! With `l` at least the rank of `A` the result is exact up to rounding; otherwise the leading
//! singular triplets carry an error that the power iterations shrink geometrically in
//! `σ_{l+1} / σᵢ`. The large products run in f32 through ndarray's GEMM; the orthonormalisation and
//! the eigenproblem (sizes `l`) run in f64.

use ndarray::{Array2, ArrayView2, Axis};

use crate::rng::Rng;

/// The leading singular triplets of a matrix: `A ≈ U diag(s) Vᵀ`.
#[derive(Debug, Clone)]
pub struct TruncatedSvd {
    /// Left singular vectors as columns (m x k), orthonormal.
    pub u: Array2<f32>,
    /// Singular values, descending, all positive.
    pub s: Vec<f64>,
    /// Right singular vectors as rows (k x n), orthonormal.
    pub vt: Array2<f32>,
}

/// The `rank` leading singular triplets of `a` (m x n) by randomized subspace iteration with
/// `oversample` extra probe vectors and `power_iterations` passes. Fewer than `rank` triplets come
/// back when `a` has lower numerical rank (singular values below `1e-6` of the largest are
/// dropped); an all-zero matrix gives none.
pub fn truncated_svd(
    a: ArrayView2<f32>,
    rank: usize,
    oversample: usize,
    power_iterations: usize,
    rng: &mut Rng,
) -> TruncatedSvd {
    let (m, n) = a.dim();
    let l = (rank + oversample).min(m).min(n);
    let empty = || TruncatedSvd {
        u: Array2::zeros((m, 0)),
        s: Vec::new(),
        vt: Array2::zeros((0, n)),
    };
    if l == 0 || rank == 0 {
        return empty();
    }
    let omega = Array2::from_shape_simple_fn((n, l), || rng.normal() as f32);
    let mut q = orthonormal_columns(&a.dot(&omega));
    for _ in 0..power_iterations {
        let z = orthonormal_columns(&a.t().dot(&q));
        q = orthonormal_columns(&a.dot(&z));
    }
    let b = q.t().dot(&a);
    let gram = gram_rows(&b);
    let (lambda, w) = symmetric_eigen(&gram);
    let top = lambda.first().copied().unwrap_or(0.0).max(0.0).sqrt();
    let keep = lambda
        .iter()
        .take(rank)
        .take_while(|&&x| top > 0.0 && x.max(0.0).sqrt() > 1e-6 * top)
        .count();
    if keep == 0 {
        return empty();
    }
    let w_keep = w.slice(ndarray::s![.., ..keep]).mapv(|x| x as f32);
    let u = q.dot(&w_keep);
    let s: Vec<f64> = lambda[..keep].iter().map(|x| x.sqrt()).collect();
    let mut vt = w_keep.t().dot(&b);
    for (mut row, &si) in vt.axis_iter_mut(Axis(0)).zip(&s) {
        row.mapv_inplace(|x| (f64::from(x) / si) as f32);
    }
    TruncatedSvd { u, s, vt }
}

/// An orthonormal basis of the column space of `y` (modified Gram-Schmidt run twice, in f64).
/// Columns that are dependent on earlier ones to f32 precision (less than `1e-5` of their norm
/// left after projection) come back as zero columns.
pub fn orthonormal_columns(y: &Array2<f32>) -> Array2<f32> {
    let (m, k) = y.dim();
    let mut cols: Vec<Vec<f64>> = (0..k)
        .map(|j| y.column(j).iter().map(|&v| f64::from(v)).collect())
        .collect();
    for j in 0..k {
        let original = norm(&cols[j]);
        for _pass in 0..2 {
            for i in 0..j {
                let (done, rest) = cols.split_at_mut(j);
                let qi = &done[i];
                let dot: f64 = qi.iter().zip(&rest[0]).map(|(a, b)| a * b).sum();
                for (c, q) in rest[0].iter_mut().zip(qi) {
                    *c -= dot * q;
                }
            }
        }
        let r = norm(&cols[j]);
        if original > 0.0 && r > 1e-5 * original {
            cols[j].iter_mut().for_each(|c| *c /= r);
        } else {
            cols[j].iter_mut().for_each(|c| *c = 0.0);
        }
    }
    Array2::from_shape_fn((m, k), |(i, j)| cols[j][i] as f32)
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// `B Bᵀ` accumulated in f64.
fn gram_rows(b: &Array2<f32>) -> Array2<f64> {
    let k = b.nrows();
    let rows: Vec<Vec<f64>> = b
        .axis_iter(Axis(0))
        .map(|r| r.iter().map(|&v| f64::from(v)).collect())
        .collect();
    let mut g = Array2::zeros((k, k));
    for i in 0..k {
        for j in 0..=i {
            let d: f64 = rows[i].iter().zip(&rows[j]).map(|(a, b)| a * b).sum();
            g[[i, j]] = d;
            g[[j, i]] = d;
        }
    }
    g
}

/// Eigenvalues (descending) and eigenvectors (as columns, same order) of a symmetric matrix, by
/// the cyclic Jacobi method (Golub & Van Loan, "Matrix Computations", 4th ed., §8.5): rotations
/// `A ← Pᵀ A P` zero one off-diagonal pair at a time until the off-diagonal mass falls below
/// `1e-30` of the total (at most 100 sweeps). Meant for the small (tens of rows) matrices of
/// [`truncated_svd`]; cost O(n³) per sweep.
pub fn symmetric_eigen(a: &Array2<f64>) -> (Vec<f64>, Array2<f64>) {
    let n = a.nrows();
    let mut a = a.clone();
    let mut v = Array2::<f64>::eye(n);
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let mut off = 0.0;
        for p in 0..n {
            for q in p + 1..n {
                off += a[[p, q]] * a[[p, q]];
            }
        }
        if off <= 1e-30 * total || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[[p, q]];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[[q, q]] - a[[p, p]]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (x, y) = (a[[k, p]], a[[k, q]]);
                    a[[k, p]] = c * x - s * y;
                    a[[k, q]] = s * x + c * y;
                }
                for k in 0..n {
                    let (x, y) = (a[[p, k]], a[[q, k]]);
                    a[[p, k]] = c * x - s * y;
                    a[[q, k]] = s * x + c * y;
                }
                for k in 0..n {
                    let (x, y) = (v[[k, p]], v[[k, q]]);
                    v[[k, p]] = c * x - s * y;
                    v[[k, q]] = s * x + c * y;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[[j, j]].total_cmp(&a[[i, i]]));
    let values = order.iter().map(|&i| a[[i, i]]).collect();
    let vectors = Array2::from_shape_fn((n, n), |(r, c)| v[[r, order[c]]]);
    (values, vectors)
}
