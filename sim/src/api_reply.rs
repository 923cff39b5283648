//! An HTTP answer.

use bytes::Bytes;
use serde_json::Value;

use crate::server::{Body, full};
use crate::status::ApiError;

/// An answer.
pub(crate) struct Reply {
    pub code: u16,
    pub body: Body,
    pub content_type: String,
    pub retry_after: Option<u32>,
}

impl Reply {
    pub(crate) fn json(code: u16, v: &Value) -> Reply {
        Reply::bytes(code, Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
    }

    pub(crate) fn bytes(code: u16, b: Bytes) -> Reply {
        Reply {
            code,
            body: full(b),
            content_type: "application/json".into(),
            retry_after: None,
        }
    }

    pub(crate) fn text(code: u16, s: &'static str) -> Reply {
        Reply {
            code,
            body: full(Bytes::from_static(s.as_bytes())),
            content_type: "text/plain; charset=utf-8".into(),
            retry_after: None,
        }
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        let mut r = Reply::bytes(e.code, Bytes::from(e.to_bytes()));
        r.retry_after = e.retry_after;
        r
    }
}
