//! Abuse of the apply flow (OWASP API6) and of the server itself: rate limits, oversized
//! requests, slow clients. Each is refused clearly and changes nothing. Forged and tampered
//! tokens are in bad_input.rs.

use std::future::Future;
use std::time::{Duration, Instant};

use fcfs_coupon::api::FRESH_FOR;
use futures::FutureExt;
use reqwest::{Response, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{assert_problem, refills, spawn_app_with};

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Applies (`apply(0)`, `apply(1)`, …) one after another until an application is limited;
/// the statuses let through before it, the limited answer, and how long it all took. A bucket of
/// `burst` refilled `per_sec` a second lets at most `burst + refills(per_sec, took)` through, so
/// the count is judged against the time the applications really took: a slow machine cannot
/// turn it red, and a bucket that never runs dry is caught after `ATTEMPTS`.
async fn until_limited<F, Fut>(mut apply: F) -> (Vec<StatusCode>, Response, Duration)
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Response>,
{
    const ATTEMPTS: u32 = 50;
    let started = Instant::now();
    let mut passed = Vec::new();
    for attempt in 0..ATTEMPTS {
        let resp = apply(attempt).await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            return (passed, resp, started.elapsed());
        }
        passed.push(resp.status());
    }
    panic!(
        "none of {ATTEMPTS} applications was limited in {:.1?}: {passed:?}",
        started.elapsed()
    );
}

/// `passed` is a burst of `burst`, plus what a bucket refilled once a second may have gained.
fn assert_burst(passed: &[StatusCode], burst: usize, took: Duration) {
    let most = burst + refills(1, took);
    assert!(
        (burst..=most).contains(&passed.len()),
        "{} let through in {took:.1?} (a burst of {burst}, at most {most}): {passed:?}",
        passed.len()
    );
}

#[tokio::test]
async fn a_user_over_the_limit_gets_429_and_takes_no_stock() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_user_per_sec = 1;
        s.rate_limit.per_user_burst = 2;
    })
    .await;
    let coupon = app.create_stock(10).await;

    let (passed, limited, took) = until_limited(|_| app.apply(coupon, 7)).await;

    // The burst: admitted, then told again; then 429.
    assert_burst(&passed, 2, took);
    assert_eq!(passed[0], StatusCode::ACCEPTED);
    assert!(
        passed[1..].iter().all(|s| *s == StatusCode::OK),
        "{passed:?}"
    );
    let seconds = retry_after(&limited);
    assert!((1..=2).contains(&seconds), "Retry-After: {seconds}");
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED").await;
    // The limited one never reached the gate.
    app.until_applications(coupon, passed.len() as u64).await;
    assert_eq!(app.queue(coupon).await.len(), 1);
    // Others are not held back by one user's bucket.
    assert_eq!(app.apply(coupon, 8).await.status(), StatusCode::ACCEPTED);
    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("fcfs_apply_total{result=\"rate_limited\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn one_address_rotating_accounts_is_limited_before_admission() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_user_per_sec = 0;
        s.rate_limit.per_address_per_sec = 1;
        s.rate_limit.per_address_burst = 3;
    })
    .await;
    let coupon = app.create_stock(100).await;

    let (passed, limited, took) = until_limited(|i| app.apply(coupon, i64::from(i) + 1)).await;

    assert_burst(&passed, 3, took);
    assert!(
        passed.iter().all(|s| *s == StatusCode::ACCEPTED),
        "{passed:?}"
    );
    assert!(retry_after(&limited) >= 1);
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED").await;
    let through = passed.len() as i64;
    assert_eq!(
        app.admitted(coupon).await,
        (1..=through).collect::<Vec<_>>()
    );
    assert_eq!(app.coupon_json(coupon).await["remaining"], 100 - through);
}

#[tokio::test]
async fn oversized_bodies_and_headers_are_refused_and_change_nothing() {
    let app = spawn_app_with(|s| s.http.max_body_bytes = 1024).await;
    let coupon = app.create_stock(5).await;
    let (redis_before, db_before) = (app.redis_state().await, app.db_state().await);
    let admin = app.admin_token();

    // A declared length over the limit.
    let big = json!({"name": "x".repeat(4096), "stock": 5});
    let resp = app.post_coupon(Some(&admin), &big).await;
    assert_problem(resp, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE").await;
    // A chunked body with no length up front.
    let mut chunked = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let mut request = format!(
        "POST /coupons HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    for _ in 0..8 {
        request.push_str(&format!("200\r\n{}\r\n", " ".repeat(512)));
    }
    request.push_str("0\r\n\r\n");
    chunked.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0; 64];
    let read = chunked.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..read]).into_owned();
    assert!(head.starts_with("HTTP/1.1 413"), "{head:?}");
    // Headers over the limit (16 KiB by default).
    let resp = app
        .client
        .post(app.url(&format!("/coupons/{coupon}/issue")))
        .bearer_auth(app.user_token(1))
        .header("x-padding", "p".repeat(32 * 1024))
        .send()
        .await
        .unwrap();
    assert_problem(
        resp,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "HEADERS_TOO_LARGE",
    )
    .await;

    assert_eq!(app.redis_state().await, redis_before);
    assert_eq!(app.db_state().await, db_before);
}

/// How long a server told to cut after 1 s may take to close a connection: half the shortest
/// default (a request's 10 s), so the configured timeout is what closed it, and four seconds of
/// slack over it, so a busy machine does not decide the outcome.
const CUT_WITHIN: Duration = Duration::from_secs(5);

/// What the server sent before it closed the connection, which it must do within `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let started = Instant::now();
    let mut received = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut received))
        .await
        .expect("the server closed the connection in time")
        .ok();
    eprintln!(
        "closed after {:.1?} (allowed {within:?})",
        started.elapsed()
    );
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_change_nothing() {
    let idle = Duration::from_secs(1);
    let app = spawn_app_with(|s| {
        s.http.idle_timeout_ms = idle.as_millis() as u64;
        s.http.request_timeout_ms = idle.as_millis() as u64;
    })
    .await;
    let coupon = app.create_stock(5).await;
    let (redis_before, db_before) = (app.redis_state().await, app.db_state().await);
    let host = app.address.trim_start_matches("http://").to_owned();

    // Headers that never finish: the connection is closed once it goes quiet.
    let mut stalled = TcpStream::connect(&host).await.unwrap();
    stalled
        .write_all(format!("POST /coupons/{coupon}/issue HTTP/1.1\r\nHost: x\r\n").as_bytes())
        .await
        .unwrap();
    // Cut by the configured timeout, not whenever.
    let answer = read_until_closed(&mut stalled, CUT_WITHIN).await;
    assert!(!answer.contains(" 20"), "nothing was admitted: {answer:?}");

    // A body that trickles in slower than the request deadline: 408, then closed.
    let mut trickle = TcpStream::connect(&host).await.unwrap();
    let head = format!(
        "POST /coupons HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"name\":",
        app.admin_token()
    );
    trickle.write_all(head.as_bytes()).await.unwrap();
    let feed = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            if trickle.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1_500), feed).await;
    let answer = read_until_closed(&mut trickle, CUT_WITHIN).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer:?}");

    assert_eq!(app.redis_state().await, redis_before);
    assert_eq!(app.db_state().await, db_before);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    // Arrange: every test request comes from 127.0.0.1, here the load balancer.
    let app = spawn_app_with(|s| {
        s.rate_limit.per_user_per_sec = 0;
        s.rate_limit.per_address_per_sec = 1;
        s.rate_limit.per_address_burst = 2;
        s.http.trusted_proxies = "127.0.0.1/32".into();
    })
    .await;
    let coupon = app.create_stock(200).await;
    let apply_from = |user: i64, forwarded: String| {
        let app = &app;
        async move {
            app.client
                .post(app.url(&format!("/coupons/{coupon}/issue")))
                .bearer_auth(app.user_token(user))
                .header("X-Forwarded-For", forwarded)
                .send()
                .await
                .unwrap()
        }
    };

    // Act + Assert: one client rotating accounts, each time behind another forged left-most
    // entry, is one bucket (a forged entry that escaped it would never be limited); another
    // client is not held back; one IPv6 /64 is one client.
    let (forged, _, took) =
        until_limited(|i| apply_from(i64::from(i) + 1, format!("9.9.9.{i}, 203.0.113.7"))).await;
    assert_burst(&forged, 2, took);
    let other = apply_from(100, "198.51.100.1".into()).await.status();
    assert_eq!(other, StatusCode::ACCEPTED);
    let (v6, _, took) =
        until_limited(|i| apply_from(i64::from(i) + 101, format!("2001:db8::{:x}", i + 1))).await;
    assert_burst(&v6, 2, took);
    let mut admitted: Vec<i64> = (1..=forged.len() as i64).collect();
    admitted.push(100);
    admitted.extend(101..=100 + v6.len() as i64);
    assert_eq!(app.admitted(coupon).await, admitted);
}

#[tokio::test]
async fn forwarded_addresses_from_an_untrusted_peer_are_ignored() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_user_per_sec = 0;
        s.rate_limit.per_address_per_sec = 1;
        s.rate_limit.per_address_burst = 2;
    })
    .await;
    let coupon = app.create_stock(100).await;
    // Each claims another address: believed, none would ever be limited.
    let (passed, _, took) = until_limited(|i| {
        app.client
            .post(app.url(&format!("/coupons/{coupon}/issue")))
            .bearer_auth(app.user_token(i64::from(i) + 1))
            .header("X-Forwarded-For", format!("203.0.113.{}", i + 1))
            .send()
            .map(Result::unwrap)
    })
    .await;
    assert_burst(&passed, 2, took);
    assert!(
        passed.iter().all(|s| *s == StatusCode::ACCEPTED),
        "{passed:?}"
    );
}

#[tokio::test]
async fn public_readiness_and_stats_are_read_once_a_second_whatever_the_crowd() {
    // Arrange: the service's own Redis, so its PINGs can be counted.
    let redis = crate::helpers::PrivateRedis::start().await;
    let app = spawn_app_with(|s| {
        s.redis.url = format!("redis://127.0.0.1:{}", redis.port).into();
        s.rate_limit.per_user_per_sec = 0;
    })
    .await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();

    // Act: 200 readiness probes at once on the public port.
    let started = Instant::now();
    let probes = futures::future::join_all((0..200).map(|_| app.get("/health/ready"))).await;
    let pinged = redis.pings().await;
    let took = started.elapsed();

    // Assert: all answered ready; Redis was pinged once for all of them, once more if the copy
    // turned while they ran, and once for every further second they took (a busy machine).
    assert!(probes.iter().all(|r| r.status() == StatusCode::OK));
    let most = 2 + took.as_secs();
    assert!(
        (1..=most).contains(&pinged),
        "{pinged} PINGs for 200 probes in {took:.1?} (at most {most})"
    );

    // Stats: a copy at most a second old, then the change. An event's first read loads its
    // copy, so a read answered less than FRESH_FOR after it was sent must be served from that
    // copy; a busy machine that took longer tries again on a new event.
    let stats = |coupon: i64| {
        let app = &app;
        async move {
            app.get(&format!("/coupons/{coupon}/stats"))
                .await
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let mut tries = 0;
    let coupon = loop {
        tries += 1;
        let coupon = app.create_stock(5).await;
        let loading = Instant::now();
        assert_eq!(stats(coupon).await["admitted"], 0);
        assert_eq!(app.apply(coupon, 7).await.status(), StatusCode::ACCEPTED);
        let again = stats(coupon).await;
        let took = loading.elapsed();
        if took < FRESH_FOR {
            assert_eq!(again["admitted"], 0, "served from the copy");
            break coupon;
        }
        assert!(tries < 10, "{tries} tries, the last reads {took:.1?} apart");
    };
    let fresh = crate::helpers::eventually("the next copy", Duration::from_secs(30), || async {
        let s = stats(coupon).await;
        (s["admitted"] == 1).then_some(s)
    })
    .await;
    assert_eq!(fresh["stock"], 5);
}

#[tokio::test]
async fn the_ops_port_refuses_oversized_headers_and_cuts_idle_connections_like_the_public_one() {
    let idle = Duration::from_secs(1);
    let app = spawn_app_with(|s| {
        s.http.idle_timeout_ms = idle.as_millis() as u64;
        s.http.request_timeout_ms = idle.as_millis() as u64;
    })
    .await;
    let resp = app
        .client
        .get(format!("{}/metrics", app.ops_address))
        .header("x-padding", "p".repeat(32 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let host = app.ops_address.trim_start_matches("http://").to_owned();
    let mut stalled = TcpStream::connect(&host).await.unwrap();
    stalled
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stalled, CUT_WITHIN).await;
    assert!(!answer.contains(" 200"), "{answer:?}");
}
