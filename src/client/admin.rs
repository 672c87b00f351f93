//! The admin API: DDL and cluster queries, answered by meta.
//!
//! Every call goes to meta within `ClientOptions::meta_timeout` and fails
//! with [`ClientError::NeedsMeta`] on a client connected to a standalone
//! node. Meta's refusals (`INVALID_ARGUMENT`, `TABLE_EXISTS`,
//! `UNKNOWN_TABLE`, `NOT_ENOUGH_NODES`, ...) come back as
//! [`ClientError::Server`] with meta's message.

use markab_wire::{
    BackupRequest, BalancerRequest, CreateTableRequest, NodeInfo, Request, ResponseBody,
    TableDescription, TableInfo,
};
use tokio::time::Instant;

use super::{lock, unexpected, Client, ClientError};

impl Client {
    /// Drops this client's cached route of `name` (after DDL on it), so the
    /// next `open_table` asks meta afresh. Handles already open keep
    /// working until their refresh finds the change.
    fn forget_cached_route(&self, name: &str) {
        lock(&self.inner.routes).remove(name);
    }

    async fn meta_request(&self, request: Request) -> Result<ResponseBody, ClientError> {
        let deadline = Instant::now() + self.inner.options.meta_timeout;
        self.inner.meta_call(&request, deadline).await
    }

    /// Creates a table (partition count a power of two, replica count
    /// within meta's bounds) and returns it as meta recorded it. With
    /// `success_if_exist`, an existing table of that name is returned
    /// instead of `TABLE_EXISTS`.
    ///
    /// ```no_run
    /// # async fn example(client: markab::client::Client) -> Result<(), markab::client::ClientError> {
    /// use markab::wire::CreateTableRequest;
    ///
    /// let info = client
    ///     .create_table(CreateTableRequest {
    ///         table: "orders".into(),
    ///         partition_count: 8,
    ///         replica_count: 3,
    ///         envs: vec![],
    ///         success_if_exist: false,
    ///     })
    ///     .await?;
    /// println!("created app id {}", info.app_id);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_table(
        &self,
        request: CreateTableRequest,
    ) -> Result<TableInfo, ClientError> {
        match self.meta_request(Request::CreateTable(request)).await? {
            ResponseBody::Table(info) => {
                self.forget_cached_route(&info.name);
                Ok(info)
            }
            other => Err(unexpected("create_table", &other)),
        }
    }

    /// Drops a table: it disappears from listings and routes at once; its
    /// data is held for `reserve_seconds` (meta's `hold_seconds` when
    /// `None`) and it can be recalled until then.
    pub async fn drop_table(
        &self,
        name: &str,
        reserve_seconds: Option<u32>,
    ) -> Result<(), ClientError> {
        let request = Request::DropTable {
            table: name.to_string(),
            reserve_seconds,
        };
        match self.meta_request(request).await? {
            ResponseBody::Done => {
                self.forget_cached_route(name);
                Ok(())
            }
            other => Err(unexpected("drop_table", &other)),
        }
    }

    /// Brings back a dropped table whose data is still held, under
    /// `new_name` (its old name when empty).
    pub async fn recall_table(
        &self,
        app_id: i32,
        new_name: &str,
    ) -> Result<TableInfo, ClientError> {
        let request = Request::RecallTable {
            app_id,
            new_name: new_name.to_string(),
        };
        match self.meta_request(request).await? {
            ResponseBody::Table(info) => {
                self.forget_cached_route(&info.name);
                Ok(info)
            }
            other => Err(unexpected("recall_table", &other)),
        }
    }

    /// The tables; dropped ones whose data is still held too when
    /// `include_dropped`.
    pub async fn list_tables(&self, include_dropped: bool) -> Result<Vec<TableInfo>, ClientError> {
        match self
            .meta_request(Request::ListTables { include_dropped })
            .await?
        {
            ResponseBody::Tables(tables) => Ok(tables),
            other => Err(unexpected("list_tables", &other)),
        }
    }

    /// A table's info and every partition's configuration `(ballot,
    /// primary, secondaries)`.
    pub async fn describe_table(&self, name: &str) -> Result<TableDescription, ClientError> {
        let request = Request::DescribeTable {
            table: name.to_string(),
        };
        match self.meta_request(request).await? {
            ResponseBody::Description(description) => Ok(description),
            other => Err(unexpected("describe_table", &other)),
        }
    }

    /// The nodes meta knows, alive or not.
    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>, ClientError> {
        match self.meta_request(Request::ListNodes).await? {
            ResponseBody::Nodes(nodes) => Ok(nodes),
            other => Err(unexpected("list_nodes", &other)),
        }
    }

    /// Meta's summary of the cluster, as ordered `(key, value)` pairs.
    pub async fn cluster_info(&self) -> Result<Vec<(String, String)>, ClientError> {
        match self.meta_request(Request::ClusterInfo).await? {
            ResponseBody::Pairs(pairs) => Ok(pairs),
            other => Err(unexpected("cluster_info", &other)),
        }
    }

    /// A request to meta's balancer (docs/balance.md), answered with pairs.
    pub async fn balancer(
        &self,
        request: BalancerRequest,
    ) -> Result<Vec<(String, String)>, ClientError> {
        match self.meta_request(Request::Balancer(request)).await? {
            ResponseBody::Pairs(pairs) => Ok(pairs),
            other => Err(unexpected("balancer", &other)),
        }
    }

    /// A request to meta about cold backups (docs/backup.md), answered
    /// with pairs.
    pub async fn backup(
        &self,
        request: BackupRequest,
    ) -> Result<Vec<(String, String)>, ClientError> {
        match self.meta_request(Request::Backup(request)).await? {
            ResponseBody::Pairs(pairs) => Ok(pairs),
            other => Err(unexpected("backup", &other)),
        }
    }

    /// A request to meta about partition splits (docs/split.md), answered
    /// with pairs.
    pub async fn partition_split(
        &self,
        request: markab_wire::SplitRequest,
    ) -> Result<Vec<(String, String)>, ClientError> {
        match self.meta_request(Request::PartitionSplit(request)).await? {
            ResponseBody::Pairs(pairs) => Ok(pairs),
            other => Err(unexpected("partition_split", &other)),
        }
    }

    /// A request to meta about duplications to other clusters
    /// (docs/duplication.md), answered with pairs.
    pub async fn dup(
        &self,
        request: markab_wire::DupRequest,
    ) -> Result<Vec<(String, String)>, ClientError> {
        match self.meta_request(Request::Dup(request)).await? {
            ResponseBody::Pairs(pairs) => Ok(pairs),
            other => Err(unexpected("dup", &other)),
        }
    }

    /// Sets (inserts or replaces) environment entries of a table.
    pub async fn set_app_envs(
        &self,
        table: &str,
        envs: Vec<(String, String)>,
    ) -> Result<(), ClientError> {
        if envs.is_empty() {
            return Err(ClientError::invalid_argument(
                "set_app_envs needs at least one entry",
            ));
        }
        let request = Request::SetAppEnvs {
            table: table.to_string(),
            envs,
        };
        match self.meta_request(request).await? {
            ResponseBody::Done => Ok(()),
            other => Err(unexpected("set_app_envs", &other)),
        }
    }

    /// A table's environment entries.
    pub async fn get_app_envs(&self, table: &str) -> Result<Vec<(String, String)>, ClientError> {
        let request = Request::GetAppEnvs {
            table: table.to_string(),
        };
        match self.meta_request(request).await? {
            ResponseBody::Pairs(pairs) => Ok(pairs),
            other => Err(unexpected("get_app_envs", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientOptions;

    // Proves admin calls on a standalone-mode client fail locally with
    // NeedsMeta, naming the operation, without sending anything.
    #[tokio::test]
    async fn standalone_client_refuses_admin_calls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let client = Client::connect(&address, ClientOptions::default())
            .await
            .unwrap();
        let error = client.list_nodes().await.unwrap_err();
        assert!(
            matches!(
                error,
                ClientError::NeedsMeta {
                    operation: "list_nodes"
                }
            ),
            "{error:?}"
        );
        let error = client.drop_table("t", None).await.unwrap_err();
        assert!(
            matches!(
                error,
                ClientError::NeedsMeta {
                    operation: "drop_table"
                }
            ),
            "{error:?}"
        );
    }
}
