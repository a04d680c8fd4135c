//! Copying tensors to host vectors.

use burn::prelude::*;

/// The values of a float tensor as `f32`, row-major.
pub fn to_f32<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("float tensor converts to f32")
}

/// The values of an int tensor as `i64`, row-major.
pub fn to_i64<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
    t.into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .expect("int tensor converts to i64")
}
