//! Training, evaluation, schedules and checkpoints.

pub mod checkpoint;
pub mod fit;
pub mod schedule;
pub mod trainer;

pub use trainer::{Devices, EpochStats, Eval, Hyper, eval_policy, evaluate, sgd, train_epoch};
