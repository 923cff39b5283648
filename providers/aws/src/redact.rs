//! Keeps EC2 request bodies out of the SDK's own TRACE log.
//!
//! The smithy orchestrator logs every request it sends at TRACE
//! (`aws_smithy_runtime::client::orchestrator`, "transmitting request"), and an
//! in-memory body prints its bytes. A RunInstances body carries `UserData`: the
//! rendered bootstrap with the cluster's join token, base64- and URL-encoded, which is
//! no protection. In aws-smithy-runtime 1.16 the body happens to be printed as
//! `BoxBody`, because the SDK's metrics interceptor wraps it first; that is a side
//! effect of telemetry, not a promise, and kbg does not rely on it.
//!
//! [`HideRequestBody`] runs just before the request is sent, after it was signed, and
//! moves the body into a streaming wrapper whose `Debug` prints `BoxBody` instead of
//! the bytes. The bytes on the wire and the signature are unchanged; a retry starts
//! again from the SDK's own saved copy of the request, so retries are unaffected.

use aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_types::body::SdkBody;

/// An SDK interceptor that hides each request's body from the SDK's logs; installed on
/// every EC2 client the provider builds.
#[derive(Clone, Copy, Debug, Default)]
pub struct HideRequestBody;

impl Intercept for HideRequestBody {
    fn name(&self) -> &'static str {
        "kbg::HideRequestBody"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let Some(bytes) = request.body().bytes() else {
            // Already a streaming body: its Debug shows no content.
            return Ok(());
        };
        let bytes = bytes::Bytes::copy_from_slice(bytes);
        *request.body_mut() = SdkBody::from_body_1_x(http_body_util::Full::new(bytes));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streaming_body_does_not_print_its_bytes() {
        let secret = "UserData=dG9rZW4";
        let plain = SdkBody::from(secret);
        assert!(format!("{plain:?}").contains("dG9rZW4"));
        let hidden = SdkBody::from_body_1_x(http_body_util::Full::new(bytes::Bytes::from(secret)));
        assert!(!format!("{hidden:?}").contains("dG9rZW4"), "{hidden:?}");
    }
}
