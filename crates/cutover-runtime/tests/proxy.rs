//! The reverse proxy over real sockets: forwarding, streaming, routing, errors, binding.

#[path = "proxy/support.rs"]
mod support;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use cutover_runtime::metrics::Metrics;
use cutover_runtime::proxy::{Proxy, ProxyError, RouteTable};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

#[tokio::test]
async fn forwards_method_path_query_and_host_with_forwarding_headers() {
    let a = Upstream::start("a").await;
    let (proxy, _) = proxy().await;
    proxy.set_route(only(1, "a", &[&a]));

    let req = Request::post(format!(
        "http://{}/items/7?sort=asc&x=%20y",
        proxy.addr().unwrap()
    ))
    .header("host", "shop.example.test")
    .header("x-forwarded-for", "203.0.113.9")
    .header("connection", "x-hop")
    .header("x-hop", "secret")
    .header("x-kept", "yes")
    .body(text("{}"))
    .unwrap();
    let got = read(client().request(req).await.unwrap()).await;

    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, "a");
    assert_eq!(got.header("x-release"), "a");
    assert_eq!(got.header("x-seen-method"), "POST");
    assert_eq!(got.header("x-seen-uri"), "/items/7?sort=asc&x=%20y");
    assert_eq!(got.header("x-seen-host"), "shop.example.test");
    assert_eq!(got.header("x-seen-xff"), "203.0.113.9, 127.0.0.1");
    assert_eq!(got.header("x-seen-xfproto"), "http");
    assert_eq!(got.header("x-seen-xfhost"), "shop.example.test");
    assert_eq!(got.header("x-seen-x-kept"), "yes");
    // Hop-by-hop: named by Connection, and Connection itself, stop at the proxy both ways.
    assert_eq!(got.header("x-seen-x-hop"), "");
    assert_eq!(got.header("x-seen-connection"), "");
    assert_eq!(got.header("keep-alive"), "");
    proxy.shutdown().await;
}

#[tokio::test]
async fn streams_multi_megabyte_bodies_both_ways() {
    let a = Upstream::start("a").await;
    let (proxy, _) = proxy().await;
    proxy.set_route(only(1, "a", &[&a]));

    // 8 MiB in 64 KiB chunks, with no Content-Length (chunked both ways).
    let payload: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (tx, rx) = mpsc::channel(4);
    let chunks = payload.clone();
    let sender = tokio::spawn(async move {
        for chunk in chunks.chunks(64 * 1024) {
            tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
    });
    let req = Request::post(format!("http://{}/echo", proxy.addr().unwrap()))
        .body(ChannelBody(rx).boxed())
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let echoed = resp.into_body().collect().await.unwrap().to_bytes();
    sender.await.unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "the echoed body differs");

    // And with a Content-Length.
    let req = Request::post(format!("http://{}/echo", proxy.addr().unwrap()))
        .body(
            http_body_util::Full::new(Bytes::from(payload.clone()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let echoed = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(echoed == payload);
    proxy.shutdown().await;
}

#[tokio::test]
async fn bodies_stream_chunk_by_chunk_not_buffered() {
    let a = Upstream::start("a").await;
    let (proxy, _) = proxy().await;
    proxy.set_route(only(1, "a", &[&a]));

    // Ping-pong: each chunk must come back before the next is sent, which only works if the
    // proxy passes request and response chunks on as they come.
    let (tx, rx) = mpsc::channel(1);
    let req = Request::post(format!("http://{}/echo", proxy.addr().unwrap()))
        .body(ChannelBody(rx).boxed())
        .unwrap();
    tx.send(Bytes::from_static(b"ping 0")).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), client().request(req))
        .await
        .expect("response head while the request body is still open")
        .unwrap();
    let mut body = resp.into_body();
    for i in 0..5 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("chunk echoed while the request is still open")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), format!("ping {i}").as_bytes());
        tx.send(Bytes::from(format!("ping {}", i + 1)))
            .await
            .unwrap();
    }
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "ping 5");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_keep_alive_connection_sees_a_route_flip_on_its_next_request() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (proxy, _) = proxy().await;
    proxy.set_route(only(1, "a", &[&a]));

    // One client connection, used for every request.
    let stream = TcpStream::connect(proxy.addr().unwrap()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let mut ask = async || {
        send.ready().await.unwrap();
        let req = Request::get("/")
            .header("host", "api")
            .body(empty())
            .unwrap();
        read(send.send_request(req).await.unwrap()).await.body
    };

    assert_eq!(ask().await, "a");
    assert_eq!(ask().await, "a");
    proxy.set_route(only(2, "b", &[&b]));
    assert_eq!(proxy.route().generation(), 2);
    assert_eq!(ask().await, "b");
    proxy.set_route(only(3, "a", &[&a]));
    assert_eq!(ask().await, "a");
    assert!(!conn.is_finished(), "the client connection stayed open");
    conn.abort();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_matches_the_weights_over_10k_requests() {
    let a1 = Upstream::start("a").await;
    let a2 = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (proxy, metrics) = proxy().await;
    proxy.set_route(RouteTable::new(
        1,
        vec![release("a", 70, &[&a1, &a2]), release("b", 30, &[&b])],
    ));
    assert_eq!(
        proxy.route().weights(),
        [("a".to_owned(), 70), ("b".to_owned(), 30)]
    );

    let client = client();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, addr) = (client.clone(), proxy.addr().unwrap());
        tasks.push(tokio::spawn(async move {
            let mut seen: HashMap<String, usize> = HashMap::new();
            for _ in 0..2_500 {
                *seen.entry(get(&client, addr, "/").await.body).or_default() += 1;
            }
            seen
        }));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        for (release, n) in task.await.unwrap() {
            *seen.entry(release).or_default() += n;
        }
    }
    let share = |r: &str| seen.get(r).copied().unwrap_or(0) as f64 / 10_000.0;
    assert!((share("a") - 0.70).abs() < 0.01, "{seen:?}");
    assert!((share("b") - 0.30).abs() < 0.01, "{seen:?}");
    // Round-robin inside a release.
    assert!(
        a1.hits().abs_diff(a2.hits()) <= 8,
        "{} vs {}",
        a1.hits(),
        a2.hits()
    );
    assert_eq!(
        metrics.snapshot("api", "a").unwrap().requests as usize,
        seen["a"]
    );
    assert_eq!(
        metrics.snapshot("api", "b").unwrap().requests as usize,
        seen["b"]
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn no_route_is_503_naming_the_service_and_counts_nothing() {
    let (proxy, metrics) = proxy().await;
    let got = get(&client(), proxy.addr().unwrap(), "/").await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(got.body, "no ready instance of api\n");

    // A release without backends routes nowhere either.
    proxy.set_route(RouteTable::new(1, vec![release("a", 100, &[])]));
    let got = get(&client(), proxy.addr().unwrap(), "/").await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(metrics.all().iter().all(|(_, _, m)| m.requests == 0));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_dead_backend_is_502_and_counted_as_an_error() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let (proxy, metrics) = proxy().await;
    proxy.set_route(RouteTable::new(
        1,
        vec![cutover_runtime::proxy::RouteRelease {
            release: "r1".into(),
            weight: 100,
            backends: vec![dead],
        }],
    ));
    let got = get(&client(), proxy.addr().unwrap(), "/").await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        got.body,
        format!("upstream {dead} of release r1 unreachable\n")
    );
    let m = metrics.snapshot("api", "r1").unwrap();
    assert_eq!((m.requests, m.errors), (1, 1));
    assert_eq!(m.by_code.get(&502), Some(&1));
    assert_eq!(proxy.in_flight("r1"), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_get_whose_backend_is_gone_is_sent_to_another_one_and_a_post_is_not() {
    let live = Upstream::start("r1").await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let (proxy, metrics) = proxy().await;
    proxy.set_route(RouteTable::new(
        1,
        vec![cutover_runtime::proxy::RouteRelease {
            release: "r1".into(),
            weight: 100,
            backends: vec![dead, live.addr],
        }],
    ));
    let c = client();
    // Round robin sends every other request to the dead backend first: each GET is answered.
    for _ in 0..10 {
        let got = get(&c, proxy.addr().unwrap(), "/").await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        assert_eq!(got.body, "r1");
    }
    assert_eq!(live.hits(), 10);
    let m = metrics.snapshot("api", "r1").unwrap();
    assert_eq!((m.requests, m.errors), (10, 0));
    // A request with a body is not sent twice: it may have been acted on.
    let mut codes = Vec::new();
    for _ in 0..4 {
        let req = Request::post(format!("http://{}/orders", proxy.addr().unwrap()))
            .body(text("{\"n\":1}"))
            .unwrap();
        codes.push(read(c.request(req).await.unwrap()).await.status);
    }
    assert!(codes.contains(&StatusCode::BAD_GATEWAY), "{codes:?}");
    assert!(codes.contains(&StatusCode::OK), "{codes:?}");
    assert_eq!(proxy.in_flight("r1"), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn binding_a_taken_port_names_the_port_and_its_holder() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = Proxy::bind("api", addr, Metrics::new()).await.unwrap_err();
    assert!(matches!(err, ProxyError::PortInUse { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("port {} is already in use", addr.port())),
        "{message}"
    );
    assert!(message.contains("service api"), "{message}");
    // This test process holds it, and /proc tells.
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
}

#[tokio::test]
async fn shutdown_lets_a_request_finish_and_frees_the_port() {
    let a = Upstream::start("a").await;
    let (proxy, _) = proxy().await;
    proxy.set_route(only(1, "a", &[&a]));
    let addr = proxy.addr().unwrap();

    let resp = client()
        .request(
            Request::get(format!("http://{addr}/slow"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let stopping = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.shutdown().await }
    });
    wait_until("the listener is closed", || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    assert!(!stopping.is_finished());
    a.release_slow(1);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "start\nend\n");
    stopping.await.unwrap();
    let again = Proxy::bind("api", addr, Metrics::new()).await.unwrap();
    again.shutdown().await;
}
