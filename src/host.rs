//! Copying tensors to host vectors.

use tch::{Device, Kind, Tensor};

/// The values of a tensor as `f32`, row-major (copied to the host).
pub fn to_f32(t: &Tensor) -> Vec<f32> {
    let t = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .flatten(0, -1);
    Vec::<f32>::try_from(&t).expect("a float tensor converts to Vec<f32>")
}

/// The values of a tensor as `i64`, row-major (copied to the host).
pub fn to_i64(t: &Tensor) -> Vec<i64> {
    let t = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Int64)
        .contiguous()
        .flatten(0, -1);
    Vec::<i64>::try_from(&t).expect("an integer tensor converts to Vec<i64>")
}

/// A float tensor of `shape` holding `values`, on `device`.
pub fn tensor(values: &[f32], shape: &[i64], device: Device) -> Tensor {
    Tensor::from_slice(values).view(shape).to_device(device)
}
