//! The upload rate limit: token pacing on tokio's clock, shared by every upload of one store.
//!
//! Each chunk reserves the next `bytes / rate` seconds of the link and waits until its slot
//! starts, so over any stretch the uploads of a store send at most `rate` bytes per second plus
//! one chunk. Idle time is not saved up: a store that was quiet starts at the rate, never above it
//! (no burst that would hurt foreground latency).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Paces uploads to `bytes_per_second`; 0 means unlimited.
///
/// ```
/// use markab_blocks::UploadPacer;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let pacer = UploadPacer::new(0);
/// pacer.pace(1 << 20).await; // unlimited: returns at once
/// # });
/// ```
#[derive(Debug)]
pub struct UploadPacer {
    bytes_per_second: u64,
    /// When the link is free again: the end of the last reserved slot.
    free_at: Mutex<Option<Instant>>,
}

impl UploadPacer {
    /// A pacer for `bytes_per_second` (0: unlimited).
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second,
            free_at: Mutex::new(None),
        }
    }

    /// The configured rate; 0 means unlimited.
    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second
    }

    /// Waits until `bytes` more may be sent.
    pub async fn pace(&self, bytes: u64) {
        if self.bytes_per_second == 0 || bytes == 0 {
            return;
        }
        let slot_nanos = u128::from(bytes) * 1_000_000_000 / u128::from(self.bytes_per_second);
        let slot = Duration::from_nanos(u64::try_from(slot_nanos).unwrap_or(u64::MAX));
        let start = {
            // No await while the lock is held; a poisoned lock still holds a valid instant.
            let mut free_at = self
                .free_at
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            let now = Instant::now();
            let start = free_at.map_or(now, |free| free.max(now));
            *free_at = Some(start + slot);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the pacing on the real clock: 10 chunks of 100 KB at 1 MB/s take 0.9 s (the first
    /// goes at once, each later one waits for the slot of the one before), two uploads sharing
    /// the pacer share the rate, idle time is not saved up, and a rate of 0 never waits. (The
    /// workspace's tokio has no `test-util`, so no paused clock: bounds allow for scheduling.)
    #[tokio::test]
    async fn pacing_holds_the_rate() {
        let within = |elapsed: Duration, expected_ms: u64| {
            let expected = Duration::from_millis(expected_ms);
            assert!(
                elapsed >= expected && elapsed < expected + Duration::from_millis(300),
                "took {elapsed:?}, expected {expected:?}"
            );
        };
        let pacer = UploadPacer::new(1_000_000);
        let started = Instant::now();
        for _ in 0..10 {
            pacer.pace(100_000).await;
        }
        within(started.elapsed(), 900);

        // After an idle half second nothing was saved up: the next 20 chunks, from two
        // concurrent uploads, take 1.9 s after the first one starts.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let upload = || async {
            for _ in 0..10 {
                pacer.pace(100_000).await;
            }
        };
        tokio::join!(upload(), upload());
        within(started.elapsed(), 1900);

        let unlimited = UploadPacer::new(0);
        let started = Instant::now();
        unlimited.pace(u64::MAX).await;
        within(started.elapsed(), 0);
    }
}
