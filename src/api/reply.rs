//! What a handler answers: [`ApiReply`] (HTTP status, `BaseRes` body, extra headers) and the error
//! codes of SPEC.md §8 with their HTTP statuses. Knows nothing of routing, auth or the transport.

use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The `code` of a `BaseRes` error (SPEC.md §8), with its default HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    /// `POST /api/containers/:id/update` with an empty `image`.
    ImageRequired,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// The container is already being updated, or the job already runs.
    Conflict,
    PayloadTooLarge,
    ScanFailed,
    /// `data.rolledBack` says whether the old container is back.
    UpdateFailed,
    /// 502 by default; use [`ApiReply::with_status`] 503 when the engine is unreachable.
    DockerError,
    RegistryError,
    /// A handler failed in a way no other code describes (e.g. it panicked). Not in SPEC.md's table,
    /// which has no generic server error; 50000 keeps the 5xxxx family.
    Internal,
}

impl ErrorCode {
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::BadRequest => 40000,
            ErrorCode::ImageRequired => 40001,
            ErrorCode::Unauthorized => 40100,
            ErrorCode::Forbidden => 40300,
            ErrorCode::NotFound => 40400,
            ErrorCode::MethodNotAllowed => 40500,
            ErrorCode::Conflict => 40900,
            ErrorCode::PayloadTooLarge => 41300,
            ErrorCode::Internal => 50000,
            ErrorCode::ScanFailed => 50001,
            ErrorCode::UpdateFailed => 50002,
            ErrorCode::DockerError => 50003,
            ErrorCode::RegistryError => 50004,
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::ImageRequired => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Internal | ErrorCode::ScanFailed | ErrorCode::UpdateFailed => 500,
            ErrorCode::DockerError | ErrorCode::RegistryError => 502,
        }
    }
}

/// The body of a reply: a `BaseRes` JSON value, or raw bytes for `/metrics` and `/`.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyBody {
    Json(Value),
    Raw {
        content_type: String,
        bytes: Vec<u8>,
    },
    /// A `BaseRes` already encoded, shared by every request that reads the same snapshot (the
    /// container list: encoding it once per snapshot rather than once per request).
    Encoded {
        code: u64,
        json: Arc<[u8]>,
    },
}

/// A handler's answer. `Content-Type` and `Cache-Control: no-store` are added by the server;
/// `headers` holds the rest (`Allow`, `WWW-Authenticate`, a page's `Content-Security-Policy`...).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiReply {
    pub status: u16,
    pub body: ReplyBody,
    pub headers: Vec<(String, String)>,
}

impl ApiReply {
    /// 200 `{code: 0, msg: "ok", data}`.
    pub fn ok(data: impl Serialize) -> ApiReply {
        Self::success(200, "ok", data)
    }

    /// 200 with a `BaseRes` body encoded earlier (see [`ReplyBody::Encoded`]).
    pub fn encoded_ok(json: Arc<[u8]>) -> ApiReply {
        ApiReply {
            status: 200,
            body: ReplyBody::Encoded { code: 0, json },
            headers: Vec::new(),
        }
    }

    /// 202 `{code: 0, msg: "accepted", data}`: a job was started (data names it).
    pub fn accepted(data: impl Serialize) -> ApiReply {
        Self::success(202, "accepted", data)
    }

    /// The error's HTTP status and `{code, msg, data: null}`.
    pub fn error(code: ErrorCode, msg: impl Into<String>) -> ApiReply {
        Self::error_with_data(code, msg, Value::Null)
    }

    /// An error that carries data, e.g. `UpdateFailed` with `{"rolledBack": true}`.
    pub fn error_with_data(code: ErrorCode, msg: impl Into<String>, data: Value) -> ApiReply {
        ApiReply {
            status: code.http_status(),
            body: ReplyBody::Json(json!({ "code": code.code(), "msg": msg.into(), "data": data })),
            headers: Vec::new(),
        }
    }

    /// A non-JSON answer (`/metrics`, `/`).
    pub fn raw(
        status: u16,
        content_type: impl Into<String>,
        bytes: impl Into<Vec<u8>>,
    ) -> ApiReply {
        ApiReply {
            status,
            body: ReplyBody::Raw {
                content_type: content_type.into(),
                bytes: bytes.into(),
            },
            headers: Vec::new(),
        }
    }

    /// Overrides the HTTP status (e.g. 503 for `DockerError` when the engine is unreachable).
    pub fn with_status(mut self, status: u16) -> ApiReply {
        self.status = status;
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> ApiReply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The `code` of a JSON reply (None for raw bodies).
    pub fn code(&self) -> Option<u64> {
        match &self.body {
            ReplyBody::Json(v) => v.get("code").and_then(Value::as_u64),
            ReplyBody::Raw { .. } => None,
            ReplyBody::Encoded { code, .. } => Some(*code),
        }
    }

    fn success(status: u16, msg: &str, data: impl Serialize) -> ApiReply {
        match serde_json::to_value(data) {
            Ok(data) => ApiReply {
                status,
                body: ReplyBody::Json(json!({ "code": 0, "msg": msg, "data": data })),
                headers: Vec::new(),
            },
            // Only a map with non-string keys or a failing Serialize impl gets here: a bug, not input.
            Err(e) => ApiReply::error(ErrorCode::Internal, format!("encoding the response: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_match_the_spec_table() {
        let table = [
            (ErrorCode::BadRequest, 40000, 400),
            (ErrorCode::ImageRequired, 40001, 400),
            (ErrorCode::Unauthorized, 40100, 401),
            (ErrorCode::Forbidden, 40300, 403),
            (ErrorCode::NotFound, 40400, 404),
            (ErrorCode::MethodNotAllowed, 40500, 405),
            (ErrorCode::Conflict, 40900, 409),
            (ErrorCode::PayloadTooLarge, 41300, 413),
            (ErrorCode::ScanFailed, 50001, 500),
            (ErrorCode::UpdateFailed, 50002, 500),
            (ErrorCode::DockerError, 50003, 502),
            (ErrorCode::RegistryError, 50004, 502),
            (ErrorCode::Internal, 50000, 500),
        ];
        for (code, n, status) in table {
            assert_eq!((code.code(), code.http_status()), (n, status), "{code:?}");
        }
    }

    #[test]
    fn base_res_shapes() {
        let r = ApiReply::ok(vec![1, 2]);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            ReplyBody::Json(json!({"code": 0, "msg": "ok", "data": [1, 2]}))
        );
        assert_eq!(ApiReply::accepted(json!({"jobId": 3})).status, 202);
        let e = ApiReply::error(ErrorCode::DockerError, "engine down").with_status(503);
        assert_eq!(e.status, 503);
        assert_eq!(e.code(), Some(50003));
        assert_eq!(
            e.body,
            ReplyBody::Json(json!({"code": 50003, "msg": "engine down", "data": null}))
        );
        let f =
            ApiReply::error_with_data(ErrorCode::UpdateFailed, "x", json!({"rolledBack": true}));
        assert_eq!(f.status, 500);
        assert_eq!(ApiReply::raw(200, "text/plain", "m 1").code(), None);
    }
}
