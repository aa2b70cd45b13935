//! Turns every error that did not come from a handler (bad path, bad body, no token, unknown
//! route) into the same problem+json shape, so clients parse one error format.

use poem::error::{MethodNotAllowedError, NotFoundError};
use poem::Response;
use poem_openapi::error::{
    AuthorizationError, ContentTypeError, ParseParamError, ParsePathError, ParseRequestPayloadError,
};

use super::problem::{ErrorCode, Problem};

pub async fn to_problem(err: poem::Error) -> Response {
    if err.is_from_response() {
        // Built by our handlers or the bearer checker: already a problem response.
        return err.into_response();
    }
    let problem = if err.is::<ParseParamError>()
        || err.is::<ParsePathError>()
        || err.is::<ParseRequestPayloadError>()
    {
        // These describe the client's own input, so their text helps and leaks nothing.
        Problem::new(ErrorCode::InvalidRequest, err.to_string())
    } else if err.is::<AuthorizationError>() {
        Problem::new(
            ErrorCode::Unauthorized,
            "Send Authorization: Bearer <token>.",
        )
    } else if err.is::<ContentTypeError>() {
        Problem::new(ErrorCode::UnsupportedMediaType, err.to_string())
    } else if err.is::<NotFoundError>() {
        Problem::new(ErrorCode::NotFound, "No such route.")
    } else if err.is::<MethodNotAllowedError>() {
        Problem::new(
            ErrorCode::MethodNotAllowed,
            "This route does not take that method.",
        )
    } else {
        by_status(err)
    };
    problem.into_http(None)
}

/// Any other framework error, by its status, through the same table as every other answer.
fn by_status(err: poem::Error) -> Problem {
    let status = err.status();
    let code = ErrorCode::for_status(status);
    if code == ErrorCode::Internal {
        tracing::error!(error = %err, %status, "unhandled server error");
        return Problem::new(code, "An internal error occurred.");
    }
    Problem::new(code, status.canonical_reason().unwrap_or("Bad request"))
}
