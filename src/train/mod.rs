//! Training, evaluation, schedules and checkpoints.

pub mod checkpoint;
pub mod fit;
pub mod schedule;
pub mod trainer;

pub use trainer::{Devices, EpochStats, Eval, Hyper, evaluate, sgd, train_epoch};
