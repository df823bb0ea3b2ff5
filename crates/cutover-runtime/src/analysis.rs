//! Canary analysis: a pure judgement of a canary's numbers over a window against its limits.
//!
//! `judge` never sees time or state: the caller gives it the canary's metrics since the step
//! began ([`ReleaseMetrics::since`]) and gets a verdict with the numbers that decided it.

use crate::api::types::{CanarySpec, Judgement};
use crate::metrics::ReleaseMetrics;

/// What a judgement decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within every limit, over at least `min_requests`.
    Pass,
    /// Over a limit.
    Fail,
    /// Too few requests to tell (never a pass, never a fail).
    NoVerdict,
}

impl Verdict {
    /// `pass` | `fail` | `no_verdict`, as the API and events spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::NoVerdict => "no_verdict",
        }
    }

    /// Reads [`Verdict::as_str`] back.
    pub fn parse(s: &str) -> Option<Verdict> {
        match s {
            "pass" => Some(Verdict::Pass),
            "fail" => Some(Verdict::Fail),
            "no_verdict" => Some(Verdict::NoVerdict),
            _ => None,
        }
    }
}

/// Judges `window` (the canary's numbers since its step began, at `weight` percent) against
/// the limits of `spec`: with at least `min_requests`, the error rate must be `<=
/// max_error_rate` and the p99 `<= max_p99`; fewer requests give no verdict.
pub fn judge(window: &ReleaseMetrics, spec: &CanarySpec, weight: u8) -> Judgement {
    let requests = window.requests;
    let error_rate = window.error_rate().unwrap_or(0.0);
    let p99_ms = window.quantile(0.99).map(|d| d.as_secs_f64() * 1000.0);
    let (verdict, detail) = if requests < spec.min_requests {
        (
            Verdict::NoVerdict,
            format!(
                "{requests} requests < min_requests {} at {weight}%",
                spec.min_requests
            ),
        )
    } else if error_rate > spec.max_error_rate {
        (
            Verdict::Fail,
            format!(
                "error rate {} > {} over {requests} requests at {weight}%",
                round(error_rate),
                round(spec.max_error_rate)
            ),
        )
    } else if let Some(p99) = p99_ms.filter(|p| *p > spec.max_p99_ms) {
        (
            Verdict::Fail,
            format!(
                "p99 {}ms > {}ms over {requests} requests at {weight}%",
                p99.round(),
                spec.max_p99_ms.round()
            ),
        )
    } else {
        (
            Verdict::Pass,
            format!(
                "error rate {} <= {}, p99 {} <= {}ms over {requests} requests at {weight}%",
                round(error_rate),
                round(spec.max_error_rate),
                p99_ms.map_or("-".to_string(), |p| format!("{}ms", p.round())),
                spec.max_p99_ms.round()
            ),
        )
    };
    Judgement {
        verdict: verdict.as_str().to_string(),
        requests,
        error_rate,
        p99_ms,
        detail,
    }
}

/// Two decimals at most, without trailing zeros: 0.31, 0.05, 0.5, 1.
fn round(x: f64) -> String {
    let s = format!("{:.2}", (x * 100.0).round() / 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::types::{CanaryStepSpec, PauseSpec};
    use crate::metrics::Metrics;

    fn spec() -> CanarySpec {
        CanarySpec {
            steps: vec![CanaryStepSpec {
                weight: 25,
                pause: PauseSpec::None,
            }],
            interval_ms: 1000,
            max_error_rate: 0.05,
            max_p99_ms: 500.0,
            min_requests: 20,
            verdict_timeout_ms: 600_000,
            sticky: false,
            prometheus: None,
        }
    }

    fn window(ok: u64, errors: u64, latency: Duration) -> ReleaseMetrics {
        let m = Metrics::new();
        let c = m.counters("s", "r");
        for _ in 0..ok {
            c.record(200, latency);
        }
        for _ in 0..errors {
            c.record(500, latency);
        }
        c.snapshot()
    }

    #[test]
    fn too_few_requests_is_no_verdict_even_when_all_failed() {
        let j = judge(&window(0, 7, Duration::from_millis(1)), &spec(), 5);
        assert_eq!(j.verdict, "no_verdict");
        assert_eq!(j.detail, "7 requests < min_requests 20 at 5%");
    }

    #[test]
    fn error_rate_over_the_limit_fails_with_the_numbers() {
        let j = judge(&window(146, 66, Duration::from_millis(1)), &spec(), 25);
        assert_eq!(j.verdict, "fail");
        assert_eq!(j.detail, "error rate 0.31 > 0.05 over 212 requests at 25%");
    }

    #[test]
    fn error_rate_at_the_limit_passes() {
        let j = judge(&window(95, 5, Duration::from_millis(1)), &spec(), 50);
        assert_eq!(j.verdict, "pass");
        assert_eq!(j.requests, 100);
    }

    #[test]
    fn slow_p99_fails() {
        let j = judge(&window(100, 0, Duration::from_millis(1200)), &spec(), 10);
        assert_eq!(j.verdict, "fail");
        assert!(j.detail.starts_with("p99 "), "{}", j.detail);
        assert!(
            j.detail.ends_with("ms > 500ms over 100 requests at 10%"),
            "{}",
            j.detail
        );
    }

    #[test]
    fn verdict_names_round_trip() {
        for v in [Verdict::Pass, Verdict::Fail, Verdict::NoVerdict] {
            assert_eq!(Verdict::parse(v.as_str()), Some(v));
        }
        assert_eq!(Verdict::parse("maybe"), None);
    }
}
