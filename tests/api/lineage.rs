//! A confirmation is only true of the server that took the write: with
//! `APP_REDIS__ACK_REPLICAS=1`, an admission made on one master and "confirmed" on the server
//! that replaced it (a promoted replica, or the same address restarted empty) must not be 202.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{eventually, spawn_app_with, PrivateRedis, TcpProxy, MANUAL};

/// `blocked_clients` of a server: a `WAIT` in progress there counts one.
async fn blocked(server: &PrivateRedis) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(&mut server.connection().await)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_admission_is_never_confirmed_by_a_server_that_does_not_hold_it() {
    // Arrange: master M with replica R, and M2 with its own replica R2 (what a failover or a
    // restart behind the same address would put there). The service reaches "Redis" through a
    // proxy in front of M.
    let m = PrivateRedis::start().await;
    let r = PrivateRedis::start_with(&["--replicaof", "127.0.0.1", &m.port.to_string()]).await;
    let m2 = PrivateRedis::start().await;
    let _r2 = PrivateRedis::start_with(&["--replicaof", "127.0.0.1", &m2.port.to_string()]).await;
    let proxy = TcpProxy::start(format!("127.0.0.1:{}", m.port)).await;
    let app = spawn_app_with(|s| {
        s.redis.url = format!("redis://{}", proxy.address()).into();
        s.redis.ack_replicas = 1;
        s.redis.ack_timeout_ms = 1_500;
        s.redis.timeout_ms = 3_000;
        s.issuer.schedule = MANUAL.into();
        s.rate_limit.per_user_per_sec = 0;
    })
    .await;
    let coupon = app.create_stock(10).await;
    assert_eq!(app.apply(coupon, 1).await.status(), StatusCode::ACCEPTED);

    // R stops acknowledging: the confirmer's next WAIT on M blocks.
    r.pause();
    let first = tokio::spawn({
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!("/coupons/{coupon}/issue")),
            app.user_token(2),
        );
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status())
        }
    });
    eventually("a WAIT blocked on M", Duration::from_secs(5), || async {
        (blocked(&m).await >= 1).then_some(())
    })
    .await;
    // User 3 is admitted on M while that WAIT runs: their confirmation is the next group's.
    let second = tokio::spawn({
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!("/coupons/{coupon}/issue")),
            app.user_token(3),
        );
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status())
        }
    });
    let queue = app.keys(coupon).queue;
    eventually("user 3 admitted on M", Duration::from_secs(5), || async {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&queue)
            .arg(3)
            .query_async(&mut m.connection().await)
            .await
            .unwrap();
        score.map(|_| ())
    })
    .await;

    // Act: "Redis" is now M2 (M's writes are not there); every connection is re-made.
    proxy.retarget(format!("127.0.0.1:{}", m2.port));

    // Assert: neither admission is confirmed: M2 does not hold them, whatever R2 says.
    let first = first.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    assert_eq!(first, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        second,
        StatusCode::SERVICE_UNAVAILABLE,
        "user 3 was told 202 for a write the confirming server does not have"
    );
    r.resume();
}
