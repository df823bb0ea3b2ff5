//! The Prometheus text exposition of the proxies' numbers (`GET /metrics` on the socket).

use std::fmt::Write;

use crate::metrics::Metrics;

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every (service, release): requests by code, errors, and the latency histogram.
pub fn prometheus_text(metrics: &Metrics) -> String {
    let all = metrics.all();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP cutover_requests_total Requests served through the proxy, by service, release and status code."
    );
    let _ = writeln!(out, "# TYPE cutover_requests_total counter");
    for (service, release, m) in &all {
        for (code, n) in &m.by_code {
            let _ = writeln!(
                out,
                "cutover_requests_total{{service=\"{}\",release=\"{}\",code=\"{code}\"}} {n}",
                escape(service),
                escape(release)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP cutover_request_errors_total 5xx answers, connection errors and timeouts, by service and release."
    );
    let _ = writeln!(out, "# TYPE cutover_request_errors_total counter");
    for (service, release, m) in &all {
        let _ = writeln!(
            out,
            "cutover_request_errors_total{{service=\"{}\",release=\"{}\"}} {}",
            escape(service),
            escape(release),
            m.errors
        );
    }
    out
}
