//! kbg's errors and the exit codes they map to.
//!
//! | exit | meaning |
//! | --- | --- |
//! | 0 | done |
//! | 1 | the operation failed or was refused; the message says what, and where the cluster stands |
//! | 2 | bad usage or bad input (flags, `kbg.yaml`, versions, pool names); nothing was touched |
//!
//! Every variant displays as one or more complete lines fit for a user; the causes stay
//! reachable through [`std::error::Error::source`] for `-v` logs.

use std::process::ExitCode;

use kbg_provider::ProviderError;

use crate::config::ConfigError;
use crate::lock::LockError;

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a kbg command did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad usage or input, found before anything was touched (exit 2). One line per
    /// problem.
    #[error("{}", .0.join("\n"))]
    Usage(Vec<String>),

    /// `kbg.yaml` is wrong (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A request to the API server failed (exit 1).
    #[error("{what}: {}", crate::client::describe(.source))]
    Kube {
        /// What kbg was doing, with the state the cluster is left in when it matters.
        what: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },

    /// A provider failed (exit 1; exit 2 for a bad setting found before anything was
    /// touched).
    #[error("{what}: {source}")]
    Provider {
        /// What kbg was doing.
        what: String,
        /// The provider's error.
        #[source]
        source: Box<ProviderError>,
    },

    /// Another kbg holds a pool, or kbg lost its own hold (exit 1).
    #[error(transparent)]
    Lock(#[from] LockError),

    /// The state ConfigMap could not be read or written (exit 1).
    #[error(transparent)]
    State(#[from] crate::state::StateError),

    /// The command refused to act: preflight blockers, pods left on a pool, a
    /// control-plane node in a pool. Nothing was changed by the refused step (exit 1).
    #[error("{0}")]
    Refused(String),

    /// The operation started and failed; the message says where the cluster stands
    /// (exit 1).
    #[error("{0}")]
    Failed(String),

    /// Interrupted by a signal; the message says how to continue (exit 1).
    #[error("{0}")]
    Interrupted(String),
}

impl Error {
    /// One usage error.
    pub fn usage(line: impl Into<String>) -> Self {
        Error::Usage(vec![line.into()])
    }

    /// A failed API request, with what kbg was doing.
    pub fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            what: what.into(),
            source: Box::new(source),
        }
    }

    /// A provider failure, with what kbg was doing. Bad settings found before anything
    /// was touched are usage errors: build providers before the first write.
    pub fn provider(what: impl Into<String>, source: ProviderError) -> Self {
        Error::Provider {
            what: what.into(),
            source: Box::new(source),
        }
    }

    /// The process exit code for this error (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Config(_) => 2,
            Error::Provider { source, .. }
                if matches!(source.kind, kbg_provider::ErrorKind::InvalidConfig { .. }) =>
            {
                2
            }
            _ => 1,
        }
    }

    /// [`Error::exit_code`] as an [`ExitCode`].
    pub fn exit(&self) -> ExitCode {
        ExitCode::from(self.exit_code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbg_provider::ErrorKind;

    #[test]
    fn exit_codes() {
        assert_eq!(Error::usage("x").exit_code(), 2);
        assert_eq!(Error::Refused("x".into()).exit_code(), 1);
        assert_eq!(Error::Failed("x".into()).exit_code(), 1);
        let bad = ProviderError::invalid_config("sim", "pools.beta.sim.x", "unknown field");
        assert_eq!(Error::provider("building", bad).exit_code(), 2);
        let down = ProviderError::new("aws", ErrorKind::Transient, "503");
        assert_eq!(Error::provider("provisioning", down).exit_code(), 1);
    }

    #[test]
    fn usage_errors_are_one_line_each() {
        let e = Error::Usage(vec!["a: bad".into(), "b: bad".into()]);
        assert_eq!(e.to_string(), "a: bad\nb: bad");
    }
}
