//! Datasets: idx, CIFAR binary and image-folder readers (in memory or streamed from disk),
//! splits and batching.

pub mod batch;
pub mod cifar;
pub mod dataset;
pub mod folder;
pub mod idx;
pub mod source;
pub mod splits;
pub mod stream;
pub mod synthetic;

pub use batch::{
    Augment, Batch, Batcher, CALIBRATION_IMAGES, Normalization, calibration_batch_count,
    calibration_batches, calibration_images, in_order, make_batch,
};
pub use dataset::{Dataset, Storage, Subset, TrainTest};
pub use source::{DataFormat, DataSource, Loader};
pub use splits::{SplitSpec, Splits};
