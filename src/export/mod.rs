//! Deployment: the conversion to an integer model and the ONNX QDQ export. The `.ccq` format,
//! weight packing and the integer engine live in the pure-Rust `ccq-runtime` crate.

pub use ccq_runtime::{engine, format, pack, reference};

pub mod convert;
pub mod int_check;
pub mod onnx;
