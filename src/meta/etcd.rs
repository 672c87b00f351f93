//! Meta high availability on etcd (docs/meta.md, "High availability"):
//! the [`EtcdMetaStore`] and the [`campaign`] every meta of a group runs.
//!
//! Keys, under the cluster's prefix `P` (`[meta] etcd_prefix`):
//!
//! | key | value |
//! |---|---|
//! | `P/cluster` | `{"cluster_id": N}`, written once by the first meta |
//! | `P/state` | meta's state without its tables (JSON) |
//! | `P/tables/<app_id>` | one table (JSON): each in its own key, so one save writes only the tables it changed and no value nears etcd's request limit |
//! | `P/leader` | the leader's address, tied to its session; its creation revision is the term's epoch |
//! | `P/members/<address>` | every meta's address, tied to its session |
//!
//! Every save is one transaction that compares the leader key's creation
//! revision with the term's epoch and `P/state`'s modification revision
//! with the one this term last wrote or read: a deposed leader's save, or
//! one after a save whose answer was lost, fails with `Fenced` and changes
//! nothing (**deposed-leader-fenced**).
//!
//! The client is the `etcd-client` crate (gRPC over tonic, the
//! conventional way to speak etcd v3; it needs `protoc` to build).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use markab_core::meta::leader::{session_until_ms, Leadership};
use markab_core::meta::state::{MetaData, StoredTable};
use tokio::runtime::Handle;

use crate::clock::monotonic_ms;
use crate::meta::store::{MetaStore, MetaStoreError};

/// Default session TTL, in seconds: a dead leader's successor serves about
/// this long after it died. etcd's own minimum is 1.5 election timeouts
/// (2 s with etcd's defaults; 1 s with `--election-timeout 500`).
pub const SESSION_TTL_S_DEFAULT: u64 = 2;
/// Largest session TTL allowed.
pub const SESSION_TTL_S_MAX: u64 = 60;
/// Default bound on one etcd request.
pub const ETCD_TIMEOUT_MS_DEFAULT: u64 = 1_000;
/// How often a meta looks at the leader key (followers campaign when it is
/// gone; the leader checks it is still its own).
pub const CAMPAIGN_POLL_MS: u64 = 100;
/// Most operations in one save's transaction: etcd's default
/// `--max-txn-ops` (128), less the state key.
pub const TXN_TABLES_MAX: usize = 127;
/// Most bytes of one save's transaction: under etcd's default
/// `--max-request-bytes` (1.5 MiB) with room for keys and framing.
pub const TXN_BYTES_MAX: usize = 1_400 * 1024;
/// Tables read per request when a term loads the state.
const LOAD_PAGE: i64 = 64;
/// Most metas in one group.
pub const METAS_MAX: usize = 16;

/// Where a group's state lives in etcd (`[meta] store = "etcd"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// etcd's client endpoints, `host:port` or `http://host:port`.
    pub endpoints: Vec<String>,
    /// The cluster's prefix, without a trailing `/` (default
    /// `/markab/<cluster_id>`).
    pub prefix: String,
    /// The session TTL, in seconds.
    pub session_ttl_s: u64,
    /// Bound on each etcd request.
    pub timeout_ms: u64,
}

impl EtcdConfig {
    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// How this store is shown (`cluster_info`'s `data_dir`, the ready line).
    pub fn describe(&self) -> String {
        format!("etcd://{}{}", self.endpoints.join(","), self.prefix)
    }
}

/// A connection to etcd shared by the store and the campaign.
#[derive(Clone)]
pub struct EtcdLink {
    client: Client,
    config: EtcdConfig,
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> MetaStoreError {
    MetaStoreError::Unavailable {
        message: format!("etcd {what}: {error}"),
    }
}

fn corrupt(key: &str, message: impl std::fmt::Display) -> MetaStoreError {
    MetaStoreError::Corrupt {
        path: key.into(),
        message: message.to_string(),
    }
}

impl EtcdLink {
    /// Connects to etcd and checks, within the request bound, that it
    /// answers and that the prefix belongs to cluster `cluster_id` (marking
    /// it so when it is empty). Refuses a prefix that holds keys Markab did
    /// not write, or another cluster's state.
    pub async fn open(config: EtcdConfig, cluster_id: u8) -> anyhow::Result<EtcdLink> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_require_leader(true);
        let endpoints = config.endpoints.clone();
        let client = tokio::time::timeout(timeout, Client::connect(&endpoints, Some(options)))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "etcd at {} did not answer within {timeout:?}",
                    endpoints.join(",")
                )
            })?
            .map_err(|error| anyhow::anyhow!("etcd at {}: {error}", endpoints.join(",")))?;
        let link = EtcdLink { client, config };
        link.check_prefix(cluster_id).await.map_err(|error| {
            match error.downcast_ref::<MetaStoreError>() {
                Some(MetaStoreError::Unavailable { message }) => anyhow::anyhow!(
                    "etcd at {} does not answer (bound {} ms per request): {message}",
                    endpoints.join(","),
                    link.config.timeout_ms
                ),
                _ => error,
            }
        })?;
        Ok(link)
    }

    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, MetaStoreError> {
        match tokio::time::timeout(Duration::from_millis(self.config.timeout_ms), call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(unavailable(what, error)),
            Err(_) => Err(unavailable(
                what,
                format!(
                    "no answer from {} within {} ms",
                    self.config.endpoints.join(","),
                    self.config.timeout_ms
                ),
            )),
        }
    }

    async fn check_prefix(&self, cluster_id: u8) -> anyhow::Result<()> {
        let prefix = &self.config.prefix;
        let marker_key = self.config.key("cluster");
        let mut kv = self.client.kv_client();
        let any = self
            .bounded(
                "range",
                kv.get(
                    format!("{prefix}/"),
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_keys_only()
                            .with_limit(256),
                    ),
                ),
            )
            .await?;
        for found in any.kvs() {
            let key = String::from_utf8_lossy(found.key());
            let rest = key.strip_prefix(&format!("{prefix}/")).unwrap_or(&key);
            let known = rest == "cluster"
                || rest == "state"
                || rest == "leader"
                || rest
                    .strip_prefix("tables/")
                    .is_some_and(|id| id.parse::<i32>().is_ok())
                || rest.strip_prefix("members/").is_some_and(|a| !a.is_empty());
            if !known {
                anyhow::bail!(
                    "etcd prefix {prefix} holds a key Markab did not write ({key}): choose another [meta] etcd_prefix"
                );
            }
        }
        let marker = format!("{{\"cluster_id\":{cluster_id}}}");
        let answer = self
            .bounded(
                "txn",
                kv.txn(
                    Txn::new()
                        .when([Compare::create_revision(
                            marker_key.clone(),
                            CompareOp::Equal,
                            0,
                        )])
                        .and_then([TxnOp::put(marker_key.clone(), marker.clone(), None)])
                        .or_else([TxnOp::get(marker_key.clone(), None)]),
                ),
            )
            .await?;
        if answer.succeeded() {
            if !any.kvs().is_empty() {
                // Keys of Markab's shapes but no marker: written by
                // something else, or a half-deleted cluster.
                tracing::warn!(%prefix, "etcd prefix had Markab keys without a cluster marker; marked it");
            }
            tracing::info!(%prefix, cluster_id, "etcd prefix marked for this cluster");
            return Ok(());
        }
        let stored = answer
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            })
            .unwrap_or_default();
        #[derive(serde::Deserialize)]
        struct Marker {
            cluster_id: u8,
        }
        let parsed: Marker = serde_json::from_slice(&stored).map_err(|error| {
            anyhow::anyhow!(
                "etcd key {marker_key} is not Markab's cluster marker ({error}): choose another [meta] etcd_prefix"
            )
        })?;
        if parsed.cluster_id != cluster_id {
            anyhow::bail!(
                "etcd prefix {prefix} belongs to cluster {} but this meta is configured with cluster_id = {cluster_id}: two clusters must not share a prefix (fix [meta] etcd_prefix or cluster_id)",
                parsed.cluster_id
            );
        }
        Ok(())
    }
}

/// Meta's state in etcd ([module docs](self)). Blocking: the actor thread
/// runs each call on the runtime with [`Handle::block_on`].
pub struct EtcdMetaStore {
    link: EtcdLink,
    runtime: Handle,
    /// The term this store writes for.
    epoch: i64,
    /// `P/state`'s modification revision as this term last read or wrote
    /// it (0: absent).
    state_revision: i64,
    /// Each table's JSON as stored, to write only what changed.
    tables: BTreeMap<i32, Vec<u8>>,
}

impl EtcdMetaStore {
    /// A store over `link`; calls block on `runtime`.
    pub fn new(link: EtcdLink, runtime: Handle) -> EtcdMetaStore {
        EtcdMetaStore {
            link,
            runtime,
            epoch: -1,
            state_revision: 0,
            tables: BTreeMap::new(),
        }
    }

    async fn load_async(&mut self) -> Result<Option<MetaData>, MetaStoreError> {
        let config = self.link.config.clone();
        let mut kv = self.link.client.kv_client();
        let state_key = config.key("state");
        let state = self
            .link
            .bounded("range", kv.get(state_key.clone(), None))
            .await?;
        let revision = state.header().map(|header| header.revision()).unwrap_or(0);
        let Some(found) = state.kvs().first() else {
            self.state_revision = 0;
            self.tables.clear();
            return Ok(None);
        };
        self.state_revision = found.mod_revision();
        let mut data: MetaData =
            serde_json::from_slice(found.value()).map_err(|error| corrupt(&state_key, error))?;
        let tables_prefix = config.key("tables/");
        let mut from = tables_prefix.clone();
        let mut stored = BTreeMap::new();
        loop {
            let page = self
                .link
                .bounded(
                    "range",
                    kv.get(
                        from.clone(),
                        Some(
                            GetOptions::new()
                                .with_range(prefix_end(&tables_prefix))
                                .with_limit(LOAD_PAGE)
                                .with_revision(revision),
                        ),
                    ),
                )
                .await?;
            for kv in page.kvs() {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let app_id: i32 = key[tables_prefix.len()..]
                    .parse()
                    .map_err(|_| corrupt(&key, "not a table key"))?;
                let table: StoredTable =
                    serde_json::from_slice(kv.value()).map_err(|error| corrupt(&key, error))?;
                data.tables.insert(app_id, table);
                stored.insert(app_id, kv.value().to_vec());
            }
            match page.kvs().last() {
                Some(last) if page.more() => {
                    let mut next = last.key().to_vec();
                    next.push(0);
                    from = String::from_utf8_lossy(&next).into_owned();
                }
                _ => break,
            }
        }
        data.validate()
            .map_err(|message| corrupt(&config.describe(), message))?;
        self.tables = stored;
        Ok(Some(data))
    }

    async fn save_async(&mut self, data: &MetaData) -> Result<(), MetaStoreError> {
        let config = self.link.config.clone();
        let state_key = config.key("state");
        let header = MetaData {
            tables: BTreeMap::new(),
            ..data.clone()
        };
        let header_bytes =
            serde_json::to_vec(&header).map_err(|error| corrupt(&state_key, error))?;
        let mut bytes = header_bytes.len();
        let mut operations = vec![TxnOp::put(state_key.clone(), header_bytes, None)];
        let mut written = Vec::new();
        for (app_id, table) in &data.tables {
            let json = serde_json::to_vec(table)
                .map_err(|error| corrupt(&config.key(&format!("tables/{app_id}")), error))?;
            if self.tables.get(app_id) != Some(&json) {
                bytes += json.len();
                written.push((*app_id, json.clone()));
                operations.push(TxnOp::put(
                    config.key(&format!("tables/{app_id}")),
                    json,
                    None,
                ));
            }
        }
        let removed: Vec<i32> = self
            .tables
            .keys()
            .filter(|app_id| !data.tables.contains_key(app_id))
            .copied()
            .collect();
        for app_id in &removed {
            operations.push(TxnOp::delete(config.key(&format!("tables/{app_id}")), None));
        }
        if operations.len() > TXN_TABLES_MAX + 1 {
            return Err(unavailable(
                "txn",
                format!(
                    "one change touches {} tables, above the {TXN_TABLES_MAX} one etcd transaction may hold (raise etcd's --max-txn-ops and Markab's bound together)",
                    operations.len() - 1
                ),
            ));
        }
        if bytes > TXN_BYTES_MAX {
            return Err(unavailable(
                "txn",
                format!(
                    "one change writes {bytes} bytes, above the {TXN_BYTES_MAX} one etcd request may hold (a table with very many partitions; etcd's --max-request-bytes)"
                ),
            ));
        }
        let leader_key = config.key("leader");
        let txn = Txn::new()
            .when([
                Compare::create_revision(leader_key.clone(), CompareOp::Equal, self.epoch),
                Compare::mod_revision(state_key.clone(), CompareOp::Equal, self.state_revision),
            ])
            .and_then(operations)
            .or_else([TxnOp::get(leader_key.clone(), None)]);
        let mut kv = self.link.client.kv_client();
        let answer = self.link.bounded("txn", kv.txn(txn)).await?;
        if !answer.succeeded() {
            let leader = answer.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| {
                    (
                        kv.create_revision(),
                        kv.value_str().unwrap_or("?").to_owned(),
                    )
                }),
                _ => None,
            });
            let message = match leader {
                Some((epoch, address)) if epoch != self.epoch => format!(
                    "this meta led term {} but {address} leads term {epoch}",
                    self.epoch
                ),
                None => format!("this meta led term {} and no meta leads now", self.epoch),
                Some(_) => format!(
                    "the stored state changed under term {} (a save whose answer was lost took effect): the term reloads",
                    self.epoch
                ),
            };
            return Err(MetaStoreError::Fenced { message });
        }
        self.state_revision = answer.header().map(|header| header.revision()).unwrap_or(0);
        for (app_id, json) in written {
            self.tables.insert(app_id, json);
        }
        for app_id in removed {
            self.tables.remove(&app_id);
        }
        Ok(())
    }
}

/// The end of the range of keys starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

impl MetaStore for EtcdMetaStore {
    fn begin_term(&mut self, epoch: i64) -> Result<Option<MetaData>, MetaStoreError> {
        self.epoch = epoch;
        let runtime = self.runtime.clone();
        runtime.block_on(self.load_async())
    }

    fn load(&self) -> Result<Option<MetaData>, MetaStoreError> {
        // A read outside a term: it keeps no baseline for saves.
        let mut reader = EtcdMetaStore::new(self.link.clone(), self.runtime.clone());
        let runtime = self.runtime.clone();
        runtime.block_on(reader.load_async())
    }

    fn save(&mut self, data: &MetaData) -> Result<(), MetaStoreError> {
        let runtime = self.runtime.clone();
        runtime.block_on(self.save_async(data))
    }
}

/// Runs this meta's session and campaign until the task is dropped,
/// reporting every change of what it knows through `report`
/// (leadership and the group's members). See docs/meta.md, "High
/// availability".
pub async fn campaign(link: EtcdLink, me: String, report: impl Fn(Leadership, Vec<String>)) {
    let config = link.config.clone();
    let leader_key = config.key("leader");
    let member_key = config.key(&format!("members/{me}"));
    let members_prefix = config.key("members/");
    let mut lease_client = link.client.lease_client();
    let mut kv = link.client.kv_client();
    let mut last_reported: Option<(Leadership, Vec<String>)> = None;
    let mut unreachable = false;
    let mut send = |leadership: Leadership, members: Vec<String>| {
        let now = (leadership.clone(), members.clone());
        if last_reported.as_ref() != Some(&now) {
            if !matches!(
                (&last_reported, &leadership),
                (Some((Leadership::Leader { epoch: a, .. }, _)), Leadership::Leader { epoch: b, .. }) if a == b
            ) {
                tracing::info!(leadership = ?leadership, members = ?members, "meta leadership");
            }
            last_reported = Some(now);
            report(leadership, members);
        }
    };
    loop {
        // A session: a lease kept alive, the member key tied to it.
        let sent_ms = monotonic_ms();
        let grant = link
            .bounded(
                "lease grant",
                lease_client.grant(config.session_ttl_s as i64, None),
            )
            .await;
        let (lease, granted_ms) = match grant {
            Ok(grant) if grant.ttl() > 0 => (grant.id(), grant.ttl() as u64 * 1_000),
            Ok(grant) => {
                tracing::warn!(error = grant.error(), "etcd refused a session");
                tokio::time::sleep(Duration::from_millis(CAMPAIGN_POLL_MS)).await;
                continue;
            }
            Err(error) => {
                if !unreachable {
                    tracing::warn!(%error, "cannot open an etcd session; trying again every {CAMPAIGN_POLL_MS} ms");
                }
                unreachable = true;
                send(Leadership::Follower { leader: None }, Vec::new());
                tokio::time::sleep(Duration::from_millis(CAMPAIGN_POLL_MS)).await;
                continue;
            }
        };
        if unreachable {
            tracing::warn!("etcd answers again: this meta has a session");
            unreachable = false;
        }
        let mut until_ms = session_until_ms(sent_ms, granted_ms);
        let mut renew_at_ms = sent_ms + granted_ms / 3;
        let mut keeper = None;
        let mut epoch: Option<i64> = None;
        let _ = link
            .bounded(
                "put",
                kv.put(
                    member_key.clone(),
                    me.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
            )
            .await;
        let ended = loop {
            let now_ms = monotonic_ms();
            if now_ms >= until_ms {
                break "the session ran out before etcd renewed it";
            }
            if now_ms >= renew_at_ms {
                if keeper.is_none() {
                    keeper = link
                        .bounded("lease keepalive", lease_client.keep_alive(lease))
                        .await
                        .ok();
                }
                if let Some((sender, stream)) = keeper.as_mut() {
                    let sent_ms = monotonic_ms();
                    let answer = async {
                        sender.keep_alive().await?;
                        stream.message().await
                    };
                    match link.bounded("lease keepalive", answer).await {
                        Ok(Some(answer)) if answer.ttl() > 0 => {
                            let ttl_ms = answer.ttl() as u64 * 1_000;
                            until_ms = session_until_ms(sent_ms, ttl_ms);
                            renew_at_ms = sent_ms + ttl_ms / 3;
                        }
                        Ok(Some(_)) => break "etcd says the session expired",
                        Ok(None) | Err(_) => {
                            keeper = None;
                            renew_at_ms = monotonic_ms() + CAMPAIGN_POLL_MS;
                        }
                    }
                }
            }
            // The leader key: win it when free, check it is still ours.
            let txn = Txn::new()
                .when([Compare::create_revision(
                    leader_key.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then([TxnOp::put(
                    leader_key.clone(),
                    me.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(leader_key.clone(), None)]);
            let leader = match link.bounded("txn", kv.txn(txn)).await {
                Ok(answer) if answer.succeeded() => {
                    let won = answer.header().map(|header| header.revision()).unwrap_or(0);
                    tracing::info!(epoch = won, "this meta won the leader key");
                    epoch = Some(won);
                    Some((won, me.clone(), lease))
                }
                Ok(answer) => answer.op_responses().into_iter().find_map(|op| match op {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| {
                        (
                            kv.create_revision(),
                            kv.value_str().unwrap_or_default().to_owned(),
                            kv.lease(),
                        )
                    }),
                    _ => None,
                }),
                Err(error) => {
                    tracing::debug!(%error, "etcd did not answer the campaign");
                    None
                }
            };
            let members = match link
                .bounded(
                    "range",
                    kv.get(
                        members_prefix.clone(),
                        Some(GetOptions::new().with_prefix().with_limit(METAS_MAX as i64)),
                    ),
                )
                .await
            {
                Ok(answer) => answer
                    .kvs()
                    .iter()
                    .map(|kv| kv.value_str().unwrap_or_default().to_owned())
                    .collect(),
                Err(_) => Vec::new(),
            };
            let leadership = match (&leader, epoch) {
                (Some((key_epoch, _, key_lease)), Some(mine))
                    if *key_epoch == mine && *key_lease == lease =>
                {
                    Leadership::Leader {
                        epoch: mine,
                        until_ms,
                    }
                }
                (Some(_), Some(mine)) => {
                    tracing::warn!(epoch = mine, "this meta lost the leader key");
                    epoch = None;
                    Leadership::Follower {
                        leader: leader.as_ref().map(|(_, address, _)| address.clone()),
                    }
                }
                // etcd did not answer: a leader stays one until its session ends.
                (None, Some(mine)) => Leadership::Leader {
                    epoch: mine,
                    until_ms,
                },
                (leader, None) => Leadership::Follower {
                    leader: leader.as_ref().map(|(_, address, _)| address.clone()),
                },
            };
            send(leadership, members);
            tokio::time::sleep(Duration::from_millis(CAMPAIGN_POLL_MS)).await;
        };
        tracing::warn!(why = ended, "meta's etcd session ended");
        send(Leadership::Follower { leader: None }, Vec::new());
        let _ = link
            .bounded("lease revoke", lease_client.revoke(lease))
            .await;
    }
}

/// Gives up this meta's session (and so its leadership, at once) when it
/// stops: best effort, bounded.
pub async fn resign(link: &EtcdLink, me: &str) {
    let mut kv = link.client.kv_client();
    let member_key = link.config.key(&format!("members/{me}"));
    let Ok(member) = link.bounded("range", kv.get(member_key, None)).await else {
        return;
    };
    if let Some(lease) = member.kvs().first().map(|kv| kv.lease()) {
        let mut lease_client = link.client.lease_client();
        let _ = link
            .bounded("lease revoke", lease_client.revoke(lease))
            .await;
    }
}
