//! Minimum-cost assignment (the Hungarian method) for rectangular cost matrices.
//!
//! Shortest augmenting paths with dual potentials (Kuhn 1955, Munkres 1957; the O(n^2 m) form of
//! Jonker & Volgenant 1987 as given in e.g. Burkard, Dell'Amico & Martello, "Assignment Problems",
//! 2009, Alg. 4.10). For an `n x m` matrix with `n <= m` every row is assigned a distinct column;
//! otherwise the transpose is solved.

use ndarray::Array2;

/// Assignment minimising the total cost: `result[i] = Some(j)` when row `i` is assigned column `j`.
/// With more rows than columns some rows stay unassigned. Non-finite costs are treated as very large.
pub fn assign(cost: &Array2<f64>) -> Vec<Option<usize>> {
    let (n, m) = cost.dim();
    if n == 0 || m == 0 {
        return vec![None; n];
    }
    if n > m {
        let transposed = cost.t().to_owned();
        let cols = assign(&transposed);
        let mut rows = vec![None; n];
        for (j, i) in cols.into_iter().enumerate() {
            if let Some(i) = i {
                rows[i] = Some(j);
            }
        }
        return rows;
    }
    // Replace non-finite entries by a value larger than any finite total.
    let finite_max = cost
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |a, &b| a.max(b.abs()));
    let big = (finite_max + 1.0) * (n as f64 + 1.0);
    let c = |i: usize, j: usize| {
        let v = cost[[i, j]];
        if v.is_finite() { v } else { big }
    };
    // 1-based arrays with a virtual column 0, as in the classic formulation.
    let mut u = vec![0.0f64; n + 1];
    let mut v = vec![0.0f64; m + 1];
    let mut p = vec![0usize; m + 1]; // p[j]: row assigned to column j (0 = none)
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0usize;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0usize;
            for j in 1..=m {
                if used[j] {
                    continue;
                }
                let cur = c(i0 - 1, j - 1) - u[i0] - v[j];
                if cur < minv[j] {
                    minv[j] = cur;
                    way[j] = j0;
                }
                if minv[j] < delta {
                    delta = minv[j];
                    j1 = j;
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut result = vec![None; n];
    for j in 1..=m {
        if p[j] != 0 {
            result[p[j] - 1] = Some(j - 1);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn total(cost: &Array2<f64>, a: &[Option<usize>]) -> f64 {
        a.iter()
            .enumerate()
            .filter_map(|(i, j)| j.map(|j| cost[[i, j]]))
            .sum()
    }

    /// Slow reference: try every injective assignment of the smaller side.
    fn brute_force(cost: &Array2<f64>) -> f64 {
        let (n, m) = cost.dim();
        fn rec(cost: &Array2<f64>, i: usize, used: &mut Vec<bool>, acc: f64, best: &mut f64) {
            let (n, m) = cost.dim();
            if i == n {
                *best = best.min(acc);
                return;
            }
            for j in 0..m {
                if !used[j] {
                    used[j] = true;
                    rec(cost, i + 1, used, acc + cost[[i, j]], best);
                    used[j] = false;
                }
            }
        }
        let c = if n <= m {
            cost.clone()
        } else {
            cost.t().to_owned()
        };
        let mut best = f64::INFINITY;
        rec(&c, 0, &mut vec![false; c.ncols()], 0.0, &mut best);
        best
    }

    #[test]
    fn matches_brute_force_on_random_matrices() {
        let mut r = Rng::new(5, 0);
        for trial in 0..200 {
            let n = 1 + trial % 5;
            let m = 1 + (trial / 5) % 6;
            let cost = Array2::from_shape_fn((n, m), |_| (r.uniform() * 10.0).round());
            let a = assign(&cost);
            let assigned: Vec<usize> = a.iter().flatten().copied().collect();
            assert_eq!(assigned.len(), n.min(m));
            let mut dedup = assigned.clone();
            dedup.sort_unstable();
            dedup.dedup();
            assert_eq!(dedup.len(), assigned.len(), "columns reused");
            assert!(
                (total(&cost, &a) - brute_force(&cost)).abs() < 1e-9,
                "trial {trial}: {cost:?}"
            );
        }
    }

    #[test]
    fn empty_and_infinite_costs() {
        assert!(assign(&Array2::zeros((0, 3))).is_empty());
        assert_eq!(assign(&Array2::zeros((2, 0))), vec![None, None]);
        let mut c = Array2::from_elem((2, 2), f64::INFINITY);
        c[[0, 1]] = 1.0;
        c[[1, 0]] = 2.0;
        assert_eq!(assign(&c), vec![Some(1), Some(0)]);
    }
}
