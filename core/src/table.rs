//! What a table may be called and how many partitions it may have: the
//! rules meta and the nodes' config files share.

/// Largest partition count a table may have.
pub const PARTITION_COUNT_MAX: u32 = 65_536;
/// Longest table name, in bytes.
pub const TABLE_NAME_BYTES_MAX: usize = 128;

/// Checks a table name: 1–128 bytes of letters, digits, `_`, `-`, `.`.
pub fn validate_table_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > TABLE_NAME_BYTES_MAX {
        return Err(format!(
            "name {name:?} must be 1..={TABLE_NAME_BYTES_MAX} bytes long"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "name {name:?} contains {bad:?}; only letters, digits, '_', '-' and '.' are allowed"
        ));
    }
    Ok(())
}

/// Checks a partition count: a power of two in 1..=65,536.
pub fn validate_partition_count(count: u32) -> Result<(), String> {
    if count == 0 || count > PARTITION_COUNT_MAX || !count.is_power_of_two() {
        return Err(format!(
            "partition_count = {count} must be a power of two in 1..={PARTITION_COUNT_MAX}"
        ));
    }
    Ok(())
}
