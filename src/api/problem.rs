//! Errors as RFC 9457 problem details. [`ErrorCode::spec`] is the one table from a code to its
//! HTTP answer; every error the service sends, from a handler or from the framework, goes
//! through it.

use poem::http::{header, HeaderValue, StatusCode};
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object};

const PROBLEM_JSON: &str = "application/problem+json";

/// Stable, machine-readable error codes. Clients branch on these, never on `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    CouponNotFound,
    MethodNotAllowed,
    EventNotOpen,
    EventClosed,
    EventBusy,
    SoldOut,
    PayloadTooLarge,
    HeadersTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    RateLimited,
    Unavailable,
    Internal,
}

/// How one code is answered.
pub struct CodeSpec {
    pub status: StatusCode,
    pub title: &'static str,
    /// For the spec: what the code means to a client.
    pub meaning: &'static str,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 17] = [
        Self::InvalidRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::CouponNotFound,
        Self::MethodNotAllowed,
        Self::EventNotOpen,
        Self::EventClosed,
        Self::EventBusy,
        Self::SoldOut,
        Self::PayloadTooLarge,
        Self::HeadersTooLarge,
        Self::RequestTimeout,
        Self::UnsupportedMediaType,
        Self::RateLimited,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The table.
    pub const fn spec(self) -> CodeSpec {
        use StatusCode as S;
        let (status, title, meaning) = match self {
            Self::InvalidRequest => (S::BAD_REQUEST, "The request is invalid", "a malformed id, parameter or body"),
            Self::Unauthorized => (S::UNAUTHORIZED, "Authentication is required", "the bearer token is missing, malformed, expired or not signed by us"),
            Self::Forbidden => (S::FORBIDDEN, "Not allowed", "an admin call made with a user token, a rehearsal token on a real event, or deleting a real event"),
            Self::NotFound => (S::NOT_FOUND, "No such resource", "no such route"),
            Self::CouponNotFound => (S::NOT_FOUND, "No such coupon event", "no such coupon event"),
            Self::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "Method not allowed", "the route does not take that method"),
            Self::EventNotOpen => (S::CONFLICT, "The event has not opened yet", "before `opensAt`"),
            Self::EventClosed => (S::CONFLICT, "The event is closed", "at or after `closesAt`"),
            Self::EventBusy => (S::CONFLICT, "The event is busy", "winners are still on their way to the database; try again once they are issued"),
            Self::SoldOut => (S::GONE, "Sold out", "the stock is gone; the caller did not get in"),
            Self::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "The request body is too large", "the body is over the configured limit"),
            Self::HeadersTooLarge => (S::REQUEST_HEADER_FIELDS_TOO_LARGE, "The request headers are too large", "the headers are over the configured limit"),
            Self::RequestTimeout => (S::REQUEST_TIMEOUT, "The request took too long", "the request was not complete within the deadline"),
            Self::UnsupportedMediaType => (S::UNSUPPORTED_MEDIA_TYPE, "Unsupported media type", "the body is not `application/json`"),
            Self::RateLimited => (S::TOO_MANY_REQUESTS, "Too many requests", "too many requests from this user or address; nothing was counted"),
            Self::Unavailable => (S::SERVICE_UNAVAILABLE, "Temporarily unavailable", "a data store cannot be reached, the event is being restored, or replicas did not confirm; nothing was changed"),
            Self::Internal => (S::INTERNAL_SERVER_ERROR, "Internal error", "a fault on our side; details are in the service log, not here"),
        };
        CodeSpec {
            status,
            title,
            meaning,
        }
    }

    pub fn status(self) -> StatusCode {
        self.spec().status
    }

    /// The code a framework error with this status is answered with: the first in the table.
    pub fn for_status(status: StatusCode) -> Self {
        Self::ALL
            .into_iter()
            .find(|c| c.status() == status)
            .unwrap_or(if status.is_server_error() {
                Self::Internal
            } else {
                Self::InvalidRequest
            })
    }

    /// One bit per code, for [`codes`].
    const fn bit(self) -> u32 {
        1 << self as u32
    }

    /// `SOLD_OUT` → `sold-out`, for the problem `type` URI.
    fn slug(self) -> String {
        use poem_openapi::types::ToJSON;
        let name = self.to_json();
        let name = name.as_ref().and_then(|v| v.as_str()).unwrap_or_default();
        name.to_lowercase().replace('_', "-")
    }
}

/// The set of codes an operation declares, as the const parameter of [`ApiError`].
pub const fn codes(list: &[ErrorCode]) -> u32 {
    let mut mask = 0;
    let mut i = 0;
    while i < list.len() {
        mask |= list[i].bit();
        i += 1;
    }
    mask
}

/// The error body: `{type, title, status, detail, code}`.
#[derive(Debug, Clone, Object)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[oai(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong with this request, for a person. Never internal error text.
    pub detail: String,
    pub code: ErrorCode,
}

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        let spec = code.spec();
        Self {
            kind: format!("urn:fcfs-coupon:problem:{}", code.slug()),
            title: spec.title.to_owned(),
            status: spec.status.as_u16(),
            detail: detail.into(),
            code,
        }
    }

    /// The HTTP answer: problem+json, `WWW-Authenticate` on 401, `Retry-After` when given.
    pub fn into_http(self, retry_after_secs: Option<u64>) -> Response {
        let code = self.code;
        let mut response = Json(self)
            .with_content_type(PROBLEM_JSON)
            .with_status(code.status())
            .into_response();
        let headers = response.headers_mut();
        if code == ErrorCode::Unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// An error answer of an operation that declares the codes in `CODES` (see [`codes`]); the spec
/// lists exactly their statuses, with `WWW-Authenticate` on 401 and `Retry-After` on 429/503.
#[derive(Debug)]
pub struct ApiError<const CODES: u32> {
    problem: Problem,
    retry_after_secs: Option<u64>,
}

/// How long a client is told to wait after a 503: Redis reconnects, a failover or a restore
/// take about that long.
const UNAVAILABLE_RETRY_SECS: u64 = 1;

impl<const CODES: u32> ApiError<CODES> {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        if CODES & code.bit() == 0 {
            // A handler answered with a code its operation does not declare: the spec is wrong.
            tracing::error!(
                ?code,
                "answering with an error code the operation does not declare"
            );
            debug_assert!(false, "undeclared error code {code:?}");
        }
        let retry_after_secs = (code == ErrorCode::Unavailable).then_some(UNAVAILABLE_RETRY_SECS);
        Self {
            problem: Problem::new(code, detail),
            retry_after_secs,
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.problem.code
    }

    pub fn invalid(detail: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidRequest, detail.to_string())
    }

    /// "No coupon N.", the one way every operation says it.
    pub fn no_coupon(coupon: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::CouponNotFound, format!("No coupon {coupon}."))
    }

    /// 429 with `Retry-After` in whole seconds, rounded up (a client must never come back early).
    pub fn rate_limited(retry_after: std::time::Duration, detail: impl Into<String>) -> Self {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let mut error = Self::new(ErrorCode::RateLimited, detail);
        error.retry_after_secs = Some(seconds.max(1));
        error
    }

    pub fn unavailable(cause: &anyhow::Error) -> Self {
        tracing::warn!(error = ?cause, "dependency unavailable");
        Self::new(
            ErrorCode::Unavailable,
            "The service cannot reach its data store; nothing was changed. Try again shortly.",
        )
    }

    /// Logs the whole cause chain; the client learns only that it was our fault.
    pub fn internal(cause: anyhow::Error) -> Self {
        tracing::error!(error = ?cause, "request failed");
        Self::new(ErrorCode::Internal, "An internal error occurred.")
    }

    /// The same problem as an answer of another operation (a shared helper's error).
    pub fn into_other<const OTHER: u32>(self) -> ApiError<OTHER> {
        let mut other = ApiError::<OTHER>::new(self.problem.code, self.problem.detail);
        other.retry_after_secs = self.retry_after_secs;
        other
    }
}

impl<const CODES: u32> IntoResponse for ApiError<CODES> {
    fn into_response(self) -> Response {
        self.problem.into_http(self.retry_after_secs)
    }
}

impl<const CODES: u32> From<ApiError<CODES>> for poem::Error {
    fn from(e: ApiError<CODES>) -> Self {
        poem::Error::from_response(e.into_response())
    }
}

/// The stages' errors as answers: unreachable dependencies are 503, anything else is ours.
mod from_stages {
    use super::{ApiError, ErrorCode};
    use crate::gate::GateError;
    use crate::ops::AuditError;
    use crate::store::{self, StoreError};

    impl<const C: u32> From<GateError> for ApiError<C> {
        fn from(e: GateError) -> Self {
            match e {
                GateError::Unavailable(cause) => Self::unavailable(&cause),
                // Handlers read a retired coupon from PostgreSQL; one that does not is ours.
                GateError::Retired => Self::internal(anyhow::anyhow!(
                    "a retired coupon reached a handler without a PostgreSQL fallback"
                )),
                GateError::Held => Self::new(
                    ErrorCode::Unavailable,
                    "This coupon event is being restored after a Redis failure; nothing was \
                     changed. Try again shortly.",
                ),
                GateError::NotReplicated => Self::new(
                    ErrorCode::Unavailable,
                    "Your application could not be confirmed yet. Apply again shortly: if it \
                     was recorded, you keep your place.",
                ),
                GateError::Unexpected(cause) => Self::internal(cause),
            }
        }
    }

    impl<const C: u32> From<StoreError> for ApiError<C> {
        fn from(e: StoreError) -> Self {
            match e {
                StoreError::Unavailable(_) => Self::unavailable(&e.into()),
                other => Self::internal(other.into()),
            }
        }
    }

    impl<const C: u32> From<sqlx::Error> for ApiError<C> {
        fn from(e: sqlx::Error) -> Self {
            if store::is_unavailable(&e) {
                Self::unavailable(&e.into())
            } else {
                Self::internal(e.into())
            }
        }
    }

    impl<const C: u32> From<AuditError> for ApiError<C> {
        fn from(e: AuditError) -> Self {
            match e {
                AuditError::Gate(e) => e.into(),
                AuditError::Store(e) => e.into(),
            }
        }
    }
}

mod spec {
    use poem_openapi::payload::{Json, Payload};
    use poem_openapi::registry::{
        MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry,
    };
    use poem_openapi::types::Type;
    use poem_openapi::ApiResponse;

    use super::{ApiError, ErrorCode, Problem, PROBLEM_JSON};

    fn header(name: &str, description: &str, schema: MetaSchemaRef) -> MetaHeader {
        MetaHeader {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            required: true,
            deprecated: false,
            schema,
        }
    }

    /// "`SOLD_OUT`: the stock is gone…" for every declared code of one status.
    fn describe(codes: &[ErrorCode]) -> &'static str {
        let text = codes
            .iter()
            .map(|c| {
                let name = poem_openapi::types::ToJSON::to_json(c)
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                format!("`{name}`: {}.", c.spec().meaning)
            })
            .collect::<Vec<_>>()
            .join(" ");
        // Built once per operation when the spec is generated; the registry wants 'static.
        Box::leak(text.into_boxed_str())
    }

    impl<const CODES: u32> ApiResponse for ApiError<CODES> {
        fn meta() -> MetaResponses {
            let mut statuses: Vec<u16> = ErrorCode::ALL
                .iter()
                .filter(|c| CODES & c.bit() != 0)
                .map(|c| c.status().as_u16())
                .collect();
            statuses.sort_unstable();
            statuses.dedup();
            let responses = statuses
                .into_iter()
                .map(|status| {
                    let declared: Vec<ErrorCode> = ErrorCode::ALL
                        .into_iter()
                        .filter(|c| CODES & c.bit() != 0 && c.status().as_u16() == status)
                        .collect();
                    let mut headers = Vec::new();
                    if status == 401 {
                        headers.push(header(
                            "WWW-Authenticate",
                            "`Bearer`: send `Authorization: Bearer <JWT>`.",
                            String::schema_ref(),
                        ));
                    }
                    if status == 429 || status == 503 {
                        headers.push(header(
                            "Retry-After",
                            "Seconds to wait before trying again.",
                            u64::schema_ref(),
                        ));
                    }
                    MetaResponse {
                        description: describe(&declared),
                        status: Some(status),
                        status_range: None,
                        content: vec![MetaMediaType {
                            content_type: PROBLEM_JSON,
                            schema: Json::<Problem>::schema_ref(),
                        }],
                        headers,
                    }
                })
                .collect();
            MetaResponses { responses }
        }

        fn register(registry: &mut Registry) {
            Problem::register(registry);
        }
    }
}

/// Each operation's declared codes. Every operation that reads a data store can answer 500
/// and 503; path ids can be malformed (400); a bearer token can be refused (401).
pub mod declared {
    use super::{codes, ErrorCode::*};

    const STORE: [super::ErrorCode; 2] = [Internal, Unavailable];

    pub const READ: u32 = codes(&STORE);
    pub const READ_COUPON: u32 = READ | codes(&[InvalidRequest, CouponNotFound]);
    pub const USER: u32 = READ | codes(&[Unauthorized]);
    /// A rehearsal token on a real event is refused (403), on the user's own calls too.
    const OWN: u32 = USER | codes(&[InvalidRequest, CouponNotFound, Forbidden]);
    /// A receipt is read from PostgreSQL, so it is limited per user.
    pub const POSITION: u32 = OWN | codes(&[RateLimited]);
    pub const APPLY: u32 = POSITION | codes(&[EventNotOpen, EventClosed, SoldOut]);
    /// The caller's coupons, read from PostgreSQL: limited per user.
    pub const MINE: u32 = USER | codes(&[RateLimited]);
    /// The fairness log's public reads (404 `NOT_FOUND` when the log is off).
    pub const LOG: u32 = READ_COUPON | codes(&[NotFound]);
    /// The verifier key needs no data store: 404 `NOT_FOUND` when the log is off.
    pub const KEY: u32 = codes(&[NotFound]);
    pub const ADMIN_COUPON: u32 = OWN | codes(&[Forbidden]);
    /// Deleting a rehearsal event: 403 for a real one, 409 while its winners are on their way.
    pub const DELETE: u32 = ADMIN_COUPON | codes(&[EventBusy]);
    pub const CREATE: u32 = USER
        | codes(&[
            InvalidRequest,
            Forbidden,
            PayloadTooLarge,
            UnsupportedMediaType,
        ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_maps_back_to_a_code_with_that_status() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::for_status(code.status()).status(), code.status());
        }
        assert_eq!(
            ErrorCode::for_status(StatusCode::BAD_GATEWAY),
            ErrorCode::Internal
        );
    }

    #[test]
    fn all_lists_every_code_once_in_declaration_order() {
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, i);
        }
    }
}
