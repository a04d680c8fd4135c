//! ccq: learned mixed-precision quantization of convolutional networks, implementing
//! competitive-collaborative quantization (CCQ, DAC 2020) on libtorch (through `tch`).
//! Deployment (the `.ccq` format and the integer engine) is the pure-Rust `ccq-runtime` crate.
//!
//! The modules follow the pipeline: [`data`] → [`model`] → [`quant`] → [`train`] → [`search`].

pub mod data;
pub mod device;
pub mod error;
pub mod events;
pub mod export;
pub mod host;
pub mod model;
pub mod names;
pub mod pipeline;
pub mod quant;
pub mod report;
pub mod search;
pub mod train;

pub use error::{Error, Result};
