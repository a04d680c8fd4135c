//! Mixed-precision search: CCQ's competition and collaboration.

pub mod allocate;
pub mod audition;
pub mod bandit;
pub mod baselines;
pub mod ccq;
pub mod collaborate;
pub mod config;
pub mod extend;
pub mod hessian;
pub mod lookahead;
pub mod polish;
pub mod reallocate;
pub mod reward;
pub mod run_dir;
pub mod state;
pub mod step;
pub mod target;
pub mod trials;
pub mod validate;
