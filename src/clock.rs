//! The clocks Markab reads (docs/DESIGN.md, "Clocks").
//!
//! Every duration — leases, meta's failure detector and grace, timers of
//! the replica cores — is measured on [`monotonic_ms`], which never steps
//! and also counts time the machine spent suspended (`CLOCK_BOOTTIME`): a
//! node whose host was suspended past its lease finds the lease expired on
//! wake-up instead of serving on it, and an NTP step of the wall clock
//! changes no timeout (**durations-are-monotonic**). The wall clock
//! ([`unix_ms`]) is only for what users see and for absolute times stored
//! in data: TTL expiry, table create and drop times, hold expiry.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds on the boot-time clock: monotonic, suspend included, the
/// same origin for every thread of the process (and the machine). Never 0,
/// so a lease or deadline of 0 never holds.
pub fn monotonic_ms() -> u64 {
    let mut spec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `spec` is a valid, writable timespec; CLOCK_BOOTTIME exists
    // on every Linux since 2.6.39, which glommio's io_uring needs anyway.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut spec) };
    assert_eq!(result, 0, "clock_gettime(CLOCK_BOOTTIME) failed");
    (spec.tv_sec as u64) * 1_000 + (spec.tv_nsec as u64) / 1_000_000 + 1
}

/// Unix time in milliseconds (0 if the wall clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The boot-time clock never goes back and advances with real time.
    #[test]
    fn monotonic_clock_advances() {
        let first = monotonic_ms();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = monotonic_ms();
        assert!(second >= first + 19, "{first} then {second}");
    }
}
