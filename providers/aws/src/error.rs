//! EC2 errors in kbg's terms.
//!
//! kbg branches on AWS's error *code* (`InvalidAMIID.NotFound`, `UnauthorizedOperation`,
//! …, from [`ProvideErrorMetadata::code`]), never on the formatted text, and keeps the
//! SDK's error as the [`std::error::Error::source`] of the [`ProviderError`]. The line a
//! user sees names the pool, the machine (set by the caller) and AWS's own message, and
//! for codes that point at one setting, which setting to check.
//!
//! Throttling and passing faults are retried by the SDK's retry configuration
//! (standard mode, set explicitly when the provider is built); nothing here retries, and
//! the errors the SDK retried are marked so ([`ProviderError::already_retried`]) that
//! kbg's own retry layer does not stack a second one on top.

use std::error::Error as StdError;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::waiters::error::WaiterError;
use kbg_provider::{ErrorKind, ProviderError};

use crate::PROVIDER;
use crate::settings::field_path;

/// What kind of failure an EC2 error code is; `status` is the HTTP status, for errors
/// without a code.
pub fn kind_for_code(code: Option<&str>, status: Option<u16>) -> ErrorKind {
    let Some(code) = code else {
        return match status {
            Some(s) if s >= 500 => ErrorKind::Transient,
            Some(403) => ErrorKind::PermissionDenied,
            _ => ErrorKind::Failed,
        };
    };
    match code {
        "UnauthorizedOperation"
        | "AuthFailure"
        | "AccessDenied"
        | "AccessDeniedException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "OptInRequired"
        | "Blocked" => ErrorKind::PermissionDenied,
        "InsufficientInstanceCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "InsufficientCapacity"
        | "InstanceLimitExceeded"
        | "VcpuLimitExceeded" => ErrorKind::Capacity,
        "RequestLimitExceeded"
        | "Throttling"
        | "ThrottlingException"
        | "RequestThrottled"
        | "TooManyRequestsException" => ErrorKind::Throttled,
        "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable" => {
            ErrorKind::Transient
        }
        c if c.ends_with(".NotFound")
            || c.ends_with(".NotFoundException")
            || c == "InvalidAMIID.Unavailable" =>
        {
            ErrorKind::NotFound
        }
        c if c.ends_with(".Malformed") => match setting_for_code(c) {
            Some(field) => ErrorKind::InvalidConfig {
                field: field.to_string(),
            },
            None => ErrorKind::Failed,
        },
        _ => match status {
            Some(s) if s >= 500 => ErrorKind::Transient,
            _ => ErrorKind::Failed,
        },
    }
}

/// The `aws:` setting an error code points at, if it points at one.
pub fn setting_for_code(code: &str) -> Option<&'static str> {
    let family = code.split('.').next().unwrap_or(code);
    Some(match family {
        "InvalidAMIID" => "ami",
        "InvalidSubnetID" | "InvalidSubnet" => "subnets",
        "InvalidGroup" | "InvalidGroupId" | "InvalidSecurityGroupID" => "security_groups",
        "InvalidKeyPair" => "key_name",
        "InvalidLaunchTemplateId" | "InvalidLaunchTemplateName" => "launch_template",
        "InvalidInstanceType" => "instance_type",
        _ => return None,
    })
}

/// Whether an error on one launch means every launch of the pool would fail the same
/// way (a setting is wrong, a permission is missing), so provisioning stops at the
/// first machine instead of reporting the same failure for each.
pub(crate) fn fails_every_launch(err: &ProviderError, code: Option<&str>) -> bool {
    match err.kind {
        ErrorKind::NotFound | ErrorKind::PermissionDenied | ErrorKind::InvalidConfig { .. } => true,
        ErrorKind::Failed => code.is_some_and(|c| {
            c.starts_with("Invalid") || c.starts_with("MissingParameter") || c == "Unsupported"
        }),
        _ => false,
    }
}

/// Joins an error and its sources into one line.
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = e.source();
    }
    out.replace('\n', " ")
}

/// A failed EC2 call, with the code it carried (for callers that branch further).
#[derive(Debug)]
pub(crate) struct CallError {
    /// The error for kbg.
    pub error: ProviderError,
    /// AWS's error code, if the service answered with one.
    pub code: Option<String>,
}

/// `err`, returned by `action` (`RunInstances`, …) for pool `pool`, as a
/// [`ProviderError`] with the SDK error as its source.
pub(crate) fn sdk_error<E>(err: SdkError<E, HttpResponse>, action: &str, pool: &str) -> CallError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let code = err.code().map(str::to_owned);
    let status = err.raw_response().map(|r| r.status().as_u16());
    let (kind, what) = match &err {
        SdkError::ServiceError(_) => {
            let kind = kind_for_code(code.as_deref(), status);
            let label = code
                .clone()
                .or_else(|| status.map(|s| format!("HTTP {s}")))
                .unwrap_or_else(|| "error".into());
            let message = err.message().unwrap_or("no message from EC2");
            (kind, format!("{label}: {message}"))
        }
        // The SDK's attempts all ran out of time (`ATTEMPT_TIMEOUT` each): the call's
        // deadline is spent; kbg does not retry it again.
        SdkError::TimeoutError(_) => (
            ErrorKind::Timeout,
            format!("EC2 did not answer in time: {}", chain(&err)),
        ),
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_io() || d.is_timeout() {
                ErrorKind::Transient
            } else {
                ErrorKind::Failed
            };
            (kind, chain(&err))
        }
        _ => (
            match status {
                Some(s) if s >= 500 => ErrorKind::Transient,
                _ => ErrorKind::Failed,
            },
            chain(&err),
        ),
    };
    let hint = match (&kind, code.as_deref()) {
        (ErrorKind::PermissionDenied, _) => {
            " (the credentials lack a permission kbg needs; see the IAM policy in kbg's AWS provider README)".to_string()
        }
        (_, Some(c)) => setting_for_code(c)
            .map(|f| format!(" (check {})", field_path(pool, f)))
            .unwrap_or_default(),
        _ => String::new(),
    };
    // The SDK's standard retry mode has retried throttling, 5xx and I/O failures
    // already ([`crate::MAX_ATTEMPTS`] attempts): kbg must not retry them again on top.
    let retried = matches!(kind, ErrorKind::Throttled | ErrorKind::Transient);
    let mut error = ProviderError::new(
        PROVIDER,
        kind,
        format!("{action} for pool {pool} failed: {what}{hint}").replace('\n', " "),
    )
    .with_source(err);
    if retried {
        error = error.already_retried();
    }
    CallError { error, code }
}

/// A waiter's failure: [`ErrorKind::Timeout`] when it ran out of time, the underlying
/// call's error when DescribeInstances failed, [`ErrorKind::Failed`] when the instance
/// reached a state it cannot leave (`waiting for` says which).
pub(crate) fn waiter_error<O, E>(err: WaiterError<O, E>, waiting_for: &str, pool: &str) -> CallError
where
    O: std::fmt::Debug + Send + Sync + 'static,
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match err {
        WaiterError::ExceededMaxWait(w) => CallError {
            error: ProviderError::new(
                PROVIDER,
                ErrorKind::Timeout,
                format!(
                    "gave up after {} s waiting for {waiting_for} (pools.{pool}.aws.wait_timeout_secs sets the limit)",
                    w.max_wait().as_secs()
                ),
            ),
            code: None,
        },
        WaiterError::OperationFailed(f) => sdk_error(f.into_error(), "DescribeInstances", pool),
        WaiterError::FailureState(f) => {
            let code = f
                .final_poll()
                .as_result()
                .err()
                .and_then(|e| e.code())
                .map(str::to_owned);
            let err = WaiterError::FailureState(f);
            CallError {
                error: ProviderError::new(
                    PROVIDER,
                    ErrorKind::Failed,
                    format!("stopped waiting for {waiting_for}: the instance reached a state it cannot leave"),
                )
                .with_source(err),
                code,
            }
        }
        other => CallError {
            error: ProviderError::new(
                PROVIDER,
                ErrorKind::Failed,
                format!("could not wait for {waiting_for}: {}", chain(&other)),
            )
            .with_source(other),
            code: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        let cases: &[(&str, ErrorKind)] = &[
            ("InvalidAMIID.NotFound", ErrorKind::NotFound),
            (
                "InvalidAMIID.Malformed",
                ErrorKind::InvalidConfig {
                    field: "ami".into(),
                },
            ),
            ("InvalidSubnetID.NotFound", ErrorKind::NotFound),
            ("InvalidGroup.NotFound", ErrorKind::NotFound),
            ("InvalidInstanceID.NotFound", ErrorKind::NotFound),
            ("InvalidLaunchTemplateId.NotFound", ErrorKind::NotFound),
            (
                "InvalidLaunchTemplateName.NotFoundException",
                ErrorKind::NotFound,
            ),
            ("UnauthorizedOperation", ErrorKind::PermissionDenied),
            ("AuthFailure", ErrorKind::PermissionDenied),
            ("InsufficientInstanceCapacity", ErrorKind::Capacity),
            ("VcpuLimitExceeded", ErrorKind::Capacity),
            ("RequestLimitExceeded", ErrorKind::Throttled),
            ("InternalError", ErrorKind::Transient),
            ("IdempotentParameterMismatch", ErrorKind::Failed),
            ("InvalidParameterValue", ErrorKind::Failed),
        ];
        for (code, kind) in cases {
            assert_eq!(&kind_for_code(Some(code), Some(400)), kind, "{code}");
        }
        assert_eq!(kind_for_code(None, Some(500)), ErrorKind::Transient);
        assert_eq!(
            kind_for_code(Some("Whatever"), Some(503)),
            ErrorKind::Transient
        );
        assert_eq!(kind_for_code(None, Some(400)), ErrorKind::Failed);
    }

    #[test]
    fn codes_point_at_their_setting() {
        assert_eq!(setting_for_code("InvalidAMIID.NotFound"), Some("ami"));
        assert_eq!(
            setting_for_code("InvalidSubnetID.NotFound"),
            Some("subnets")
        );
        assert_eq!(
            setting_for_code("InvalidGroup.NotFound"),
            Some("security_groups")
        );
        assert_eq!(
            setting_for_code("InvalidKeyPair.NotFound"),
            Some("key_name")
        );
        assert_eq!(
            setting_for_code("InvalidLaunchTemplateName.NotFoundException"),
            Some("launch_template")
        );
        assert_eq!(setting_for_code("InsufficientInstanceCapacity"), None);
    }

    #[test]
    fn a_waiter_that_runs_out_of_time_is_a_timeout_naming_the_setting() {
        use aws_sdk_ec2::operation::describe_instances::{
            DescribeInstancesError, DescribeInstancesOutput,
        };
        use aws_smithy_runtime_api::client::waiters::error::ExceededMaxWait;
        use std::time::Duration;

        let err: WaiterError<DescribeInstancesOutput, DescribeInstancesError> =
            WaiterError::ExceededMaxWait(ExceededMaxWait::new(
                Duration::from_secs(600),
                Duration::from_secs(601),
                40,
            ));
        let e = waiter_error(err, "instance i-1 to run", "beta").error;
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert!(e.is_retryable());
        assert_eq!(
            e.to_string(),
            "aws: gave up after 600 s waiting for instance i-1 to run (pools.beta.aws.wait_timeout_secs sets the limit)"
        );
    }

    #[test]
    fn errors_the_sdk_retried_are_not_retried_again_by_kbg() {
        use aws_sdk_ec2::operation::run_instances::RunInstancesError;
        use aws_smithy_runtime_api::http::{Response, StatusCode};
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;

        let answer = |status: u16, code: &str| {
            let err = RunInstancesError::generic(
                ErrorMetadata::builder().code(code).message("m").build(),
            );
            let raw = Response::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
            sdk_error(SdkError::service_error(err, raw), "RunInstances", "beta").error
        };
        let throttled = answer(503, "RequestLimitExceeded");
        assert_eq!(throttled.kind, ErrorKind::Throttled);
        assert!(throttled.is_retryable() && throttled.was_retried());
        let unavailable = answer(503, "Unavailable");
        assert!(unavailable.was_retried(), "{unavailable:?}");
        // The SDK does not retry a capacity error; kbg may, later.
        let capacity = answer(500, "InsufficientInstanceCapacity");
        assert_eq!(capacity.kind, ErrorKind::Capacity);
        assert!(capacity.is_retryable() && !capacity.was_retried());
        assert!(!answer(400, "InvalidAMIID.NotFound").was_retried());
    }

    #[test]
    fn config_and_permission_errors_stop_the_whole_pool() {
        let e = |kind| ProviderError::new("aws", kind, "m");
        assert!(fails_every_launch(&e(ErrorKind::NotFound), None));
        assert!(fails_every_launch(&e(ErrorKind::PermissionDenied), None));
        assert!(fails_every_launch(
            &e(ErrorKind::Failed),
            Some("InvalidParameterValue")
        ));
        assert!(!fails_every_launch(&e(ErrorKind::Capacity), None));
        assert!(!fails_every_launch(&e(ErrorKind::Timeout), None));
        assert!(!fails_every_launch(
            &e(ErrorKind::Failed),
            Some("IdempotentParameterMismatch")
        ));
    }
}
