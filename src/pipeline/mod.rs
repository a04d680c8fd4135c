//! One function per job, each taking a plain configuration (validated the same way for new
//! and resumed runs) and an [`Events`](crate::events::Events) observer, and returning a typed
//! result. The command line is a thin layer over these.
//!
//! | job | config | function | result |
//! |---|---|---|---|
//! | full-precision training | [`TrainConfig`] | [`train()`] | [`Trained`] |
//! | quantization-aware training | [`QatConfig`] | [`qat()`] | [`Qat`] |
//! | CCQ search (new or resumed) | [`QuantizeConfig`] | [`quantize()`] | [`Quantized`] |
//! | CCQ against the baselines | [`CompareConfig`] | [`compare()`] | [`Compared`] |
//! | export to `.ccq` / ONNX | [`ExportConfig`] | [`export()`] | [`Exported`] |
//! | test accuracy | [`EvalConfig`] | [`evaluate()`] | [`Evaluated`] |

pub mod bench;
pub mod compare;
pub mod data;
pub mod evaluate;
pub mod export;
pub mod import;
pub mod qat;
pub mod quantize;
pub mod report;
pub mod search_settings;
pub mod session;
pub mod train;

pub use bench::{
    BenchConfig, BenchMode, LoaderBenchConfig, LoaderTiming, Timing, bench, bench_loader,
};
pub use compare::{CompareConfig, Compared, compare};
pub use data::{AugmentChoice, DataConfig};
pub use evaluate::{EvalConfig, Evaluated, evaluate, inspect};
pub use export::{ExportConfig, Exported, InferConfig, Inferred, IntCheck, export, infer};
pub use qat::{Bits, Qat, QatConfig, qat};
pub use quantize::{QuantizeConfig, Quantized, Start, quantize};
pub use report::report_run;
pub use search_settings::{IMPROVED_STEP_SAMPLES, SearchSettings, StepSamples, Variant};
pub use session::Session;
pub use train::{TrainConfig, Trained, train};
