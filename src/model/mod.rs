//! Quantization-aware networks and their layer tables.

pub mod layers;
pub mod network;

pub use layers::QuantCtx;
pub use network::{LayerInfo, LayerKind, Model, ModelKind, ModelSpec, Network, build};
