//! Mixed-precision search: CCQ's competition and collaboration.

pub mod bandit;
pub mod ccq;
pub mod target;
