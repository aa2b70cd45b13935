//! What a CDN or reverse proxy in front of the shop may keep. The public reads a crowd
//! refreshes are served from a copy at most a second old (see `fresh`), so they say so:
//! `Cache-Control: public, max-age=1`, with an `ETag` that a client sends back in
//! `If-None-Match` to get an empty 304 when nothing changed. An answer a handler marked itself
//! (a fairness log's immutable leaves and proofs) keeps its own `Cache-Control`.

use poem::http::{header, HeaderValue, Method, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response, Result};
use sha2::{Digest, Sha256};

const ONE_SECOND: &str = "public, max-age=1";

/// Around the API: marks the public reads and answers `If-None-Match`.
pub async fn public<E: Endpoint>(inner: E, req: Request) -> Result<Response> {
    let cacheable = req.method() == Method::GET && refreshed_each_second(req.original_uri().path());
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
    let mut response = inner.call(req).await?.into_response();
    if response.status() != StatusCode::OK {
        return Ok(response);
    }
    if cacheable && !response.headers().contains_key(header::CACHE_CONTROL) {
        (response.headers_mut())
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(ONE_SECOND));
    }
    let public = (response.headers().get(header::CACHE_CONTROL))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|d| d.trim() == "public"));
    if !public {
        return Ok(response);
    }
    let body = response.take_body().into_bytes().await?;
    let tag = etag(&body);
    let unchanged = if_none_match
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches(v, &tag));
    let tag = HeaderValue::from_str(&tag).expect("hex in quotes is a valid header value");
    response.headers_mut().insert(header::ETAG, tag);
    if unchanged {
        response.set_status(StatusCode::NOT_MODIFIED);
        response.headers_mut().remove(header::CONTENT_TYPE);
        response.headers_mut().remove(header::CONTENT_LENGTH);
    } else {
        response.set_body(body);
    }
    Ok(response)
}

/// `GET /coupons`, an event, its stats, its log's checkpoint, the log's key.
fn refreshed_each_second(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/coupons") else {
        return path == "/fairness/key";
    };
    let Some(rest) = rest.strip_prefix('/') else {
        return rest.is_empty();
    };
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && matches!(tail, "" | "stats" | "log/checkpoint")
}

/// A strong validator: the body's SHA-256, shortened (a collision only serves a 304 for a
/// second-old answer that changed).
fn etag(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(&Sha256::digest(body)[..12]))
}

/// RFC 9110 §13.1.2: a list of tags, or `*`; weak comparison, so `W/` prefixes match too.
fn matches(if_none_match: &str, tag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_public_reads_are_marked() {
        for path in [
            "/coupons",
            "/coupons/7",
            "/coupons/7/stats",
            "/coupons/7/log/checkpoint",
            "/fairness/key",
        ] {
            assert!(refreshed_each_second(path), "{path}");
        }
        for path in [
            "/coupons/",
            "/coupons/7/position",
            "/coupons/7/apply",
            "/coupons/x",
            "/coupons/7/log/leaves",
            "/me/coupons",
            "/health/ready",
            "/couponsx",
        ] {
            assert!(!refreshed_each_second(path), "{path}");
        }
    }

    #[test]
    fn if_none_match_lists_and_weak_tags_match() {
        let tag = etag(b"{}");
        assert!(matches(&tag, &tag));
        assert!(matches(&format!("\"x\", W/{tag}"), &tag));
        assert!(matches("*", &tag));
        assert!(!matches("\"x\"", &tag));
    }
}
