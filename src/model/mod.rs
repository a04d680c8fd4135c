//! Quantization-aware networks, their layer tables, and what a policy costs on them.

pub mod cost;
pub mod layers;
pub mod network;

pub use layers::QuantCtx;
pub use network::{LayerInfo, LayerKind, Model, ModelKind, ModelSpec, Network, build};
