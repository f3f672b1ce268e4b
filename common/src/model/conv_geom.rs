//! The static shape of one conv -> ReLU -> 2x2 max-pool stage.

/// Static shape of one conv stage: input `cin x h x w`, `cout` filters of `k x k`, zero padding `pad`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub cout: usize,
    /// Square kernel side.
    pub k: usize,
    /// Zero padding on every side.
    pub pad: usize,
}

impl ConvGeom {
    /// Height of the conv output before pooling.
    pub fn conv_h(&self) -> usize {
        self.h + 2 * self.pad + 1 - self.k
    }
    /// Width of the conv output before pooling.
    pub fn conv_w(&self) -> usize {
        self.w + 2 * self.pad + 1 - self.k
    }
    /// Height after the 2x2 pool.
    pub fn out_h(&self) -> usize {
        self.conv_h() / 2
    }
    /// Width after the 2x2 pool.
    pub fn out_w(&self) -> usize {
        self.conv_w() / 2
    }
    /// Values in one input image.
    pub(crate) fn in_len(&self) -> usize {
        self.cin * self.h * self.w
    }
    /// Values in one pooled output image.
    pub(crate) fn out_len(&self) -> usize {
        self.cout * self.out_h() * self.out_w()
    }
}
