//! Deployment: packed integer weights (`.ccq`), the integer-only engine, ONNX QDQ export.

pub mod convert;
pub mod engine;
pub mod format;
pub mod onnx;
pub mod pack;
