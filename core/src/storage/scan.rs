//! Range reads of [`Partition`]: multi_get (point and range), sortkey_count
//! and scan batches. Every loop here is bounded by [`StorageLimits`].
//! Semantics: docs/storage.md, "Scans".

use std::cmp::Ordering;

use super::partition::{check_hash_key_for_multi, live_value};
use super::timetag::TIMETAG_KEY_PREFIX;
use super::{Direction, ScanBatch, ScanControl, StorageEngine, StorageLimits};
use crate::key::{self, encode_key, hash_key_prefix, next_key};
use crate::wire::message::{
    Filter, FilterType, MultiGetRequest, OpError, Record, Response, ResponseBody, ScanRange,
    ScanRequest, SortKeyValue,
};

use super::Partition;

/// A raw-key range `[lower, upper)`; `upper = None` is unbounded.
struct RawRange {
    lower: Vec<u8>,
    upper: Option<Vec<u8>>,
}

/// The raw range of `hash_key`'s sort keys from `start` to `stop` (empty
/// stop = end of the hash key, where `stop_inclusive` does not matter),
/// narrowed by a sort-key prefix filter. `None` when the range is empty.
fn sort_key_range(
    hash_key: &[u8],
    start: &[u8],
    start_inclusive: bool,
    stop: &[u8],
    stop_inclusive: bool,
    sort_key_filter: &Filter,
) -> Result<Option<RawRange>, OpError> {
    if !stop.is_empty() {
        match start.cmp(stop) {
            Ordering::Greater => return Ok(None),
            Ordering::Equal if !(start_inclusive && stop_inclusive) => return Ok(None),
            _ => {}
        }
    }
    let mut lower = encode_key(hash_key, start)?;
    if !start_inclusive {
        lower.push(0); // The immediate successor of `start`.
    }
    let mut upper = if stop.is_empty() {
        next_key(&hash_key_prefix(hash_key)?)
    } else {
        let mut upper = encode_key(hash_key, stop)?;
        if stop_inclusive {
            upper.push(0);
        }
        Some(upper)
    };
    if sort_key_filter.kind == FilterType::MatchPrefix && !sort_key_filter.pattern.is_empty() {
        let prefix_lower = encode_key(hash_key, &sort_key_filter.pattern)?;
        let prefix_upper = next_key(&prefix_lower);
        upper = min_upper(upper, prefix_upper);
        lower = lower.max(prefix_lower);
    }
    if upper.as_ref().is_some_and(|upper| *upper <= lower) {
        return Ok(None);
    }
    Ok(Some(RawRange { lower, upper }))
}

fn min_upper(a: Option<Vec<u8>>, b: Option<Vec<u8>>) -> Option<Vec<u8>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// A request's limit: `<= 0` means the server bound, and the server bound
/// caps everything.
fn effective_limit(requested: i32, bound: usize) -> usize {
    match usize::try_from(requested) {
        Ok(requested) if requested > 0 => requested.min(bound),
        _ => bound,
    }
}

/// Collects multi_get results under the count and byte limits.
struct Collector {
    kvs: Vec<SortKeyValue>,
    bytes: usize,
    count_limit: usize,
    bytes_limit: usize,
    incomplete: bool,
}

impl Collector {
    /// Takes one matching record; `false` (and `incomplete`) when a limit
    /// was already reached, so the record is left out.
    fn offer(&mut self, sort_key: &[u8], value: &[u8], no_value: bool) -> bool {
        if self.kvs.len() >= self.count_limit || self.bytes >= self.bytes_limit {
            self.incomplete = true;
            return false;
        }
        let value = if no_value { Vec::new() } else { value.to_vec() };
        self.bytes += sort_key.len() + value.len();
        self.kvs.push(SortKeyValue {
            sort_key: sort_key.to_vec(),
            value,
        });
        true
    }
}

impl<E: StorageEngine> Partition<E> {
    pub(super) fn multi_get(&self, request: &MultiGetRequest, now_epoch_s: u32) -> Response {
        check_hash_key_for_multi(&request.hash_key, "multi_get")?;
        let limits: &StorageLimits = self.limits();
        let mut collector = Collector {
            kvs: Vec::new(),
            bytes: 0,
            count_limit: effective_limit(request.max_kv_count, limits.multi_get_count_max),
            bytes_limit: effective_limit(request.max_kv_size, limits.multi_get_bytes_max),
            incomplete: false,
        };
        if !request.sort_keys.is_empty() {
            let mut sort_keys: Vec<&[u8]> = request.sort_keys.iter().map(Vec::as_slice).collect();
            sort_keys.sort_unstable();
            sort_keys.dedup();
            for sort_key in sort_keys {
                let raw_key = encode_key(&request.hash_key, sort_key)?;
                if let Some(live) = self.read_live(&raw_key, now_epoch_s)? {
                    if !collector.offer(sort_key, &live.user_data, request.no_value) {
                        break;
                    }
                }
            }
            return Ok(ResponseBody::MultiGet {
                kvs: collector.kvs,
                incomplete: collector.incomplete,
            });
        }
        let Some(range) = sort_key_range(
            &request.hash_key,
            &request.start_sort_key,
            request.start_inclusive,
            &request.stop_sort_key,
            request.stop_inclusive,
            &request.sort_key_filter,
        )?
        else {
            return Ok(ResponseBody::MultiGet {
                kvs: Vec::new(),
                incomplete: false,
            });
        };
        let direction = if request.reverse {
            Direction::Reverse
        } else {
            Direction::Forward
        };
        let examined_max = limits.multi_get_examined_max;
        let mut examined: usize = 0;
        self.engine().scan(
            &range.lower,
            range.upper.as_deref(),
            direction,
            &mut |raw_key, raw_value| {
                if examined >= examined_max {
                    collector.incomplete = true;
                    return Ok(ScanControl::Stop);
                }
                examined += 1;
                let Some((_, sort_key)) = key::decode_key(raw_key) else {
                    return Ok(ScanControl::Continue);
                };
                let Some((_, user_data)) = live_value(raw_value, now_epoch_s)? else {
                    return Ok(ScanControl::Continue);
                };
                if !request.sort_key_filter.matches(sort_key) {
                    return Ok(ScanControl::Continue);
                }
                Ok(if collector.offer(sort_key, user_data, request.no_value) {
                    ScanControl::Continue
                } else {
                    ScanControl::Stop
                })
            },
        )?;
        if request.reverse {
            collector.kvs.reverse();
        }
        Ok(ResponseBody::MultiGet {
            kvs: collector.kvs,
            incomplete: collector.incomplete,
        })
    }

    pub(super) fn sortkey_count(&self, hash_key: &[u8], now_epoch_s: u32) -> Response {
        check_hash_key_for_multi(hash_key, "sortkey_count")?;
        let lower = hash_key_prefix(hash_key)?;
        let upper = next_key(&lower);
        let examined_max = self.limits().sortkey_count_examined_max;
        let mut examined: usize = 0;
        let mut count: i64 = 0;
        self.engine().scan(
            &lower,
            upper.as_deref(),
            Direction::Forward,
            &mut |_, raw_value| {
                if examined >= examined_max {
                    count = -1;
                    return Ok(ScanControl::Stop);
                }
                examined += 1;
                if live_value(raw_value, now_epoch_s)?.is_some() {
                    count += 1;
                }
                Ok(ScanControl::Continue)
            },
        )?;
        Ok(ResponseBody::Count(count))
    }

    /// One batch of a hash or full scan, continuing after the raw key
    /// `resume_after` (`None` = from the start). Returns at most
    /// `batch_size` records (clamped to `1..=scan_batch_max`) and examines
    /// at most `scan_examined_max` records; `resume_after` of the result is
    /// `None` exactly when the scan is complete.
    ///
    /// Hash scans walk `[start, stop]` of one hash key in sort-key order
    /// (empty stop = to the end of the hash key); full scans walk the whole
    /// partition in raw-key order. Both skip expired records and apply the
    /// hash-key and sort-key filters, `no_value` and `only_return_count`.
    pub fn scan_batch(
        &self,
        request: &ScanRequest,
        resume_after: Option<&[u8]>,
        batch_size: usize,
        now_epoch_s: u32,
    ) -> Result<ScanBatch, OpError> {
        let limits = self.limits();
        let batch_size = batch_size.clamp(1, limits.scan_batch_max.max(1));
        let range = match &request.range {
            ScanRange::Hash {
                hash_key,
                start_sort_key,
                stop_sort_key,
            } => {
                check_hash_key_for_multi(hash_key, "hash scan")?;
                if !request.hash_key_filter.matches(hash_key) {
                    return Ok(ScanBatch::default());
                }
                sort_key_range(
                    hash_key,
                    start_sort_key,
                    request.start_inclusive,
                    stop_sort_key,
                    request.stop_inclusive,
                    &request.sort_key_filter,
                )?
            }
            ScanRange::Full => full_scan_range(&request.hash_key_filter),
        };
        let Some(mut range) = range else {
            return Ok(ScanBatch::default());
        };
        if let Some(resume_after) = resume_after {
            let mut successor = resume_after.to_vec();
            successor.push(0);
            range.lower = range.lower.max(successor);
            if range
                .upper
                .as_ref()
                .is_some_and(|upper| *upper <= range.lower)
            {
                return Ok(ScanBatch::default());
            }
        }
        let examined_max = limits.scan_examined_max.max(1);
        let mut examined: usize = 0;
        let mut batch = ScanBatch::default();
        self.engine().scan(
            &range.lower,
            range.upper.as_deref(),
            Direction::Forward,
            &mut |raw_key, raw_value| {
                examined += 1;
                if let Some((hash_key, sort_key)) = key::decode_key(raw_key) {
                    if let Some((_, user_data)) = live_value(raw_value, now_epoch_s)? {
                        if request.hash_key_filter.matches(hash_key)
                            && request.sort_key_filter.matches(sort_key)
                            && self.owns(hash_key, sort_key)
                        {
                            batch.count += 1;
                            if !request.only_return_count {
                                batch.records.push(Record {
                                    hash_key: hash_key.to_vec(),
                                    sort_key: sort_key.to_vec(),
                                    value: if request.no_value {
                                        Vec::new()
                                    } else {
                                        user_data.to_vec()
                                    },
                                });
                            }
                        }
                    }
                }
                if batch.count as usize >= batch_size || examined >= examined_max {
                    batch.resume_after = Some(raw_key.to_vec());
                    return Ok(ScanControl::Stop);
                }
                Ok(ScanControl::Continue)
            },
        )?;
        Ok(batch)
    }
}

/// The raw range of a full scan: every record, up to the timetags'
/// companion records (which sort after every record: docs/duplication.md),
/// except that a hash-key prefix filter lets the scan start at
/// `encode_key(pattern, "")` — raw keys order by (hash-key length, bytes),
/// so no matching hash key sorts before it.
fn full_scan_range(hash_key_filter: &Filter) -> Option<RawRange> {
    let upper = Some(TIMETAG_KEY_PREFIX.to_vec());
    if hash_key_filter.kind == FilterType::MatchPrefix && !hash_key_filter.pattern.is_empty() {
        // A pattern longer than any hash key matches nothing.
        let lower = encode_key(&hash_key_filter.pattern, &[]).ok()?;
        return Some(RawRange { lower, upper });
    }
    Some(RawRange {
        lower: Vec::new(),
        upper,
    })
}
