//! Abuse of the apply flow (OWASP API6) and of the server itself: rate limits, oversized
//! requests, slow clients. Each is refused clearly and changes nothing. Forged and tampered
//! tokens are in bad_input.rs.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{assert_problem, spawn_app_with};

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_user_over_the_limit_gets_429_and_takes_no_stock() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_user_per_sec = 1;
        s.rate_limit.per_user_burst = 2;
    })
    .await;
    let coupon = app.create_stock(10).await;

    let first = app.apply(coupon, 7).await.status();
    let second = app.apply(coupon, 7).await.status();
    let third = app.apply(coupon, 7).await;

    assert_eq!((first, second), (StatusCode::ACCEPTED, StatusCode::OK));
    let seconds = retry_after(&third);
    assert!((1..=2).contains(&seconds), "Retry-After: {seconds}");
    assert_problem(third, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED").await;
    // The limited one never reached the gate.
    app.until_applications(coupon, 2).await;
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
    let coupon = app.create_stock(10).await;

    let statuses = [
        app.apply(coupon, 1).await.status(),
        app.apply(coupon, 2).await.status(),
        app.apply(coupon, 3).await.status(),
    ];
    let fourth = app.apply(coupon, 4).await;

    assert_eq!(statuses, [StatusCode::ACCEPTED; 3]);
    assert!(retry_after(&fourth) >= 1);
    assert_problem(fourth, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED").await;
    let admitted = app.admitted(coupon).await;
    assert_eq!(admitted, vec![1, 2, 3]);
    assert_eq!(app.coupon_json(coupon).await["remaining"], 7);
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

/// Reads until the server closes the connection; what it sent before closing.
/// What the server sent before it closed the connection, which it must do within `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let started = std::time::Instant::now();
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
    // Cut within a few idle timeouts, not whenever.
    let answer = read_until_closed(&mut stalled, 3 * idle).await;
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
    let answer = read_until_closed(&mut trickle, 3 * idle).await;
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
    let coupon = app.create_stock(20).await;
    let apply_from = |user: i64, forwarded: &'static str| {
        let app = &app;
        async move {
            app.client
                .post(app.url(&format!("/coupons/{coupon}/issue")))
                .bearer_auth(app.user_token(user))
                .header("X-Forwarded-For", forwarded)
                .send()
                .await
                .unwrap()
                .status()
        }
    };

    // Act + Assert: one client rotating accounts is limited; another client is not; a forged
    // left-most entry does not escape the bucket; one IPv6 /64 is one client.
    assert_eq!(apply_from(1, "203.0.113.7").await, StatusCode::ACCEPTED);
    assert_eq!(apply_from(2, "203.0.113.7").await, StatusCode::ACCEPTED);
    assert_eq!(
        apply_from(3, "9.9.9.9, 203.0.113.7").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(apply_from(4, "198.51.100.1").await, StatusCode::ACCEPTED);
    assert_eq!(apply_from(5, "2001:db8::1").await, StatusCode::ACCEPTED);
    assert_eq!(apply_from(6, "2001:db8::2").await, StatusCode::ACCEPTED);
    assert_eq!(
        apply_from(7, "2001:db8::3").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(app.admitted(coupon).await, vec![1, 2, 4, 5, 6]);
}

#[tokio::test]
async fn forwarded_addresses_from_an_untrusted_peer_are_ignored() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_user_per_sec = 0;
        s.rate_limit.per_address_per_sec = 1;
        s.rate_limit.per_address_burst = 2;
    })
    .await;
    let coupon = app.create_stock(20).await;
    let mut statuses = Vec::new();
    for (user, forwarded) in [(1, "203.0.113.1"), (2, "203.0.113.2"), (3, "203.0.113.3")] {
        let resp = app
            .client
            .post(app.url(&format!("/coupons/{coupon}/issue")))
            .bearer_auth(app.user_token(user))
            .header("X-Forwarded-For", forwarded)
            .send()
            .await
            .unwrap();
        statuses.push(resp.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

/// `PING`s a Redis server has answered since its stats were last reset.
async fn pings(server: &crate::helpers::PrivateRedis) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut server.connection().await)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_default()
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
    let coupon = app.create_stock(5).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();

    // Act: 200 readiness probes at once on the public port.
    let probes = futures::future::join_all((0..200).map(|_| app.get("/health/ready"))).await;

    // Assert: all answered ready; Redis was pinged once for all of them (twice at most, if the
    // second turned while they ran).
    assert!(probes.iter().all(|r| r.status() == StatusCode::OK));
    let pinged = pings(&redis).await;
    assert!((1..=2).contains(&pinged), "{pinged} PINGs for 200 probes");

    // Stats: a copy at most a second old, then the change.
    let url = format!("/coupons/{coupon}/stats");
    let stats = || async {
        app.get(&url)
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    assert_eq!(stats().await["admitted"], 0);
    assert_eq!(app.apply(coupon, 7).await.status(), StatusCode::ACCEPTED);
    assert_eq!(stats().await["admitted"], 0, "served from the copy");
    let fresh = crate::helpers::eventually("the next copy", Duration::from_secs(3), || async {
        let s = stats().await;
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
    let answer = read_until_closed(&mut stalled, 3 * idle).await;
    assert!(!answer.contains(" 200"), "{answer:?}");
}
