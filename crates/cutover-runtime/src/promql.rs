//! A PromQL client for a canary's optional external analysis
//! (`[services.X.canary.prometheus] url, query, max`).
//!
//! [`query_scalar`] runs an instant query (`GET <url>/api/v1/query?query=...`) and reduces the
//! answer to one number: a scalar, or a vector with exactly one sample. An empty vector or NaN
//! is [`PromError::NoData`]: low traffic, not a failure, so a judgement treats it as "no verdict
//! yet" (the halt Prometheus-based analysis hits elsewhere becomes a wait here).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Largest answer read (one sample is a few hundred bytes; a runaway query is cut short).
const MAX_ANSWER: usize = 1 << 20;

/// Why a query gave no number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromError {
    /// Prometheus answered, but with no value (an empty vector, or NaN): no verdict yet.
    #[error("no data: {0}")]
    NoData(String),
    /// The query could not be run or its answer is unusable (unreachable server, bad query,
    /// several series, a range vector...).
    #[error("{0}")]
    Failed(String),
}

/// Runs `query` as an instant query against the Prometheus at `base_url`
/// (`http://127.0.0.1:9090`, or with a path prefix) within `timeout`, and returns its value.
pub async fn query_scalar(
    base_url: &str,
    query: &str,
    timeout: Duration,
) -> Result<f64, PromError> {
    let base = base_url.trim_end_matches('/');
    if !base.starts_with("http://") {
        return Err(PromError::Failed(format!(
            "Prometheus URL {base_url:?} is not supported: use an http:// URL (https is not \
             supported; put a local proxy or the plain-HTTP address in front)"
        )));
    }
    let url = format!("{base}/api/v1/query?query={}", encode(query));
    let uri: hyper::Uri = url.parse().map_err(|e| {
        PromError::Failed(format!(
            "Prometheus URL {base_url:?} is not a valid URL: {e}"
        ))
    })?;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = async {
        let mut req = hyper::Request::get(uri)
            .body(Empty::new())
            .map_err(|e| format!("cannot build the request: {e}"))?;
        req.headers_mut().insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("cannot reach it: {}", error_chain(&e)))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading its answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = match tokio::time::timeout(timeout, request).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(why)) => return Err(PromError::Failed(format!("query {url}: {why}"))),
        Err(_) => {
            return Err(PromError::Failed(format!(
                "query {url}: no answer within {}ms",
                timeout.as_millis()
            )));
        }
    };
    parse_answer(&url, status.as_u16(), &body)
}

/// `query` with `$service` and `$release` replaced by the canary's (as
/// `[services.X.canary.prometheus] query` documents), ready for [`query_scalar`].
///
/// Service names (`[a-z0-9-]`) and release ids (`YYYYMMDD-HHMMSS-<sha7>`) need no quoting
/// inside a PromQL string literal.
pub fn expand_query(query: &str, service: &str, release: &str) -> String {
    query
        .replace("$service", service)
        .replace("$release", release)
}

/// The text of an error and its sources ("client error (Connect): tcp connect error: ...").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reduces an `/api/v1/query` answer to one number.
fn parse_answer(url: &str, status: u16, body: &[u8]) -> Result<f64, PromError> {
    let failed = |why: String| PromError::Failed(format!("query {url}: {why}"));
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        failed(format!(
            "HTTP {status}, not a Prometheus API answer ({e}): {text:?}"
        ))
    })?;
    if doc["status"] != "success" {
        let kind = doc["errorType"].as_str().unwrap_or("error");
        let error = doc["error"].as_str().unwrap_or("no error message");
        return Err(failed(format!(
            "Prometheus said ({status} {kind}): {error}"
        )));
    }
    let data = &doc["data"];
    let value = match data["resultType"].as_str() {
        Some("scalar") => sample_value(&data["result"]),
        Some("vector") => {
            let result = data["result"].as_array().map_or(&[][..], Vec::as_slice);
            match result {
                [] => {
                    return Err(PromError::NoData(format!(
                        "query {url} returned an empty vector (no series matched)"
                    )));
                }
                [one] => sample_value(&one["value"]),
                many => {
                    return Err(failed(format!(
                        "returned {} series; the query must return one value \
                         (aggregate it, e.g. sum(...) or max(...))",
                        many.len()
                    )));
                }
            }
        }
        Some(other) => {
            return Err(failed(format!(
                "returned a {other}; the query must return a scalar or a one-sample vector"
            )));
        }
        None => return Err(failed("the answer has no data.resultType".to_string())),
    };
    let value = value.ok_or_else(|| failed(format!("unreadable sample: {data}")))?;
    if value.is_nan() {
        return Err(PromError::NoData(format!("query {url} returned NaN")));
    }
    Ok(value)
}

/// The number in a `[timestamp, "value"]` pair (Prometheus sends values as strings:
/// `"0.25"`, `"NaN"`, `"+Inf"`).
fn sample_value(pair: &Value) -> Option<f64> {
    pair.get(1)?.as_str()?.parse().ok()
}

/// Percent-encodes a query-string value: unreserved characters (RFC 3986) stay, every other
/// byte of the UTF-8 text becomes `%XX`.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const URL: &str = "http://127.0.0.1:9090/api/v1/query?query=x";

    fn parse(status: u16, body: &str) -> Result<f64, PromError> {
        parse_answer(URL, status, body.as_bytes())
    }

    #[test]
    fn expands_service_and_release() {
        assert_eq!(
            expand_query(
                r#"sum(rate(cutover_request_errors_total{service="$service",release="$release"}[1m]))"#,
                "pr-review",
                "20261123-101500-abc1234"
            ),
            r#"sum(rate(cutover_request_errors_total{service="pr-review",release="20261123-101500-abc1234"}[1m]))"#
        );
    }

    #[test]
    fn encodes_promql() {
        assert_eq!(
            encode(r#"sum(rate(cutover_requests_total{service="a b",code=~"5.."}[1m]))"#),
            "sum%28rate%28cutover_requests_total%7Bservice%3D%22a%20b%22%2Ccode%3D~%225..%22%7D%5B1m%5D%29%29"
        );
        assert_eq!(encode("a+b/c&d#é"), "a%2Bb%2Fc%26d%23%C3%A9");
    }

    #[test]
    fn a_scalar_and_a_one_sample_vector_give_their_value() {
        assert_eq!(
            parse(
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"0.25"]}}"#
            ),
            Ok(0.25)
        );
        assert_eq!(
            parse(
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"12"]}]}}"#
            ),
            Ok(12.0)
        );
        assert_eq!(
            parse(
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#
            ),
            Ok(f64::INFINITY)
        );
    }

    #[test]
    fn empty_and_nan_are_no_data() {
        let empty = parse(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
        );
        assert!(matches!(empty, Err(PromError::NoData(ref m)) if m.contains("empty vector")));
        let nan = parse(
            200,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#,
        );
        assert!(matches!(nan, Err(PromError::NoData(_))), "{nan:?}");
    }

    #[test]
    fn errors_name_the_url_and_what_prometheus_said() {
        let e = parse(
            400,
            r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error"}"#,
        )
        .unwrap_err();
        let PromError::Failed(m) = e else {
            panic!("{e:?}")
        };
        assert!(m.contains(URL), "{m}");
        assert!(
            m.contains("400 bad_data") && m.contains("parse error"),
            "{m}"
        );

        let two = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}"#;
        assert!(matches!(parse(200, two), Err(PromError::Failed(m)) if m.contains("2 series")));
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(matches!(parse(200, matrix), Err(PromError::Failed(m)) if m.contains("matrix")));
        let html = parse(502, "<html>bad gateway</html>").unwrap_err();
        assert!(
            matches!(&html, PromError::Failed(m) if m.contains("HTTP 502")),
            "{html:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        // Accepts the connection, reads nothing, answers nothing.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hold = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(stream);
        });
        let e = query_scalar(&base, "up", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, PromError::Failed(m) if m.contains(&base) && m.contains("no answer within 300ms")),
            "{e:?}"
        );
        hold.abort();
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_failure_naming_it() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Nothing listens there any more.
        let base = format!("http://127.0.0.1:{port}");
        let e = query_scalar(&base, "up", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, PromError::Failed(m) if m.contains(&base) && m.contains("cannot reach")),
            "{e:?}"
        );
        let e = query_scalar("https://prom.example", "up", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, PromError::Failed(m) if m.contains("http://")),
            "{e:?}"
        );
    }
}
