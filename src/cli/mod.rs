//! The command-line interface: flags mapped onto the library's [`ccq::pipeline`] jobs, events
//! drawn as progress bars and lines, results printed. No job logic lives here.

pub mod args;
pub mod bench;
pub mod compare;
pub mod deploy;
pub mod inspect;
pub mod jobs;
pub mod price_flags;
pub mod progress;
pub mod quantize;
pub mod search_flags;
