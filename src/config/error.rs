//! Configuration errors that tell the operator where the bad value came from
//! (file and line, environment variable, command-line flag or default), which
//! key it is, and how to fix it.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration value came from. Printed by `ruchy-serve config` and
/// used to point every error at the place the operator has to edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A config file, with the 1-based line when it could be found.
    File {
        /// The file.
        path: PathBuf,
        /// The line, 1-based.
        line: Option<usize>,
    },
    /// An environment variable (its full name).
    Env(String),
    /// A command-line flag.
    Cli(String),
    /// A built-in default (`what` says which set of defaults).
    Default(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "{}:{line}", path.display()),
            Origin::File { path, line: None } => write!(f, "{}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Cli(flag) => write!(f, "command line {flag}"),
            Origin::Default(what) => write!(f, "{what}"),
        }
    }
}

/// A configuration that cannot be used. Each variant's message names the
/// place to edit and, where there is one, the fix; the fields are what it
/// prints.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` could not be read at all.
    #[error("cannot read config file {}: {source} (hint: check the path given to --config and its permissions)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}:{line}:{column}: TOML syntax error: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A key is unknown, has the wrong type, or holds a value we cannot use.
    #[error("{origin}: key `{key}`: {message}{}", hint.as_ref().map(|h| format!(" (hint: {h})")).unwrap_or_default())]
    Invalid {
        origin: Origin,
        key: String,
        message: String,
        hint: Option<String>,
    },
    /// Several sections are wrong: each mistake, in the order of the
    /// sections, so that one round of `check` shows them all.
    #[error("{} mistakes:\n  {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  "))]
    Many(Vec<ConfigError>),
}

impl ConfigError {
    /// The key an `Invalid` error is about (the first mistake's, for
    /// several); tests and `check` use it.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Many(all) => all.first().and_then(|e| e.key()),
            _ => None,
        }
    }

    /// One error for `errors`: itself when there is one.
    pub fn all(mut errors: Vec<ConfigError>) -> ConfigError {
        match errors.len() {
            1 => errors.remove(0),
            _ => ConfigError::Many(errors),
        }
    }
}
