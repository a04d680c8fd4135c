//! Quantizers and bit policies (below the model: the model's layers use them).

pub mod policy;
pub mod quantizer;
