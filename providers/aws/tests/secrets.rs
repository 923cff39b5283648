//! The join token never reaches a log line, even with every `tracing` target at TRACE
//! (where the SDK logs each request it sends, body included).
//!
//! Alone in its binary because it installs a process-wide subscriber: it must see the
//! SDK's logs from every task, and no other test's.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use aws_smithy_types::body::SdkBody;
use base64::Engine as _;
use kbg_provider::Provider;
use kbg_provider_aws::AwsProvider;
use serde_json::json;

use support::{CANARY_CA_HASH, CANARY_TOKEN, Moto, fixture, names, pool};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The forms `secret` takes inside any base64 text that contains it, whatever its
/// offset: for each of the three alignments, the run of whole base64 groups made of
/// the secret's bytes alone; each also URL-encoded, as in a query-protocol body.
fn needles(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    let mut out = vec![secret.to_string()];
    for skip in 0..3 {
        let rest = &bytes[skip..];
        let whole = rest.len() / 3 * 3;
        let encoded = b64(&rest[..whole]);
        out.push(url_encoded(&encoded));
        out.push(encoded);
    }
    out
}

fn url_encoded(s: &str) -> String {
    s.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

fn leaks(log: &str, secret: &str) -> Vec<String> {
    needles(secret)
        .into_iter()
        .filter(|n| log.contains(n.as_str()))
        .collect()
}

#[tokio::test]
async fn the_join_token_reaches_no_log_line_even_at_trace() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let moto = Moto::start();
    let config = moto.sdk_config();
    let ec2 = moto.client();
    let fx = fixture(&ec2).await;
    let beta = pool("beta", &fx, json!({}));
    let aws = AwsProvider::from_pool_with_config(&beta, &config).unwrap();
    let made = aws.provision(&beta, &names("beta", 2)).await.unwrap();
    assert_eq!(made.machines.len(), 2);
    aws.list(&beta).await.unwrap();
    // A failing launch too: its error, shown and debug-printed, carries no secret.
    let broken = pool(
        "beta",
        &fx,
        json!({"subnets": ["subnet-0123456789abcdef0"]}),
    );
    let err = AwsProvider::from_pool_with_config(&broken, &config)
        .unwrap()
        .provision(&broken, &names("beta", 3))
        .await
        .unwrap_err();
    tracing::error!(error = %err, debug = ?err, "as a caller would log it");
    let removed = aws.deprovision(&beta, &made.machines).await.unwrap();
    assert_eq!(removed.removed.len(), 2);

    let log = capture.text();
    // The capture really holds the SDK's request log, so the check below means
    // something.
    assert!(
        log.contains("transmitting request"),
        "SDK TRACE log captured"
    );
    assert!(log.contains("RunInstances"), "RunInstances calls captured");
    assert!(log.contains("as a caller would log it"));

    // The start of every user data, "#cloud-config\n# kbg bootstrap for machine beta-",
    // is public, but finding its base64 would mean a body was printed.
    let user_data_start = "#cloud-config\n# kbg bootstrap for machine beta-";
    for secret in [CANARY_TOKEN, CANARY_CA_HASH, user_data_start] {
        let found = leaks(&log, secret);
        assert!(
            found.is_empty(),
            "{secret:?} appears in the log as {found:?}"
        );
    }

    // Control: the needles do find the token in a request body printed the way the
    // SDK prints an in-memory body, so the check above can fail.
    let body = format!(
        "Action=RunInstances&UserData={}",
        url_encoded(&b64(format!("x: 1\ntoken: {CANARY_TOKEN}\n").as_bytes()))
    );
    let printed = format!("{:?}", SdkBody::from(body));
    assert!(!leaks(&printed, CANARY_TOKEN).is_empty(), "{printed}");
}
