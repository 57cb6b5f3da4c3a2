//! The CLI's error: a library error passed through unchanged, or a problem with a file the CLI
//! reads or writes. Every variant is printed as `error: <message>` and exits with code 2, except
//! a closed standard output, which stops the command quietly (`crate::out`).

use std::fmt;
use std::path::Path;

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// An error from the lossfuse library (config, tensor, adapter, GPU).
    Lib(lossfuse::Error),
    /// A file could not be read, parsed or written.
    File {
        /// The file at fault.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A command-line value is not one the command knows.
    Usage(String),
    /// Standard output was closed by its reader (`lossfuse ... | head -1`): the command stops
    /// quietly, with exit code [`crate::out::CLOSED_EXIT_CODE`].
    StdoutClosed,
    /// Standard output could not be written for another reason (a full disk, an I/O error).
    Stdout(String),
}

impl CliError {
    /// A file error for `path`.
    pub fn file(path: &Path, message: impl fmt::Display) -> Self {
        CliError::File {
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Lib(e) => write!(f, "{e}"),
            CliError::File { path, message } => write!(f, "file '{path}': {message}"),
            CliError::Usage(m) => write!(f, "{m}"),
            CliError::StdoutClosed => write!(f, "standard output was closed"),
            CliError::Stdout(m) => write!(f, "cannot write to standard output: {m}"),
        }
    }
}

impl std::error::Error for CliError {}

impl From<lossfuse::Error> for CliError {
    fn from(e: lossfuse::Error) -> Self {
        CliError::Lib(e)
    }
}

/// Shorthand for the CLI's results.
pub type CliResult<T> = Result<T, CliError>;
