//! Routes in meta mode: the per-table route cache, refreshing it from meta,
//! and the bounded retry loop of a routed operation.
//!
//! Retry rules (docs/client.md, "Routing refresh and retry"): an attempt
//! that provably did not execute on a node — the dial failed, the request
//! never left the client, or the node answered with a routing error such as
//! `NOT_HOSTED` — refreshes the route (rate-limited) and tries again, at most
//! [`ROUTED_ATTEMPTS_MAX`] attempts with exponential backoff, all within the
//! operation's timeout. A node's answer that it cannot take the request for
//! a moment (`BUSY`, `NOT_ENOUGH_REPLICAS`: not executed either) is tried
//! again the same way, without the refresh. A read whose connection died
//! after it was sent is retried the same way; a write whose fate is unknown (its connection died
//! after sending, or it timed out) is never retried: the error is returned
//! and the route is marked stale so the next operation refreshes it first.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use markab_wire::{Envelope, ErrorCode, Gpid, Request, ResponseBody, Route};
use tokio::time::Instant;

use super::connection::{timeout_error, CallError};
use super::table::Target;
use super::{lock, validate_route, ClientError, ClientInner, RouteSource};

/// Most attempts of one routed operation in meta mode (the first try and
/// seven retries: about 1.3 s of backoff, longer than a failover with the
/// default timings — grace 800 ms plus the new primary's activation — so a
/// request that meets a dead primary finds its successor).
pub const ROUTED_ATTEMPTS_MAX: usize = 8;
/// Backoff before the first retry of a routed operation; it doubles for
/// each further retry.
pub const RETRY_BACKOFF_INITIAL: Duration = Duration::from_millis(20);
/// Longest backoff between two attempts.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(320);
/// Shortest interval between two route refreshes of one table.
pub const ROUTE_REFRESH_INTERVAL_MIN: Duration = Duration::from_millis(100);
/// Most meta addresses one client accepts.
pub const META_ADDRESSES_MAX: usize = 16;
/// Passes over the meta address list one meta request may make (a second
/// pass covers a meta that restarted under a cached connection).
const META_PASSES_MAX: usize = 2;
/// Longest pause between passes over the meta addresses.
const META_BACKOFF_MAX: Duration = Duration::from_millis(200);

// The retries, with their backoff, fit well inside the default timeout.
const _: () = assert!(ROUTED_ATTEMPTS_MAX >= 2 && ROUTED_ATTEMPTS_MAX <= 8);
const _: () = assert!(RETRY_BACKOFF_INITIAL.as_millis() < ROUTE_REFRESH_INTERVAL_MIN.as_millis());

/// Node answers meaning "not executed here: the route is stale".
const ROUTE_ERROR_CODES: [ErrorCode; 8] = [
    ErrorCode::StaleRoute,
    ErrorCode::Splitting,
    ErrorCode::NotHosted,
    ErrorCode::NotPrimary,
    ErrorCode::WrongShard,
    ErrorCode::UnknownPartition,
    ErrorCode::UnknownTable,
    ErrorCode::WrongPartition,
];

/// The meta servers a client asks, and the one that answered last.
#[derive(Debug)]
pub(crate) struct MetaServers {
    pub(crate) addresses: Vec<String>,
    /// Index into `addresses` of the meta to try first.
    pub(crate) preferred: AtomicUsize,
}

/// One table's cached route, shared by every handle of the table.
pub(crate) struct RouteCell {
    pub(crate) name: String,
    /// Fixed for the table's life: a refresh that changes it means the
    /// name now belongs to another table.
    pub(crate) app_id: i32,
    /// The count the table had when first routed: a split only doubles it,
    /// so a refresh with a count that is not a multiple of it means the
    /// name now belongs to another table.
    pub(crate) partition_count: u32,
    current: Mutex<Arc<Route>>,
    /// When the route was last asked of meta; held while asking, so
    /// concurrent callers share one refresh.
    refreshed_at: tokio::sync::Mutex<Option<Instant>>,
    /// Set when an operation's outcome suggests the route is wrong but the
    /// operation could not retry (a timeout, a write of unknown fate): the
    /// next operation refreshes first.
    stale: AtomicBool,
}

impl RouteCell {
    /// A cell for a route already checked by `validate_route`.
    pub(crate) fn new(route: Route) -> RouteCell {
        RouteCell {
            name: route.table.clone(),
            app_id: route.app_id,
            // validate_route checked it is positive.
            partition_count: route.partition_count as u32,
            current: Mutex::new(Arc::new(route)),
            refreshed_at: tokio::sync::Mutex::new(None),
            stale: AtomicBool::new(false),
        }
    }

    /// The route in use now.
    pub(crate) fn current(&self) -> Arc<Route> {
        lock(&self.current).clone()
    }

    fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }
}

/// Node answers meaning "not executed: the partition cannot take it for a
/// moment" — its mutation log is full (`BUSY`), or a reconfiguration left
/// it fewer members than meta's `replica_count_min_alive` until a learner
/// catches up (`NOT_ENOUGH_REPLICAS`). The route is right; try again later.
const TRANSIENT_ERROR_CODES: [ErrorCode; 2] = [ErrorCode::Busy, ErrorCode::NotEnoughReplicas];

/// The outcome of one attempt of a routed operation.
enum Attempt {
    /// Final: the answer, or an error that must not be retried.
    Done(Result<ResponseBody, ClientError>),
    /// The request did not execute (or is a read that may be repeated):
    /// refresh the route and try again.
    Retry(ClientError),
    /// The request did not execute, and the route is not in doubt: try
    /// again after the backoff, without a refresh.
    Wait(ClientError),
}

/// Whether `request` may be sent again after its connection died with the
/// request on the wire. Writes may have been applied; a scan continuation
/// may have advanced its cursor (a repeat would skip a batch).
fn repeatable_after_sent(request: &Request) -> bool {
    !request.is_write() && !matches!(request, Request::Scan { .. })
}

/// Whether a meta request changes meta's state (so is not repeated once it
/// may have reached a meta).
fn meta_request_changes_state(request: &Request) -> bool {
    matches!(
        request,
        Request::CreateTable(_)
            | Request::DropTable { .. }
            | Request::RecallTable { .. }
            | Request::SetAppEnvs { .. }
            | Request::Beacon(_)
            | Request::PartitionSplit(_)
            | Request::Dup(_)
    )
}

impl ClientInner {
    /// Sends `request` to the primary of `target`'s partition per the
    /// table's route, refreshing the route and retrying per the module's
    /// rules, within the operation timeout.
    pub(crate) async fn call_routed(
        &self,
        cell: &RouteCell,
        target: Target,
        request: &Request,
    ) -> Result<ResponseBody, ClientError> {
        let timeout = self.options.operation_timeout;
        let deadline = Instant::now() + timeout;
        let mut route = cell.current();
        if cell.stale.load(Ordering::Relaxed) {
            match self.refresh_route(cell, &route, deadline).await {
                Ok(fresh) => route = fresh,
                Err(error @ (ClientError::UnknownTable(_) | ClientError::TableReplaced { .. })) => {
                    return Err(error)
                }
                // Meta is unreachable: the cached route may still be right.
                Err(error) => tracing::debug!(table = %cell.name, %error, "route refresh failed"),
            }
        }
        let mut backoff = RETRY_BACKOFF_INITIAL;
        let mut attempt = 0;
        loop {
            // A key's partition under the route's count, which a split
            // doubles; a whole-partition target keeps the count it was
            // planned for (its caller plans again on STALE_ROUTE).
            let (partition_index, partition_count) = if target.keyed {
                let count = route.partition_count.max(1) as u32;
                (
                    markab_core::key::partition_index(target.partition_hash, count),
                    count,
                )
            } else {
                (target.partition_index, target.partition_count)
            };
            let partition = route
                .partitions
                .get(partition_index as usize)
                .ok_or_else(|| {
                    ClientError::Protocol(format!(
                        "partition {partition_index} missing from the route of {}",
                        cell.name
                    ))
                })?;
            let envelope = Envelope {
                request_id: 0,
                timeout_ms: 0,
                gpid: Gpid {
                    app_id: route.app_id,
                    partition_index: partition.partition_index,
                },
                partition_hash: target.partition_hash,
                partition_count: partition_count as i32,
            };
            let (error, refresh) = match self
                .attempt(
                    cell,
                    &partition.address,
                    envelope,
                    request,
                    deadline,
                    timeout,
                )
                .await
            {
                Attempt::Done(result) => return result,
                Attempt::Retry(error) => (error, true),
                Attempt::Wait(error) => (error, false),
            };
            // A partition splitting answers until its child serves (a
            // fraction of a second): those tries count against the
            // operation's timeout only.
            let splitting =
                matches!(&error, ClientError::Server(error) if error.code == ErrorCode::Splitting);
            if !splitting {
                attempt += 1;
            }
            if attempt == ROUTED_ATTEMPTS_MAX {
                if refresh {
                    cell.mark_stale();
                }
                return Err(error);
            }
            tracing::debug!(
                table = %cell.name,
                partition = partition.partition_index,
                address = %partition.address,
                %error,
                attempt,
                refresh,
                "retrying"
            );
            if Instant::now() + backoff >= deadline {
                // No time left for another try: the last error says why.
                if refresh {
                    cell.mark_stale();
                }
                return Err(error);
            }
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2).min(RETRY_BACKOFF_MAX);
            if !refresh {
                continue;
            }
            match self.refresh_route(cell, &route, deadline).await {
                Ok(fresh) => {
                    route = fresh;
                    // The count changed under a whole-partition target:
                    // its caller plans again.
                    if !target.keyed && route.partition_count as u32 != target.partition_count {
                        return Err(error);
                    }
                }
                Err(
                    refresh_error @ (ClientError::UnknownTable(_)
                    | ClientError::TableReplaced { .. }),
                ) => return Err(refresh_error),
                Err(_) if Instant::now() >= deadline => return Err(error),
                Err(refresh_error) => {
                    cell.mark_stale();
                    tracing::debug!(table = %cell.name, error = %refresh_error, "route refresh failed");
                }
            }
        }
    }

    /// One try of a routed request at `address`.
    async fn attempt(
        &self,
        cell: &RouteCell,
        address: &str,
        envelope: Envelope,
        request: &Request,
        deadline: Instant,
        timeout: Duration,
    ) -> Attempt {
        let connection = match tokio::time::timeout_at(deadline, self.connection(address)).await {
            Err(_) => {
                cell.mark_stale();
                return Attempt::Done(Err(timeout_error(request.name(), timeout)));
            }
            // Nothing reached a node.
            Ok(Err(error)) => return Attempt::Retry(error),
            Ok(Ok(connection)) => connection,
        };
        match connection.call(envelope, request, deadline, timeout).await {
            Ok(Ok(body)) => Attempt::Done(Ok(body)),
            // A cursor lives on the partition it was opened on: its scan
            // plans again (**route-version**).
            Ok(Err(error))
                if error.code == ErrorCode::StaleRoute
                    && matches!(request, Request::Scan { .. } | Request::ClearScanner { .. }) =>
            {
                Attempt::Done(Err(ClientError::Server(error)))
            }
            Ok(Err(error)) if ROUTE_ERROR_CODES.contains(&error.code) => {
                Attempt::Retry(ClientError::Server(error))
            }
            Ok(Err(error)) if TRANSIENT_ERROR_CODES.contains(&error.code) => {
                Attempt::Wait(ClientError::Server(error))
            }
            Ok(Err(error)) => Attempt::Done(Err(ClientError::Server(error))),
            Err(CallError::NotSent(error @ (ClientError::Io(_) | ClientError::Protocol(_)))) => {
                Attempt::Retry(error)
            }
            Err(CallError::Sent(error @ ClientError::Io(_))) if repeatable_after_sent(request) => {
                Attempt::Retry(error)
            }
            Err(CallError::Sent(error)) => {
                // A timeout or a lost connection: the node may be gone.
                cell.mark_stale();
                Attempt::Done(Err(error))
            }
            Err(CallError::NotSent(error)) => Attempt::Done(Err(error)),
        }
    }

    /// Asks meta for the table's route again, unless another caller did
    /// since `seen` was read; at most one refresh per table per
    /// [`ROUTE_REFRESH_INTERVAL_MIN`] (a caller waits for its turn).
    async fn refresh_route(
        &self,
        cell: &RouteCell,
        seen: &Arc<Route>,
        deadline: Instant,
    ) -> Result<Arc<Route>, ClientError> {
        let timed_out = || timeout_error("query_route", self.options.operation_timeout);
        let mut refreshed_at = tokio::time::timeout_at(deadline, cell.refreshed_at.lock())
            .await
            .map_err(|_| timed_out())?;
        let current = cell.current();
        if !Arc::ptr_eq(&current, seen) {
            return Ok(current);
        }
        if let Some(at) = *refreshed_at {
            let allowed = at + ROUTE_REFRESH_INTERVAL_MIN;
            if allowed >= deadline {
                return Err(timed_out());
            }
            tokio::time::sleep_until(allowed).await;
        }
        *refreshed_at = Some(Instant::now());
        let meta_deadline = deadline.min(Instant::now() + self.options.meta_timeout);
        let route = match self.query_route_from_meta(&cell.name, meta_deadline).await {
            Ok(route) => route,
            Err(error) => {
                if matches!(error, ClientError::UnknownTable(_)) {
                    self.forget_route(cell);
                }
                return Err(error);
            }
        };
        let count = route.partition_count.max(1) as u32;
        if route.app_id != cell.app_id || !count.is_multiple_of(cell.partition_count.max(1)) {
            self.forget_route(cell);
            return Err(ClientError::TableReplaced {
                table: cell.name.clone(),
                app_id: cell.app_id,
                app_id_now: route.app_id,
            });
        }
        let route = Arc::new(route);
        *lock(&cell.current) = route.clone();
        cell.stale.store(false, Ordering::Relaxed);
        Ok(route)
    }

    /// Removes `cell` from the route cache (when it is still the cached
    /// one), so the next `open_table` asks meta afresh.
    fn forget_route(&self, cell: &RouteCell) {
        let mut routes = lock(&self.routes);
        if routes
            .get(&cell.name)
            .is_some_and(|cached| std::ptr::eq(Arc::as_ptr(cached), cell))
        {
            routes.remove(&cell.name);
        }
    }

    /// `QueryRoute` to meta, checked; `UNKNOWN_TABLE` becomes
    /// [`ClientError::UnknownTable`].
    pub(crate) async fn query_route_from_meta(
        &self,
        table: &str,
        deadline: Instant,
    ) -> Result<Route, ClientError> {
        let request = Request::QueryRoute {
            table: table.to_string(),
        };
        match self.meta_call(&request, deadline).await {
            Ok(ResponseBody::Route(route)) => validate_route(table, route),
            Ok(other) => Err(super::unexpected("query_route", &other)),
            Err(ClientError::Server(error)) if error.code == ErrorCode::UnknownTable => {
                Err(ClientError::UnknownTable(table.to_string()))
            }
            Err(error) => Err(error),
        }
    }

    /// Sends a request to meta: the meta that answered last first, then
    /// the others in turn, until one answers or `deadline` passes. A
    /// follower of a meta group answers `NOT_LEADER` with the leader's
    /// address: the request goes there next (one hop), and while some meta
    /// answers so (a group electing a leader) the passes go on until the
    /// deadline; when none answers at all, two passes end it. A request
    /// that changes meta's state is not sent again once it may have reached
    /// a meta (`NOT_LEADER` means it did not execute). Meta's error answers
    /// are returned as [`ClientError::Server`].
    pub(crate) async fn meta_call(
        &self,
        request: &Request,
        deadline: Instant,
    ) -> Result<ResponseBody, ClientError> {
        let RouteSource::Meta(meta) = &self.route_source else {
            return Err(ClientError::NeedsMeta {
                operation: request.name(),
            });
        };
        let timeout = self.options.meta_timeout;
        let timed_out = || timeout_error(request.name(), timeout);
        let count = meta.addresses.len();
        let first = meta.preferred.load(Ordering::Relaxed);
        let mut last_error = None;
        let mut turn = 0;
        let mut passes_unanswered = 0;
        let mut group_answered = false;
        let mut redirect: Option<String> = None;
        let mut backoff = RETRY_BACKOFF_INITIAL;
        loop {
            let (address, index) = match redirect.take() {
                Some(leader) => {
                    let index = meta.addresses.iter().position(|a| *a == leader);
                    (leader, index)
                }
                None => {
                    if turn > 0 && turn % count == 0 {
                        if !group_answered {
                            passes_unanswered += 1;
                            if passes_unanswered >= META_PASSES_MAX {
                                break;
                            }
                        }
                        group_answered = false;
                        // A pause between passes: a meta may be restarting,
                        // or its group electing a leader.
                        if Instant::now() + backoff >= deadline {
                            break;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(META_BACKOFF_MAX);
                    }
                    let index = (first + turn) % count;
                    turn += 1;
                    (meta.addresses[index].clone(), Some(index))
                }
            };
            let connection =
                match tokio::time::timeout_at(deadline, self.connection(&address)).await {
                    Err(_) => return Err(timed_out()),
                    Ok(Err(error)) => {
                        tracing::debug!(%address, %error, "meta unreachable");
                        last_error = Some(error);
                        continue;
                    }
                    Ok(Ok(connection)) => connection,
                };
            match connection
                .call(Envelope::default(), request, deadline, timeout)
                .await
            {
                Ok(Err(error)) if error.code == ErrorCode::NotLeader => {
                    tracing::debug!(%address, leader = %error.message, "meta is not the leader");
                    group_answered = true;
                    if !error.message.is_empty() && index.is_some() && error.message != address {
                        redirect = Some(error.message.clone());
                    }
                    last_error = Some(ClientError::Server(error));
                }
                Ok(answer) => {
                    if let Some(index) = index {
                        meta.preferred.store(index, Ordering::Relaxed);
                    }
                    return answer.map_err(ClientError::Server);
                }
                Err(CallError::NotSent(
                    error @ (ClientError::Io(_) | ClientError::Protocol(_)),
                )) => {
                    last_error = Some(error);
                }
                Err(CallError::Sent(error @ ClientError::Io(_)))
                    if !meta_request_changes_state(request) =>
                {
                    tracing::debug!(%address, %error, "meta connection failed; trying again");
                    last_error = Some(error);
                }
                Err(error) => return Err(error.into_error()),
            }
        }
        Err(last_error.unwrap_or_else(timed_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use markab_wire::{CreateTableRequest, Key};

    // Proves writes and scan continuations are never repeated once sent,
    // while plain reads may be.
    #[test]
    fn repeatability_after_sending() {
        let key = Key::new("h", "s");
        assert!(repeatable_after_sent(&Request::Get(key.clone())));
        assert!(repeatable_after_sent(&Request::BatchGet { keys: vec![] }));
        assert!(!repeatable_after_sent(&Request::Scan { context_id: 3 }));
        assert!(!repeatable_after_sent(&Request::Del(key.clone())));
        assert!(!repeatable_after_sent(&Request::Set {
            key,
            value: vec![],
            ttl_seconds: 0
        }));
    }

    // Proves DDL is classed as state-changing and queries are not.
    #[test]
    fn meta_state_changes() {
        let create = Request::CreateTable(CreateTableRequest {
            table: "t".into(),
            partition_count: 8,
            replica_count: 3,
            envs: vec![],
            success_if_exist: false,
        });
        assert!(meta_request_changes_state(&create));
        assert!(meta_request_changes_state(&Request::DropTable {
            table: "t".into(),
            reserve_seconds: None
        }));
        assert!(!meta_request_changes_state(&Request::ListNodes));
        assert!(!meta_request_changes_state(&Request::QueryRoute {
            table: "t".into()
        }));
    }
}
