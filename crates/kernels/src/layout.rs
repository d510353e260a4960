//! Memory layout helpers shared by the kernels.

/// `dst[c * rows + r] = src[r * cols + c]`: the transpose of a row-major `rows x cols` array,
/// copied in 32 x 32 blocks so both sides stay in cache. `dst` holds `rows * cols` elements.
pub(crate) fn transpose_into<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const B: usize = 32;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn transposes_sizes_that_are_not_multiples_of_the_block() {
        let (rows, cols) = (37, 70);
        let src: Vec<usize> = (0..rows * cols).collect();
        let mut dst = vec![0; rows * cols];
        super::transpose_into(&src, rows, cols, &mut dst);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(dst[c * rows + r], src[r * cols + c]);
            }
        }
    }
}
