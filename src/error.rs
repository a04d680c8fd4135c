//! The errors the library returns at its boundary (the [`crate::pipeline`] functions).
//!
//! Inside, modules attach context as they go; a typed error raised deep inside keeps its kind
//! through that context, and [`Error::from_chain`] recovers it with the whole message.

use std::path::PathBuf;

/// What went wrong, by kind, with a message that names the file or setting and the problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file (data, checkpoint, policy, run state, model) is missing, unreadable or
    /// malformed.
    #[error("{message}")]
    BadInput {
        /// The file or directory at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A setting is out of range or inconsistent with another.
    #[error("{0}")]
    InvalidConfig(String),
    /// The target cannot be met on the ladder and floor.
    #[error("{0}")]
    UnreachableTarget(String),
    /// Training diverged (a non-finite loss or non-finite logits) and could not recover.
    #[error("{0}")]
    Diverged(String),
    /// A checkpoint or run directory is valid but does not fit this job (another model, a
    /// quantized model where a full-precision one is needed, other settings).
    #[error("{message}")]
    IncompatibleCheckpoint {
        /// The checkpoint or run directory.
        path: PathBuf,
        /// Why it does not fit.
        message: String,
    },
    /// An output could not be written.
    #[error("{message}")]
    Write {
        /// The file or directory that could not be written.
        path: PathBuf,
        /// The cause.
        message: String,
    },
    /// The job was cancelled through its [`crate::events::Events`] before it could return a
    /// result; what it finished is saved, and running it again continues.
    #[error("{0}")]
    Cancelled(String),
    /// Anything else, with its chain of causes.
    #[error("{0}")]
    Internal(String),
}

/// The library's result type at its boundary.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A bad input file.
    pub fn bad_input(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::BadInput {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A checkpoint or run that does not fit the job.
    pub fn incompatible(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::IncompatibleCheckpoint {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The error for `e` (an error with its context chain): the kind of the innermost typed
    /// error in the chain, or [`Error::Internal`], with the whole chain as the message.
    pub fn from_chain(e: &(dyn std::error::Error + 'static), message: String) -> Self {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        let mut found: Option<&Error> = None;
        while let Some(c) = cur {
            if let Some(t) = c.downcast_ref::<Error>() {
                found = Some(t);
            }
            if c.downcast_ref::<Diverged>().is_some() {
                return Error::Diverged(message);
            }
            cur = c.source();
        }
        match found {
            Some(Error::BadInput { path, .. }) => Error::bad_input(path.clone(), message),
            Some(Error::InvalidConfig(_)) => Error::InvalidConfig(message),
            Some(Error::UnreachableTarget(_)) => Error::UnreachableTarget(message),
            Some(Error::Diverged(_)) => Error::Diverged(message),
            Some(Error::IncompatibleCheckpoint { path, .. }) => {
                Error::incompatible(path.clone(), message)
            }
            Some(Error::Write { path, .. }) => Error::Write {
                path: path.clone(),
                message,
            },
            Some(Error::Cancelled(_)) => Error::Cancelled(message),
            Some(Error::Internal(_)) | None => Error::Internal(message),
        }
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        let message = format!("{e:#}");
        // A typed error converted without context is returned as it is.
        match e.downcast::<Error>() {
            Ok(t) => t,
            Err(e) => Error::from_chain(e.as_ref(), message),
        }
    }
}

/// A training pass whose loss became NaN or infinite.
#[derive(Debug, thiserror::Error)]
#[error(
    "{label}: the training loss became non-finite ({value}) between steps {first} and {last} of {steps}; the run diverged: lower the learning rate (--lr)"
)]
pub struct Diverged {
    /// The pass (e.g. `epoch 3/10`).
    pub label: String,
    /// First step that may have produced it (1-based).
    pub first: usize,
    /// Step at which it was seen.
    pub last: usize,
    /// Steps in the pass.
    pub steps: usize,
    /// The loss sum that was seen.
    pub value: f64,
}
