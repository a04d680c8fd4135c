//! Deployment: the conversion to an integer model and the ONNX QDQ export. The `.ccq` format,
//! weight packing and the integer engine live in the pure-Rust `ccq-runtime` crate.

pub use ccq_runtime::{engine, format, pack, reference};

pub mod convert;
pub mod onnx;
#[allow(
    clippy::all,
    rustdoc::bare_urls,
    rustdoc::invalid_html_tags,
    rustdoc::broken_intra_doc_links,
    rustdoc::invalid_rust_codeblocks
)]
pub mod onnx_proto;
