use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;

use super::problem::{ApiError, ErrorCode};
use super::state::AppState;
use crate::auth::Caller;

/// `Authorization: Bearer <JWT>`: HS256, `sub` = user id, `exp` required, `role: "admin"` for admin
/// calls. Mint one with `fcfs-coupon token --user 42 [--admin]`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "verify")]
pub struct BearerAuth(pub Caller);

async fn verify(req: &Request, bearer: Bearer) -> poem::Result<Caller> {
    let state = req
        .data::<AppState>()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("AppState is not attached")))?;
    state
        .tokens
        .verify(&bearer.token)
        .map_err(|e| ApiError::new(ErrorCode::Unauthorized, e.to_string()).into())
}

impl BearerAuth {
    pub fn require_admin(&self) -> Result<Caller, ApiError> {
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
