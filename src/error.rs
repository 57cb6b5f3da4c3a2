//! The one error type of the crate. Every variant names what is at fault (term, key, tensor, shape)
//! so that a trainer's log line is enough to fix the input.

/// Everything that can go wrong in lossfuse. Library code returns these instead of panicking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration text is not valid TOML/JSON, or does not follow the schema.
    #[error("config: {0}")]
    Config(String),
    /// A term's configuration is wrong: unknown key, bad value, missing role.
    #[error("term '{term}': {message}")]
    Term {
        /// Name of the term at fault.
        term: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A tensor is missing, or has the wrong shape, dtype or length.
    #[error("tensor '{tensor}'{}: {message}", term.as_ref().map(|t| format!(" (term '{t}')")).unwrap_or_default())]
    Tensor {
        /// Name of the tensor at fault.
        tensor: String,
        /// The term that reads it, when one does.
        term: Option<String>,
        /// What is wrong and what was expected.
        message: String,
    },
    /// No usable GPU adapter, or the device could not be created.
    #[error("adapter: {0}")]
    Adapter(String),
    /// The GPU reported an error (validation, out of memory, lost device).
    #[error("gpu: {0}")]
    Gpu(String),
    /// A saved state does not fit this plan.
    #[error("state: {0}")]
    State(String),
    /// The feature is specified but not implemented yet.
    #[error("not yet supported: {0}")]
    Unsupported(String),
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn term(term: &str, message: impl Into<String>) -> Self {
        Error::Term {
            term: term.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn tensor(tensor: &str, term: Option<&str>, message: impl Into<String>) -> Self {
        Error::Tensor {
            tensor: tensor.to_string(),
            term: term.map(str::to_string),
            message: message.into(),
        }
    }
}
