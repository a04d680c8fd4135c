//! Training, calibration, evaluation, schedules and checkpoints.

pub mod calibrate;
pub mod checkpoint;
pub mod distill;
pub mod fit;
pub mod optim;
pub mod run_settings;
pub mod schedule;
pub mod trainer;

pub use optim::{FlatSgd, Hyper, sgd};
pub use trainer::{Devices, EpochStats, Eval, eval_policy, evaluate, train_epoch};
