//! ccq: learned mixed-precision quantization of convolutional networks, implementing
//! competitive-collaborative quantization (CCQ, DAC 2020) on libtorch (through `tch`).
//! Deployment (the `.ccq` format and the integer engine) is the pure-Rust `ccq-runtime` crate.
//!
//! Every job is a function of [`pipeline`] that takes a plain configuration and an
//! [`events::Events`] observer (the library never prints; the observer can also cancel a long
//! job at its next saved boundary) and returns a typed result, or an [`Error`] by kind.
//!
//! Train a ConvNet, search a policy that compresses its weights 6× with CCQ, and export the
//! integer model (the full program is `examples/quantize_convnet.rs`):
//!
//! ```no_run
//! use ccq::data::DataFormat;
//! use ccq::events::Silent;
//! use ccq::model::ModelKind;
//! use ccq::pipeline::{self, DataConfig, ExportConfig, QuantizeConfig, Start, TrainConfig};
//! use ccq::search::target::Target;
//!
//! # fn main() -> ccq::Result<()> {
//! let data = DataConfig::at("/usr/share/datasets/fashion-mnist", DataFormat::Idx);
//! let fp = TrainConfig { data: data.clone(), ..TrainConfig::new(ModelKind::Convnet, "run/fp") };
//! pipeline::train(&fp, &Silent)?;
//! let mut search = QuantizeConfig::new("run/ccq", Start::Checkpoint("run/fp".into()),
//!     Some(Target::Compression(6.0)));
//! search.data = data;
//! let done = pipeline::quantize(&search, &Silent)?;
//! let policy = done.report.expect("finished: no stop_after, no cancellation");
//! println!("{:.2}x at test top-1 {:.2}%", policy.cost.compression, 100.0 * policy.test);
//! pipeline::export(&ExportConfig::new(done.run, "model.ccq"))?;
//! # Ok(())
//! # }
//! ```
//!
//! The modules follow the pipeline, each using only those before it: [`data`] → [`quant`]
//! (quantizers, policies) → [`model`] (networks, cost) → [`train`] → [`search`] → [`export`] →
//! [`report`] → [`pipeline`].

pub mod data;
pub mod device;
pub mod error;
pub mod events;
pub mod export;
pub mod host;
pub mod model;
pub mod names;
#[allow(
    clippy::all,
    rustdoc::bare_urls,
    rustdoc::invalid_html_tags,
    rustdoc::broken_intra_doc_links,
    rustdoc::invalid_rust_codeblocks
)]
pub mod onnx_proto;
pub mod pipeline;
pub mod quant;
pub mod report;
pub mod search;
pub mod train;

pub use error::{Error, Result};
