//! Canary analysis: a pure judgement of a canary's numbers over a window against its limits.
//!
//! `judge` never sees time or state: the caller gives it the canary's metrics since the step
//! began ([`ReleaseMetrics::since`]) and gets a verdict with the numbers that decided it.

use crate::api::types::{CanarySpec, Judgement, PrometheusCheck};
use crate::metrics::ReleaseMetrics;
use crate::promql::PromError;

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

/// Adds the verdict of a `[canary.prometheus]` query (`value`: its scalar, or why there is
/// none) to the proxy's judgement: a failure of either fails; otherwise no data from either is
/// no verdict; a pass needs both. An unreachable Prometheus is no verdict (the step's
/// `verdict_timeout` then rolls back), never a pass.
pub fn with_prometheus(
    builtin: Judgement,
    check: &PrometheusCheck,
    value: Result<f64, PromError>,
) -> Judgement {
    let builtin_verdict = Verdict::parse(&builtin.verdict).unwrap_or(Verdict::NoVerdict);
    if builtin_verdict == Verdict::Fail {
        return builtin;
    }
    let (verdict, detail) = match value {
        Ok(v) if v > check.max => (
            Verdict::Fail,
            format!(
                "prometheus: {} = {} > {}",
                check.query,
                round(v),
                round(check.max)
            ),
        ),
        Ok(v) => (
            builtin_verdict,
            format!(
                "{}; prometheus: {} <= {}",
                builtin.detail,
                round(v),
                round(check.max)
            ),
        ),
        Err(PromError::NoData(why)) => (
            Verdict::NoVerdict,
            format!("{}; prometheus: no data yet ({why})", builtin.detail),
        ),
        Err(PromError::Failed(why)) => (
            Verdict::NoVerdict,
            format!("{}; prometheus: {why}", builtin.detail),
        ),
    };
    Judgement {
        verdict: verdict.as_str().to_string(),
        detail,
        ..builtin
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

    fn check() -> PrometheusCheck {
        PrometheusCheck {
            url: "http://127.0.0.1:9090".into(),
            query: "sum(errors)".into(),
            max: 0.5,
        }
    }

    #[test]
    fn prometheus_can_fail_a_passing_judgement_but_never_pass_a_failing_one() {
        let pass = judge(&window(100, 0, Duration::from_millis(1)), &spec(), 10);
        let j = with_prometheus(pass.clone(), &check(), Ok(0.7));
        assert_eq!(j.verdict, "fail");
        assert_eq!(j.detail, "prometheus: sum(errors) = 0.7 > 0.5");
        assert_eq!(j.requests, 100);
        let j = with_prometheus(pass.clone(), &check(), Ok(0.5));
        assert_eq!(j.verdict, "pass");
        assert!(
            j.detail.ends_with("; prometheus: 0.5 <= 0.5"),
            "{}",
            j.detail
        );
        let fail = judge(&window(50, 50, Duration::from_millis(1)), &spec(), 10);
        assert_eq!(with_prometheus(fail.clone(), &check(), Ok(0.0)), fail);
    }

    #[test]
    fn no_prometheus_data_or_no_prometheus_is_no_verdict() {
        let pass = judge(&window(100, 0, Duration::from_millis(1)), &spec(), 10);
        let j = with_prometheus(
            pass.clone(),
            &check(),
            Err(PromError::NoData("empty vector".into())),
        );
        assert_eq!(j.verdict, "no_verdict");
        assert!(
            j.detail.contains("prometheus: no data yet (empty vector)"),
            "{}",
            j.detail
        );
        let j = with_prometheus(pass, &check(), Err(PromError::Failed("unreachable".into())));
        assert_eq!(j.verdict, "no_verdict");
        let few = judge(&window(3, 0, Duration::from_millis(1)), &spec(), 10);
        assert_eq!(
            with_prometheus(few, &check(), Ok(0.0)).verdict,
            "no_verdict"
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
