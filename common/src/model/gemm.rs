//! A safe, shape-checked wrapper over the `gemm` crate for row-major `f32` matrices.
//!
//! The convolution kernels need plain matrix products on slices they own; going through Candle
//! tensors for these would allocate on every call, and that allocation is what made stock Candle
//! slow for this model.

/// A row-major matrix view, optionally read transposed.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl<'a> Mat<'a> {
    /// A `rows x cols` row-major matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(
            data.len(),
            rows * cols,
            "matrix buffer does not match its shape"
        );
        Mat {
            data,
            rows,
            cols,
            transposed: false,
        }
    }

    /// The same storage read as its transpose.
    pub fn t(self) -> Self {
        Mat {
            transposed: !self.transposed,
            ..self
        }
    }

    fn shape(&self) -> (usize, usize) {
        if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    /// (row stride, column stride) of the logical matrix.
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (1, self.cols as isize)
        } else {
            (self.cols as isize, 1)
        }
    }
}

/// `dst (m x n, row-major) = a * b`, or `dst += a * b` when `accumulate` is set.
///
/// Runs on the calling thread: callers parallelise over images, which scales better for these
/// small matrices than splitting one product.
pub fn matmul(dst: &mut [f32], a: Mat<'_>, b: Mat<'_>, accumulate: bool) {
    let (m, k) = a.shape();
    let (kb, n) = b.shape();
    assert_eq!(k, kb, "inner dimensions differ");
    assert_eq!(dst.len(), m * n, "destination does not match m x n");
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    // SAFETY: the asserts above tie every pointer's extent to the (m, n, k) and strides that
    // gemm will walk, and `dst` is borrowed mutably so nothing else aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn matches_naive_product_in_every_orientation() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut got = vec![0.0; m * n];
        matmul(&mut got, Mat::new(&a, m, k), Mat::new(&b, k, n), false);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5);
        }
        // The same product from transposed storage.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut got_t = vec![1.0; m * n];
        matmul(
            &mut got_t,
            Mat::new(&at, k, m).t(),
            Mat::new(&bt, n, k).t(),
            true,
        );
        for (g, w) in got_t.iter().zip(&want) {
            assert!((g - (w + 1.0)).abs() < 1e-5, "accumulate adds to dst");
        }
    }
}
