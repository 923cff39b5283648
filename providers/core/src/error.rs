use std::error::Error as StdError;
use std::fmt;

/// What went wrong at a provider, in the terms kbg branches on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A setting in `kbg.yaml` is wrong; `field` is its full path
    /// (`pools.beta.aws.subnets[1]`). Found before anything is touched.
    InvalidConfig {
        /// The setting's path in `kbg.yaml`.
        field: String,
    },
    /// Something the request names does not exist (an AMI, a subnet, a Juju model).
    NotFound,
    /// The credentials lack a permission.
    PermissionDenied,
    /// The provider has no capacity for the request right now.
    Capacity,
    /// The provider asked us to slow down.
    Throttled,
    /// A passing fault: a dropped connection, a 5xx.
    Transient,
    /// A wait ran out; the message says what for.
    Timeout,
    /// The provider cannot do this operation at all (e.g. run-command on EC2 without SSM).
    Unsupported,
    /// Anything else; the message carries the provider's own words.
    Failed,
}

/// A provider failure: which provider, which machine, what it said, whether to retry.
///
/// Displays as one line fit for a user: `aws: machine beta-2: InvalidAMIID.NotFound: …`.
/// The provider's own error (an SDK error, an I/O error) stays reachable as
/// [`std::error::Error::source`].
#[derive(Debug)]
pub struct ProviderError {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// The provider's name (`aws`, `juju`, …).
    pub provider: String,
    /// The machine concerned, when there is one.
    pub machine: Option<String>,
    /// The provider's own words, one line.
    pub message: String,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
    retried: bool,
}

impl ProviderError {
    /// A new error of `kind` from `provider` with `message`.
    pub fn new(provider: impl Into<String>, kind: ErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            provider: provider.into(),
            machine: None,
            message: message.into(),
            source: None,
            retried: false,
        }
    }

    /// A bad setting: `field` is its full path in `kbg.yaml`, `message` says the fix.
    pub fn invalid_config(
        provider: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(
            provider,
            ErrorKind::InvalidConfig {
                field: field.into(),
            },
            message,
        )
    }

    /// An operation this provider cannot do.
    pub fn unsupported(provider: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(provider, ErrorKind::Unsupported, message)
    }

    /// The same error, about `machine`.
    #[must_use]
    pub fn with_machine(mut self, machine: impl Into<String>) -> Self {
        self.machine = Some(machine.into());
        self
    }

    /// The same error, keeping `source` as its cause.
    #[must_use]
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The same error, marked as already retried by the provider's own retry layer
    /// (the AWS SDK's standard retry mode retries throttling and 5xx itself): kbg's retry
    /// layer does not stack a second one on top, so one call is never tried attempts ×
    /// attempts times.
    #[must_use]
    pub fn already_retried(mut self) -> Self {
        self.retried = true;
        self
    }

    /// Whether the provider's own retry layer already retried this error
    /// ([`ProviderError::already_retried`]).
    pub fn was_retried(&self) -> bool {
        self.retried
    }

    /// Whether trying the same request again later can help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Capacity | ErrorKind::Throttled | ErrorKind::Transient | ErrorKind::Timeout
        )
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.provider)?;
        if let Some(m) = &self.machine {
            write!(f, "machine {m}: ")?;
        }
        if let ErrorKind::InvalidConfig { field } = &self.kind {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl StdError for ProviderError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_names_provider_machine_and_field() {
        let e = ProviderError::new(
            "aws",
            ErrorKind::NotFound,
            "InvalidAMIID.NotFound: The image id 'ami-1' does not exist",
        )
        .with_machine("beta-2");
        assert_eq!(
            e.to_string(),
            "aws: machine beta-2: InvalidAMIID.NotFound: The image id 'ami-1' does not exist"
        );
        let e = ProviderError::invalid_config(
            "aws",
            "pools.beta.aws.region",
            "is required; set it or AWS_REGION",
        );
        assert_eq!(
            e.to_string(),
            "aws: pools.beta.aws.region: is required; set it or AWS_REGION"
        );
    }

    #[test]
    fn only_passing_faults_are_retryable() {
        for (kind, retry) in [
            (ErrorKind::Throttled, true),
            (ErrorKind::Transient, true),
            (ErrorKind::Capacity, true),
            (ErrorKind::Timeout, true),
            (ErrorKind::NotFound, false),
            (ErrorKind::PermissionDenied, false),
            (ErrorKind::Unsupported, false),
            (ErrorKind::Failed, false),
            (ErrorKind::InvalidConfig { field: "x".into() }, false),
        ] {
            assert_eq!(
                ProviderError::new("p", kind.clone(), "m").is_retryable(),
                retry,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn keeps_its_source() {
        let io = std::io::Error::other("connection reset");
        let e = ProviderError::new("metal", ErrorKind::Transient, "ssh failed").with_source(io);
        assert_eq!(e.source().unwrap().to_string(), "connection reset");
    }
}
