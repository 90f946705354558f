//! Retry policy: what happens after an attempt, as a pure function of the hook's settings,
//! the attempt count and the outcome. No clock, no randomness of its own.

use std::time::Duration;

use crate::hook::Backoff;

/// The longest an exponential backoff grows to (unless the hook's own `delay` is longer).
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The shortest wait a `Retry-After` can ask for.
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A hook's retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Retries after the first attempt.
    pub retries: u32,
    pub delay: Duration,
    pub backoff: Backoff,
}

/// How an attempt ended, as far as retrying cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Success,
    /// Any other answer, a timeout or a connection error.
    Failure {
        /// The receiver's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Delivered,
    RetryIn(Duration),
    /// Retries exhausted: the delivery is failed.
    GiveUp,
}

/// Decides after attempt number `attempt` (1 for the first). `jitter` in `[0, 1)` spreads
/// exponential retries over up to a quarter more than the doubled delay, never less: a hook's
/// `delay` is the shortest wait it asked for. At the cap it spreads them below the cap
/// instead, still not below `delay`.
pub fn decide(policy: &Policy, attempt: u32, outcome: Outcome, jitter: f64) -> Decision {
    let Outcome::Failure { retry_after } = outcome else {
        return Decision::Delivered;
    };
    if attempt > policy.retries {
        return Decision::GiveUp;
    }
    if let Some(after) = retry_after {
        // At least a second, so `Retry-After: 0` cannot burn the retries back to back.
        return Decision::RetryIn(after.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER));
    }
    Decision::RetryIn(match policy.backoff {
        Backoff::Fixed => policy.delay,
        Backoff::Exponential => {
            let cap = MAX_BACKOFF.max(policy.delay);
            let doubled = policy.delay.saturating_mul(1u32 << (attempt - 1).min(20)).min(cap);
            let spread = jitter.clamp(0.0, 1.0) / 4.0;
            if doubled < cap {
                doubled.mul_f64(1.0 + spread).min(cap)
            } else {
                cap.mul_f64(1.0 - spread).max(policy.delay)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAIL: Outcome = Outcome::Failure { retry_after: None };

    fn policy(retries: u32, backoff: Backoff) -> Policy {
        Policy { retries, delay: Duration::from_secs(10), backoff }
    }

    #[test]
    fn success_is_delivered_whatever_the_count() {
        assert_eq!(decide(&policy(0, Backoff::Fixed), 7, Outcome::Success, 0.0), Decision::Delivered);
    }

    #[test]
    fn fixed_delay_until_retries_are_used() {
        let p = policy(2, Backoff::Fixed);
        assert_eq!(decide(&p, 1, FAIL, 0.3), Decision::RetryIn(Duration::from_secs(10)));
        assert_eq!(decide(&p, 2, FAIL, 0.3), Decision::RetryIn(Duration::from_secs(10)));
        assert_eq!(decide(&p, 3, FAIL, 0.3), Decision::GiveUp);
        assert_eq!(decide(&policy(0, Backoff::Fixed), 1, FAIL, 0.0), Decision::GiveUp);
    }

    #[test]
    fn exponential_doubles_with_jitter_and_a_cap() {
        let p = policy(50, Backoff::Exponential);
        assert_eq!(decide(&p, 1, FAIL, 0.0), Decision::RetryIn(Duration::from_secs(10)));
        assert_eq!(decide(&p, 1, FAIL, 1.0), Decision::RetryIn(Duration::from_millis(12_500)));
        assert_eq!(decide(&p, 3, FAIL, 0.0), Decision::RetryIn(Duration::from_secs(40)));
        assert_eq!(decide(&p, 3, FAIL, 0.5), Decision::RetryIn(Duration::from_secs(45)));
        assert_eq!(decide(&p, 30, FAIL, 0.0), Decision::RetryIn(MAX_BACKOFF));
        assert_eq!(decide(&p, 30, FAIL, 1.0), Decision::RetryIn(MAX_BACKOFF.mul_f64(0.75)));
        // A delay at the cap is never undercut.
        let long = Policy { retries: 50, delay: MAX_BACKOFF, backoff: Backoff::Exponential };
        assert_eq!(decide(&long, 3, FAIL, 1.0), Decision::RetryIn(MAX_BACKOFF));
    }

    #[test]
    fn retry_after_wins() {
        let p = policy(3, Backoff::Fixed);
        let after = Outcome::Failure { retry_after: Some(Duration::from_secs(2)) };
        assert_eq!(decide(&p, 1, after, 0.0), Decision::RetryIn(Duration::from_secs(2)));
        let huge = Outcome::Failure { retry_after: Some(Duration::from_secs(10_000_000)) };
        assert_eq!(decide(&p, 1, huge, 0.0), Decision::RetryIn(MAX_RETRY_AFTER));
        let zero = Outcome::Failure { retry_after: Some(Duration::ZERO) };
        assert_eq!(decide(&p, 1, zero, 0.0), Decision::RetryIn(MIN_RETRY_AFTER));
    }
}
