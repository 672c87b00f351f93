//! The wall clock every part of Markab reads for what users see and for
//! absolute times stored in data (TTL expiry, table create and drop times),
//! with an offset that fault injection can set (`markab chaos` steps it to
//! prove that no duration depends on it: **durations-are-monotonic**,
//! docs/DESIGN.md "Clocks"). The offset is 0 unless a process was started
//! with `MARKAB_WALL_CLOCK_OFFSET_FILE` (see `markab::clock`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds added to the system's wall clock (may be negative).
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Unix time in milliseconds: the system clock plus the injected offset
/// (0 if that is before 1970).
pub fn unix_ms() -> u64 {
    unix_us() / 1_000
}

/// Unix time in microseconds (the timetags of duplicated writes): the
/// system clock plus the injected offset (0 if that is before 1970).
pub fn unix_us() -> u64 {
    let system_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or(0);
    system_us
        .saturating_add(OFFSET_MS.load(Ordering::Relaxed).saturating_mul(1_000))
        .max(0) as u64
}

/// Steps this process's wall clock to the system clock plus `offset_ms`.
pub fn set_offset_ms(offset_ms: i64) {
    OFFSET_MS.store(offset_ms, Ordering::Relaxed);
}

/// The offset set by [`set_offset_ms`] (0 by default).
pub fn offset_ms() -> i64 {
    OFFSET_MS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a step moves unix_ms by the offset, both ways, and that 0
    // restores the system clock.
    #[test]
    fn offset_steps_the_clock() {
        let before = unix_ms();
        set_offset_ms(3_600_000);
        let ahead = unix_ms();
        assert!(ahead >= before + 3_600_000, "{before} then {ahead}");
        set_offset_ms(-7_200_000);
        let behind = unix_ms();
        assert!(
            behind + 7_200_000 >= before && behind < before,
            "{before} then {behind}"
        );
        set_offset_ms(0);
        assert!(unix_ms() >= before);
        assert_eq!(offset_ms(), 0);
    }
}
