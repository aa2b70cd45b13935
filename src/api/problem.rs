//! Errors as RFC 9457 problem details, mapped to HTTP in this one place.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object};

use crate::gate::GateError;

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
    SoldOut,
    PayloadTooLarge,
    HeadersTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound | Self::CouponNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::EventNotOpen | Self::EventClosed => StatusCode::CONFLICT,
            Self::SoldOut => StatusCode::GONE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::InvalidRequest => "The request is invalid",
            Self::Unauthorized => "Authentication is required",
            Self::Forbidden => "Not allowed",
            Self::NotFound => "No such resource",
            Self::CouponNotFound => "No such coupon event",
            Self::MethodNotAllowed => "Method not allowed",
            Self::EventNotOpen => "The event has not opened yet",
            Self::EventClosed => "The event is closed",
            Self::SoldOut => "Sold out",
            Self::PayloadTooLarge => "The request body is too large",
            Self::HeadersTooLarge => "The request headers are too large",
            Self::RequestTimeout => "The request took too long",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::RateLimited => "Too many requests",
            Self::Unavailable => "Temporarily unavailable",
            Self::Internal => "Internal error",
        }
    }

    /// `SOLD_OUT` → `sold-out`, for the problem `type` URI.
    fn slug(self) -> String {
        use poem_openapi::types::ToJSON;
        let name = self.to_json();
        let name = name.as_ref().and_then(|v| v.as_str()).unwrap_or_default();
        name.to_lowercase().replace('_', "-")
    }
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
        Self {
            kind: format!("urn:fcfs-coupon:problem:{}", code.slug()),
            title: code.title().to_owned(),
            status: code.status().as_u16(),
            detail: detail.into(),
            code,
        }
    }

    pub fn into_http(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Json(self)
            .with_content_type(PROBLEM_JSON)
            .with_status(status)
            .into_response()
    }
}

/// Every error an endpoint can answer with, so each status appears in the OpenAPI spec.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// INVALID_REQUEST: a malformed id, parameter or body.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// UNAUTHORIZED: the bearer token is missing, malformed, expired or not signed by us.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// FORBIDDEN: an admin call made with a user token.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    /// COUPON_NOT_FOUND: no such coupon event.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// EVENT_NOT_OPEN or EVENT_CLOSED: outside the event window.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// SOLD_OUT: the stock is gone; the caller did not get in.
    #[oai(status = 410, content_type = "application/problem+json")]
    Gone(Json<Problem>),
    /// RATE_LIMITED: too many applications from this user or address; nothing was counted.
    /// Retry after the number of seconds in `Retry-After`.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(
        Json<Problem>,
        /// Seconds until the next application will be let through.
        #[oai(header = "Retry-After")]
        u64,
    ),
    /// INTERNAL: a fault on our side; details are in the service log, not here.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// UNAVAILABLE: Redis or PostgreSQL cannot be reached; nothing was changed, try again.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
    /// Any other problem (405, 408, 413, 415, 431, …).
    #[oai(content_type = "application/problem+json")]
    Other(StatusCode, Json<Problem>),
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        let problem = Json(Problem::new(code, detail));
        match code.status().as_u16() {
            400 => Self::BadRequest(problem),
            401 => Self::Unauthorized(problem),
            403 => Self::Forbidden(problem),
            404 => Self::NotFound(problem),
            409 => Self::Conflict(problem),
            410 => Self::Gone(problem),
            429 => Self::TooManyRequests(problem, 1),
            500 => Self::Internal(problem),
            503 => Self::Unavailable(problem),
            _ => Self::Other(code.status(), problem),
        }
    }

    pub fn invalid(detail: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidRequest, detail.to_string())
    }

    /// 429 with `Retry-After` in whole seconds, rounded up (a client must never come back early).
    pub fn rate_limited(retry_after: std::time::Duration, detail: impl Into<String>) -> Self {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        Self::TooManyRequests(
            Json(Problem::new(ErrorCode::RateLimited, detail)),
            seconds.max(1),
        )
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
}

impl From<GateError> for ApiError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::Unavailable(cause) => Self::unavailable(&cause),
            GateError::Unexpected(cause) => Self::internal(cause),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                Self::unavailable(&e.into())
            }
            other => Self::internal(other.into()),
        }
    }
}
