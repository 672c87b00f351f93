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

/// Unix time in milliseconds (0 if the wall clock is before 1970): the
/// system clock plus the offset fault injection may set
/// ([`markab_core::wall_clock`], [`follow_offset_file_from_env`]).
pub fn unix_ms() -> u64 {
    markab_core::wall_clock::unix_ms()
}

/// Names a file holding a wall clock offset in milliseconds (a signed
/// integer) that the process follows: `markab chaos` steps the clocks of
/// the processes it starts through it. Never set in production.
pub const WALL_CLOCK_OFFSET_FILE_ENV: &str = "MARKAB_WALL_CLOCK_OFFSET_FILE";

/// How often the offset file is read.
const OFFSET_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// When [`WALL_CLOCK_OFFSET_FILE_ENV`] is set, starts a thread that reads
/// the file every 50 ms and steps this process's wall clock to the system
/// clock plus its offset (a missing or unparsable file leaves the offset
/// as it is). Durations never read the wall clock, so a step moves only
/// what users see and TTL expiry.
pub fn follow_offset_file_from_env() -> std::io::Result<()> {
    let Some(path) = std::env::var_os(WALL_CLOCK_OFFSET_FILE_ENV) else {
        return Ok(());
    };
    let path = std::path::PathBuf::from(path);
    tracing::warn!(
        path = %path.display(),
        "the wall clock follows an injected offset (fault injection)"
    );
    std::thread::Builder::new()
        .name("wall-clock-offset".into())
        .spawn(move || loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                if let Ok(offset_ms) = text.trim().parse::<i64>() {
                    if offset_ms != markab_core::wall_clock::offset_ms() {
                        tracing::warn!(offset_ms, "wall clock stepped (fault injection)");
                        markab_core::wall_clock::set_offset_ms(offset_ms);
                    }
                }
            }
            std::thread::sleep(OFFSET_POLL_INTERVAL);
        })
        .map(|_| ())
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
