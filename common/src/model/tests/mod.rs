//! The model's tests: kernels against Candle's ops, gradients against finite differences and
//! against themselves under every split of a batch and every thread count.

mod checkpoint;
mod classifier_gradients;
mod conv_reference;
mod finite_differences;
mod inputs;
mod kernel_paths;
mod split_invariance;
