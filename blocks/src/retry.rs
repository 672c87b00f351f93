//! Retries of transient failures: one policy, two executors.
//!
//! * [`crate::S3Store`] hands the policy to `object_store` as its `RetryConfig`, which retries
//!   each HTTP request on connection errors, timeouts, 5xx, 408 and 429. There is no second loop
//!   around it: two nested loops would multiply the attempts.
//! * [`crate::LocalStore`] runs [`with_retries`] around a whole operation (a write restarts from
//!   a fresh temporary file), retrying only IO errors of a transient kind — what a mounted
//!   network file system reports while its server is away.
//!
//! Either way an operation makes at most [`RetryPolicy::attempts_max`] attempts, backs off
//! exponentially from `backoff_initial` (doubling, capped at `backoff_max`), and starts no new
//! attempt after `elapsed_max`.

use std::future::Future;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use crate::BlockError;

/// Upper bound of [`RetryPolicy::attempts_max`].
pub const ATTEMPTS_MAX_LIMIT: u32 = 20;

/// How transient failures are retried. `Default`: 5 attempts, backoff 100 ms doubling up to 2 s,
/// no new attempt after 30 s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per operation (S3: per request), the first included; 1 disables retries.
    pub attempts_max: u32,
    /// Wait before the second attempt.
    pub backoff_initial: Duration,
    /// Cap of the doubling wait.
    pub backoff_max: Duration,
    /// No attempt starts later than this after the first one.
    pub elapsed_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts_max: 5,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            elapsed_max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Checks `1 <= attempts_max <= ATTEMPTS_MAX_LIMIT` and `backoff_initial <= backoff_max`.
    pub fn validate(&self) -> Result<(), BlockError> {
        if !(1..=ATTEMPTS_MAX_LIMIT).contains(&self.attempts_max) {
            return Err(BlockError::InvalidOptions {
                reason: format!(
                    "retry attempts_max {} is outside 1..={ATTEMPTS_MAX_LIMIT}",
                    self.attempts_max
                ),
            });
        }
        if self.backoff_initial > self.backoff_max {
            return Err(BlockError::InvalidOptions {
                reason: "retry backoff_initial exceeds backoff_max".to_string(),
            });
        }
        Ok(())
    }

    /// The wait after failed attempt number `attempt` (1-based): `backoff_initial * 2^(attempt-1)`
    /// capped at `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.backoff_initial
            .saturating_mul(1 << doublings)
            .min(self.backoff_max)
    }

    /// The same policy as `object_store`'s retry configuration.
    pub(crate) fn object_store_config(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: self.backoff_initial,
                max_backoff: self.backoff_max,
                base: 2.0,
            },
            max_retries: self.attempts_max.saturating_sub(1) as usize,
            retry_timeout: self.elapsed_max,
        }
    }
}

/// Whether an IO error of this kind may pass if the operation is tried again.
pub fn is_transient_io(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Interrupted
            | ErrorKind::TimedOut
            | ErrorKind::WouldBlock
            | ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::ResourceBusy
            | ErrorKind::StaleNetworkFileHandle
    )
}

/// Runs `attempt` until it succeeds, fails with a non-transient error (returned as is), or the
/// policy is exhausted (then [`BlockError::Transient`] carries the last error).
pub async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    operation: &'static str,
    key: &str,
    mut attempt: F,
) -> Result<T, BlockError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BlockError>>,
{
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if !error.is_transient() => return Err(error),
            Err(error) => error,
        };
        let backoff = policy.backoff(attempts);
        if attempts >= policy.attempts_max || started.elapsed() + backoff > policy.elapsed_max {
            return Err(BlockError::Transient {
                operation,
                key: key.to_string(),
                attempts,
                elapsed_ms: started.elapsed().as_millis() as u64,
                detail: error.to_string(),
            });
        }
        tracing::debug!(operation, key, attempts, %error, "retrying after a transient error");
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn timed_out() -> BlockError {
        BlockError::io("read", "/mnt/backup/x", ErrorKind::TimedOut.into())
    }

    /// Proves the backoff doubles from its initial value and stops at its cap.
    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy::default();
        let waits: Vec<u128> = (1..=7).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(2));
        assert_eq!(policy.object_store_config().max_retries, 4);
    }

    /// Proves a transient IO error is retried until it passes, that the attempts are bounded and
    /// the final error says how many were made, and that a non-transient error is not retried.
    #[tokio::test]
    async fn transient_errors_are_retried_within_bounds() {
        let policy = RetryPolicy {
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(4),
            ..RetryPolicy::default()
        };
        let calls = Cell::new(0);
        let value = with_retries(&policy, "read", "k", || {
            calls.set(calls.get() + 1);
            let fail = calls.get() < 3;
            async move {
                if fail {
                    Err(timed_out())
                } else {
                    Ok(7)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!((value, calls.get()), (7, 3));

        calls.set(0);
        let error = with_retries(&policy, "read", "k", || {
            calls.set(calls.get() + 1);
            async { Err::<(), _>(timed_out()) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls.get(), policy.attempts_max);
        assert!(
            matches!(error, BlockError::Transient { attempts: 5, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("after 5 attempts"), "{error}");

        calls.set(0);
        let error = with_retries(&policy, "read", "k", || {
            calls.set(calls.get() + 1);
            async { Err::<(), _>(BlockError::io("open", "/x", ErrorKind::NotFound.into())) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls.get(), 1);
        assert!(matches!(error, BlockError::Io { .. }), "{error}");

        // The overall bound stops retries before attempts_max: no wait may end past elapsed_max.
        let short = RetryPolicy {
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(20),
            elapsed_max: Duration::from_millis(30),
            ..RetryPolicy::default()
        };
        calls.set(0);
        let error = with_retries(&short, "read", "k", || {
            calls.set(calls.get() + 1);
            async { Err::<(), _>(timed_out()) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls.get(), 2);
        assert!(
            matches!(error, BlockError::Transient { attempts: 2, .. }),
            "{error}"
        );
    }
}
