//! One input through meta's state machine and its store: persist, then
//! commit, then answer (invariant "persist before effect"; docs/meta.md).
//! The server runs these on its actor thread; the simulator runs the same.

use markab_wire::message::{ErrorCode, OpError, Request, Response};

use crate::meta::state::{MetaData, MetaState, MetaTime, Step};
use crate::meta::store::{MetaStore, MetaStoreError};

/// Runs one request through the state machine and, when it changes
/// persistent data, through the store: save, then commit, then answer. A
/// failed save answers `STORAGE_ERROR` and changes nothing.
pub fn execute(
    state: &mut MetaState,
    store: &mut dyn MetaStore,
    request: &Request,
    now: MetaTime,
) -> Response {
    let step = state.handle(request, now);
    execute_step(state, store, step, request.name())
}

/// Persists a step's change (if any) and commits it, then answers; a failed
/// save answers `STORAGE_ERROR` and changes nothing. `what` names the input
/// in the log.
pub fn execute_step(
    state: &mut MetaState,
    store: &mut dyn MetaStore,
    step: Step,
    what: &str,
) -> Response {
    let Some(data) = step.persist else {
        return step.reply;
    };
    match store.save(&data) {
        Ok(()) => {
            state.commit(data);
            tracing::info!(request = what, "meta state changed");
            step.reply
        }
        Err(error) => {
            tracing::error!(request = what, %error, "meta store write failed; change refused");
            Err(store_error(&error))
        }
    }
}

/// Runs a tick through the state machine and persists what it proposes; a
/// failed save changes nothing (the next tick tries again).
pub fn execute_tick(
    state: &mut MetaState,
    store: &mut dyn MetaStore,
    now: impl Into<MetaTime>,
) -> Result<(), MetaStoreError> {
    if let Some(data) = state.tick(now) {
        let before = state.data().tables.len();
        store.save(&data)?;
        let after = data.tables.len();
        state.commit(data);
        tracing::info!(
            tables_forgotten = before - after,
            version = state.data().version,
            "meta tick persisted a change (forgotten tables or new partition configurations)"
        );
    }
    Ok(())
}

/// The answer to a request whose save failed: `NOT_LEADER` (leader
/// unknown) when the store fenced it, this meta having been deposed
/// (**deposed-leader-fenced**); `STORAGE_ERROR` otherwise.
pub fn store_error(error: &MetaStoreError) -> OpError {
    match error {
        MetaStoreError::Fenced { .. } => OpError::new(ErrorCode::NotLeader, String::new()),
        MetaStoreError::Unavailable { .. } => OpError::new(
            ErrorCode::StorageError,
            format!(
                "meta could not persist the change; it may or may not have taken effect: {error}"
            ),
        ),
        _ => OpError::new(
            ErrorCode::StorageError,
            format!("meta could not persist the change, nothing changed: {error}"),
        ),
    }
}

/// Stores and commits a change the state machine proposed outside a
/// request or a tick (the outcome of meta's IO work, such as a backup's
/// manifest written); a failed save changes nothing.
pub fn execute_change(
    state: &mut MetaState,
    store: &mut dyn MetaStore,
    change: Option<MetaData>,
    what: &str,
) -> Result<(), MetaStoreError> {
    if let Some(data) = change {
        store.save(&data)?;
        state.commit(data);
        tracing::info!(
            change = what,
            version = state.data().version,
            "meta state changed"
        );
    }
    Ok(())
}
