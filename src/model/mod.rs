//! Quantization-aware networks, their layer tables, and what a policy costs on them.

pub mod builtin;
pub mod cost;
pub mod graph;
pub mod layers;
pub mod network;
pub mod onnx_import;
pub mod unfold;

pub use graph::{GraphIo, GraphSpec, NodeSpec, OpSpec};
pub use layers::QuantCtx;
pub use network::{LayerInfo, LayerKind, Model, ModelKind, ModelSpec, Network, NodeOp, build};
