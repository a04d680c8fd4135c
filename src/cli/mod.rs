//! The command-line interface: argument parsing and one function per subcommand.

pub mod args;
pub mod bench;
pub mod compare;
pub mod deploy;
pub mod jobs;
pub mod quantize;
