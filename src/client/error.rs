//! The client's error type.

use markab_wire::{ErrorCode, OpError};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with an error code (or the client refused the
    /// request locally with the code the node would have used, for example
    /// `REQUEST_TOO_LARGE`).
    #[error("server error {0}")]
    Server(OpError),
    /// No answer arrived within the operation timeout. For a write the
    /// outcome is unknown: it may or may not have been applied.
    #[error("{operation} timed out after {timeout_ms} ms")]
    Timeout {
        operation: &'static str,
        timeout_ms: u64,
    },
    /// The TCP connection to `address` could not be established.
    /// (`Display` names the address; the cause is the error's `source()`,
    /// which `{:#}` in anyhow prints after it.)
    #[error("cannot connect to {address}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    /// The connection failed while the request was pending. For a write the
    /// outcome is unknown.
    #[error("connection failed: {0}")]
    Io(String),
    /// The peer sent something this client cannot decode or did not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The node does not know this table.
    #[error("unknown table {0:?}")]
    UnknownTable(String),
    /// The table this handle was opened on was dropped and its name now
    /// belongs to another table (a new app id, maybe another partition
    /// count): open the table again.
    #[error(
        "table {table:?} (app id {app_id}) was dropped; the name now belongs to app id \
         {app_id_now}: open the table again"
    )]
    TableReplaced {
        table: String,
        app_id: i32,
        app_id_now: i32,
    },
    /// A cluster operation (DDL, node and cluster queries) was asked of a
    /// client connected to a standalone node; it needs
    /// `Client::connect_meta`.
    #[error(
        "{operation} needs a client connected to meta (markab shell --meta, \
         Client::connect_meta); this client talks to a standalone node"
    )]
    NeedsMeta { operation: &'static str },
    /// The client (or the connection) was shut down.
    #[error("client closed")]
    Closed,
}

impl ClientError {
    /// The wire error code this error corresponds to, where there is one:
    /// the server's code, `TIMEOUT` for timeouts and `UNKNOWN_TABLE` for
    /// unknown tables.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(error) => Some(error.code),
            ClientError::Timeout { .. } => Some(ErrorCode::Timeout),
            ClientError::UnknownTable(_) | ClientError::TableReplaced { .. } => {
                Some(ErrorCode::UnknownTable)
            }
            ClientError::Connect { .. }
            | ClientError::NeedsMeta { .. }
            | ClientError::Io(_)
            | ClientError::Protocol(_)
            | ClientError::Closed => None,
        }
    }

    /// A local `INVALID_ARGUMENT` error (nothing was sent).
    pub(crate) fn invalid_argument(message: impl Into<String>) -> ClientError {
        ClientError::Server(OpError::invalid_argument(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves code() reports the server's code, TIMEOUT and UNKNOWN_TABLE, and
    // nothing for transport errors.
    #[test]
    fn code_maps_each_variant() {
        let server = ClientError::Server(OpError::new(ErrorCode::Busy, "full"));
        assert_eq!(server.code(), Some(ErrorCode::Busy));
        let timeout = ClientError::Timeout {
            operation: "get",
            timeout_ms: 5,
        };
        assert_eq!(timeout.code(), Some(ErrorCode::Timeout));
        assert_eq!(
            ClientError::UnknownTable("t".into()).code(),
            Some(ErrorCode::UnknownTable)
        );
        assert_eq!(ClientError::Io("reset".into()).code(), None);
        assert_eq!(ClientError::Protocol("bad".into()).code(), None);
        assert_eq!(ClientError::Closed.code(), None);
        let replaced = ClientError::TableReplaced {
            table: "t".into(),
            app_id: 1,
            app_id_now: 2,
        };
        assert_eq!(replaced.code(), Some(ErrorCode::UnknownTable));
        let needs_meta = ClientError::NeedsMeta {
            operation: "create_table",
        };
        assert_eq!(needs_meta.code(), None);
        assert!(needs_meta.to_string().contains("connect_meta"));
    }
}
