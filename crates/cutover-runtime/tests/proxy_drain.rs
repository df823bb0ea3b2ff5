//! The reverse proxy while releases change: draining, zero failed requests under route flips,
//! and per-release metrics.

#[path = "proxy/support.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cutover_runtime::proxy::RouteTable;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;

#[tokio::test]
async fn drain_waits_for_a_slow_response_body_then_returns_true() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (proxy, _) = proxy().await;
    proxy.set_route(only(1, "a", &[&a]));

    let resp = client()
        .request(
            Request::get(format!("http://{}/slow", proxy.addr().unwrap()))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    // The head has arrived; the body is still streaming from release a.
    assert_eq!(proxy.in_flight("a"), 1);

    proxy.set_route(only(2, "b", &[&b]));
    let draining = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.drain("a", Duration::from_secs(10)).await }
    });
    // New requests go to b meanwhile, and do not count for a.
    assert_eq!(get(&client(), proxy.addr().unwrap(), "/").await.body, "b");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !draining.is_finished(),
        "drain returned while a body was streaming"
    );
    assert_eq!(proxy.in_flight("a"), 1);

    a.release_slow(1);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "start\nend\n");
    assert!(draining.await.unwrap());
    assert_eq!(proxy.in_flight("a"), 0);
    // A release nothing ever went to, or one already drained, drains at once.
    assert!(proxy.drain("a", Duration::ZERO).await);
    assert!(proxy.drain("never-routed", Duration::ZERO).await);
    proxy.shutdown().await;
}

#[tokio::test]
async fn drain_returns_false_at_its_timeout() {
    let a = Upstream::start("a").await;
    let (proxy, _) = proxy().await;
    proxy.set_route(only(1, "a", &[&a]));
    let resp = client()
        .request(
            Request::get(format!("http://{}/slow", proxy.addr().unwrap()))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    proxy.set_route(cutover_runtime::proxy::RouteTable::empty());

    let started = tokio::time::Instant::now();
    assert!(!proxy.drain("a", Duration::from_millis(200)).await);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(proxy.in_flight("a"), 1);

    // A client that goes away mid-body ends the request too.
    drop(resp);
    wait_until("the dropped request is no longer in flight", || {
        proxy.in_flight("a") == 0
    })
    .await;
    a.release_slow(1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_the_route_flips_50_times_under_load() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (proxy, metrics) = proxy().await;
    proxy.set_route(only(0, "a", &[&a]));

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, failures, addr) = (
            Arc::clone(&stop),
            Arc::clone(&failures),
            proxy.addr().unwrap(),
        );
        clients.push(tokio::spawn(async move {
            // Each client keeps its connections alive across the flips.
            let client = client();
            let mut done = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let req = Request::post(format!("http://{addr}/echo"))
                    .body(text("payload"))
                    .unwrap();
                match client.request(req).await {
                    Ok(resp) if resp.status() == StatusCode::OK => {
                        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                        if !matches!(body, Ok(ref b) if b.as_ref() == b"payload") {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                done += 1;
            }
            done
        }));
    }

    for flip in 1..=50u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (name, upstream) = if flip % 2 == 1 { ("b", &b) } else { ("a", &a) };
        proxy.set_route(only(flip, name, &[upstream]));
        assert_eq!(proxy.route().generation(), flip);
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }

    assert_eq!(failures.load(Ordering::SeqCst), 0, "of {total} requests");
    assert!(total >= 100, "only {total} requests were made");
    let (ma, mb) = (
        metrics.snapshot("api", "a").unwrap(),
        metrics.snapshot("api", "b").unwrap(),
    );
    assert!(ma.requests > 0 && mb.requests > 0);
    assert_eq!((ma.errors, mb.errors), (0, 0));
    assert_eq!((ma.requests + mb.requests) as usize, total);
    assert_eq!(proxy.in_flight("a") + proxy.in_flight("b"), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn metrics_count_codes_and_latency_per_release() {
    let a = Upstream::start("a").await;
    let (proxy, metrics) = proxy().await;
    proxy.set_route(only(1, "a", &[&a]));
    let client = client();
    for _ in 0..20 {
        assert_eq!(
            get(&client, proxy.addr().unwrap(), "/").await.status,
            StatusCode::OK
        );
    }
    let m = metrics.snapshot("api", "a").unwrap();
    assert_eq!(m.requests, 20);
    assert_eq!(m.errors, 0);
    assert_eq!(m.by_code.get(&200), Some(&20));
    assert_eq!(m.latency.count, 20);
    let p99 = m.quantile(0.99).unwrap();
    assert!(
        p99 > Duration::ZERO && p99 < Duration::from_secs(1),
        "{p99:?}"
    );
    assert!(m.latency.sum > 0.0);

    // The /slow response counts at its head, long before its body ends.
    let resp = client
        .request(
            Request::get(format!("http://{}/slow", proxy.addr().unwrap()))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(metrics.snapshot("api", "a").unwrap().requests, 21);
    a.release_slow(1);
    resp.into_body().collect().await.unwrap();

    metrics.forget("api", "a");
    assert!(metrics.snapshot("api", "a").is_none());
    proxy.shutdown().await;
}

#[tokio::test]
async fn one_instance_drains_while_the_rest_of_its_release_keeps_serving() {
    // Two instances of release a: a rolling update takes out the first one.
    let first = Upstream::start("a").await;
    let second = Upstream::start("a").await;
    let (proxy, _) = proxy().await;
    proxy.set_route(RouteTable::new(
        1,
        vec![release("a", 100, &[&first, &second])],
    ));

    // Round-robin: the first request goes to the first instance; its body is held.
    let resp = client()
        .request(
            Request::get(format!("http://{}/slow", proxy.addr().unwrap()))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(first.hits(), 1);

    proxy.set_route(RouteTable::new(2, vec![release("a", 100, &[&second])]));
    let draining = tokio::spawn({
        let (proxy, addr) = (proxy.clone(), first.addr);
        async move { proxy.drain_backend(addr, Duration::from_secs(10)).await }
    });
    // The release still serves from its other instance, which never counts for the first.
    for _ in 0..3 {
        assert_eq!(
            get(&client(), proxy.addr().unwrap(), "/").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(first.hits(), 1);
    assert_eq!(second.hits(), 3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !draining.is_finished(),
        "the instance drained with a body in flight"
    );

    first.release_slow(1);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "start\nend\n");
    assert!(draining.await.unwrap());
    assert!(proxy.drain_backend(first.addr, Duration::ZERO).await);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_sticky_route_keeps_each_client_on_its_release() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (proxy, _) = proxy().await;
    proxy.set_route(
        RouteTable::new(1, vec![release("a", 50, &[&a]), release("b", 50, &[&b])])
            .with_sticky(true),
    );
    let client = client();
    let ask = |cookie: Option<String>| {
        let client = client.clone();
        let addr = proxy.addr().unwrap();
        async move {
            let mut req = Request::get(format!("http://{addr}/"));
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            read(client.request(req.body(empty()).unwrap()).await.unwrap()).await
        }
    };
    // A new client is placed by weight and told where it went.
    let first = ask(None).await;
    let cookie = first.header("set-cookie").to_string();
    assert!(
        cookie.starts_with(&format!("cutover-api={}", first.body)),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    // With its cookie (among others), it stays there, and is not told again.
    for _ in 0..20 {
        let again = ask(Some(format!("theme=dark; {pair}"))).await;
        assert_eq!(again.body, first.body);
        assert_eq!(again.header("set-cookie"), "");
    }
    // Without cookies, clients still split by weight.
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..20 {
        *seen.entry(ask(None).await.body).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // A release that no longer gets traffic sends its clients elsewhere, with a new cookie.
    proxy.set_route(
        RouteTable::new(2, vec![release("a", 0, &[&a]), release("b", 100, &[&b])])
            .with_sticky(true),
    );
    let moved = ask(Some("cutover-api=a".into())).await;
    assert_eq!(moved.body, "b");
    assert!(moved.header("set-cookie").starts_with("cutover-api=b"));
    proxy.shutdown().await;
}
