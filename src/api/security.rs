use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;

use super::problem::{ApiError, ErrorCode, Problem};
use super::state::AppState;
use crate::auth::{Caller, TokenError};

/// `Authorization: Bearer <JWT>`: HS256 from this service (mint one with `fcfs-coupon token
/// --user 42 [--admin]`) or RS256/ES256 from the configured identity provider; the user id claim
/// (`sub` by default) a positive integer, `exp` required, `role: "admin"` for admin calls.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "verify")]
pub struct BearerAuth(pub Caller);

async fn verify(req: &Request, bearer: Bearer) -> poem::Result<Caller> {
    let refuse = |detail: String| {
        poem::Error::from_response(Problem::new(ErrorCode::Unauthorized, detail).into_http(None))
    };
    let Some(state) = req.data::<AppState>() else {
        tracing::error!("AppState is not attached");
        return Err(poem::Error::from_response(
            Problem::new(ErrorCode::Internal, "An internal error occurred.").into_http(None),
        ));
    };
    state
        .tokens
        .verify(&bearer.token)
        .await
        .map_err(|e| match e {
            // The caller may hold a good token: ask again, do not sign in again.
            TokenError::KeysUnavailable => poem::Error::from_response(
                Problem::new(ErrorCode::Unavailable, e.to_string())
                    .into_http(Some(KEYS_RETRY_AFTER.as_secs())),
            ),
            _ => refuse(e.to_string()),
        })
}

/// When asking again may find the provider's keys (its refetch limit).
const KEYS_RETRY_AFTER: std::time::Duration = crate::auth::JWKS_REFRESH_AT_MOST_EVERY;

impl BearerAuth {
    pub fn require_admin<const C: u32>(&self) -> Result<Caller, ApiError<C>> {
        if self.0.admin {
            Ok(self.0)
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                "This call needs a token with the admin role.",
            ))
        }
    }
}
