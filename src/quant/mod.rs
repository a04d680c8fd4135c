//! Quantizers, bit policies and the cost model.

pub mod calibrate;
pub mod cost;
pub mod policy;
pub mod quantizer;
