//! Where meta's persistent state lives: the [`MetaStore`] trait, its
//! errors, and [`MemoryMetaStore`] for tests and the simulator. The
//! embedded file store is the node crate's (`markab::meta::store::FileMetaStore`;
//! docs/meta.md, "Persistence").
//!
//! The trait is shaped for a later etcd store as well: `save` is a
//! conditional write that may fail with [`MetaStoreError::Fenced`] when
//! another meta has taken over, after which this meta must stop serving.

use std::path::PathBuf;

use crate::meta::state::MetaData;

/// Why the store could not load or save.
#[derive(Debug, thiserror::Error)]
pub enum MetaStoreError {
    /// A file operation failed.
    #[error("{path}: {operation}: {source}")]
    Io {
        path: PathBuf,
        operation: &'static str,
        source: std::io::Error,
    },
    /// The stored state cannot be read back or breaks an invariant.
    #[error("{path}: corrupt meta state: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// Another meta owns the data directory (or, for a shared store, has
    /// taken over): this meta must not write.
    #[error("meta store is fenced: {message}")]
    Fenced { message: String },
    /// A shared store (etcd) did not answer in time, or refused the
    /// request; whether a save took effect is unknown (the next save's
    /// compare finds out).
    #[error("meta store unavailable: {message}")]
    Unavailable { message: String },
}

/// Durable storage of [`MetaData`]. Object safe; `save` must make `data`
/// durable before it returns `Ok`, and either replaces the whole state or
/// leaves the previous one in place.
pub trait MetaStore: Send {
    /// Starts a term of leadership `epoch` (docs/meta.md, "High
    /// availability") and loads the state it starts from: until the next
    /// call, every save must fail with [`MetaStoreError::Fenced`] once
    /// another meta has led a later term. A store for one meta (the file
    /// store) only loads.
    fn begin_term(&mut self, _epoch: i64) -> Result<Option<MetaData>, MetaStoreError> {
        self.load()
    }
    /// The stored state, or `None` when nothing was ever saved.
    fn load(&self) -> Result<Option<MetaData>, MetaStoreError>;
    /// Replaces the stored state with `data`, durably.
    fn save(&mut self, data: &MetaData) -> Result<(), MetaStoreError>;
}

/// A store in memory, for tests and the simulator; `fail_saves` makes every
/// save fail until cleared.
#[derive(Debug, Default)]
pub struct MemoryMetaStore {
    /// The last saved state.
    pub saved: Option<MetaData>,
    /// While true, `save` fails with an I/O error and keeps `saved`.
    pub fail_saves: bool,
    /// The epoch of the term begun last ([`MetaStore::begin_term`]).
    pub term_epoch: i64,
    /// Saves of terms below this epoch fail with `Fenced`: a later leader
    /// exists.
    pub fenced_below_epoch: i64,
}

impl MetaStore for MemoryMetaStore {
    fn load(&self) -> Result<Option<MetaData>, MetaStoreError> {
        Ok(self.saved.clone())
    }

    fn begin_term(&mut self, epoch: i64) -> Result<Option<MetaData>, MetaStoreError> {
        self.term_epoch = epoch;
        self.load()
    }

    fn save(&mut self, data: &MetaData) -> Result<(), MetaStoreError> {
        if self.term_epoch < self.fenced_below_epoch {
            return Err(MetaStoreError::Fenced {
                message: format!(
                    "term {} is over: a leader of term {} exists",
                    self.term_epoch, self.fenced_below_epoch
                ),
            });
        }
        if self.fail_saves {
            return Err(MetaStoreError::Io {
                path: PathBuf::from("<memory>"),
                operation: "save",
                source: std::io::Error::other("injected failure"),
            });
        }
        self.saved = Some(data.clone());
        Ok(())
    }
}
