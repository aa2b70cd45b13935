//! Limits every request before a handler sees it: header and body sizes, and a deadline for
//! the whole request (a slow upload included). Refusals are problem+json like every error.

use std::time::Duration;

use poem::http::header;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};

use super::problem::{ErrorCode, Problem};
use crate::configuration::HttpSettings;

pub struct RequestGuard {
    max_body_bytes: usize,
    max_header_bytes: usize,
    timeout: Duration,
}

impl RequestGuard {
    pub fn new(settings: &HttpSettings) -> Self {
        Self {
            max_body_bytes: settings.max_body_bytes,
            max_header_bytes: settings.max_header_bytes,
            timeout: settings.request_timeout(),
        }
    }
}

impl<E: Endpoint> Middleware<E> for RequestGuard {
    type Output = Guarded<E>;

    fn transform(&self, inner: E) -> Self::Output {
        Guarded {
            inner,
            max_body_bytes: self.max_body_bytes,
            max_header_bytes: self.max_header_bytes,
            timeout: self.timeout,
        }
    }
}

pub struct Guarded<E> {
    inner: E,
    max_body_bytes: usize,
    max_header_bytes: usize,
    timeout: Duration,
}

impl<E: Endpoint> Endpoint for Guarded<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> Result<Response> {
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if header_bytes > self.max_header_bytes {
            return Ok(refuse(
                ErrorCode::HeadersTooLarge,
                format!(
                    "Request headers are limited to {} bytes.",
                    self.max_header_bytes
                ),
            ));
        }
        let too_large = || {
            refuse(
                ErrorCode::PayloadTooLarge,
                format!(
                    "Request bodies are limited to {} bytes.",
                    self.max_body_bytes
                ),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let work = async {
            match declared {
                // hyper holds the body to its declared length, so the header is enough.
                Some(length) if length > self.max_body_bytes as u64 => return Ok(too_large()),
                Some(_) => {}
                // A chunked body has no length up front: read it, up to the limit.
                None => match req.take_body().into_bytes_limit(self.max_body_bytes).await {
                    Ok(bytes) => req.set_body(bytes),
                    Err(poem::error::ReadBodyError::PayloadTooLarge) => return Ok(too_large()),
                    Err(e) => return Err(e.into()),
                },
            }
            self.inner.call(req).await.map(IntoResponse::into_response)
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let mut response = refuse(
                    ErrorCode::RequestTimeout,
                    format!(
                        "The request did not complete within {} ms.",
                        self.timeout.as_millis()
                    ),
                );
                response.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
                Ok(response)
            }
        }
    }
}

fn refuse(code: ErrorCode, detail: String) -> Response {
    Problem::new(code, detail).into_http(None)
}
