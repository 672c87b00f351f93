//! Shell command parsing: a command line → a [`Command`], without a server.

use markab_wire::{
    BackupPolicyChange, BackupPolicySpec, BackupRequest, BalancerRequest, CheckAndSetRequest,
    CheckType, CreateTableRequest, DupRequest, FilterType, Gpid, MultiGetRequest, ProposedMove,
    SortKeyValue, SplitRequest,
};

use super::escape::{tokenize, EscapeError};
use crate::client::ScanOptions;

/// Most records a scan command prints unless `-n` says otherwise.
pub const SCAN_PRINT_COUNT_DEFAULT: u64 = 1_000_000;
/// Most sort keys (or sort key/value pairs) one command line may name.
pub const COMMAND_KEYS_MAX: usize = 10_000;
/// Partition count of `create` without `-p`.
pub const CREATE_PARTITION_COUNT_DEFAULT: i32 = 8;
/// Replica count of `create` without `-r`.
pub const CREATE_REPLICA_COUNT_DEFAULT: i32 = 3;

/// One command: its name, syntax and purpose (for `help` and completion).
pub struct CommandSpec {
    pub name: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
}

/// Every shell command, in the order `help` lists them.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "help",
        usage: "help",
        summary: "list the commands",
    },
    CommandSpec {
        name: "exit",
        usage: "exit | quit",
        summary: "leave the shell",
    },
    CommandSpec {
        name: "quit",
        usage: "quit",
        summary: "leave the shell",
    },
    CommandSpec {
        name: "set",
        usage: "set hk sk value [ttl_seconds]",
        summary: "write a record",
    },
    CommandSpec {
        name: "get",
        usage: "get hk sk",
        summary: "read a record",
    },
    CommandSpec {
        name: "del",
        usage: "del hk sk",
        summary: "delete a record",
    },
    CommandSpec {
        name: "exist",
        usage: "exist hk sk",
        summary: "whether a record exists",
    },
    CommandSpec {
        name: "ttl",
        usage: "ttl hk sk",
        summary: "seconds a record has left",
    },
    CommandSpec {
        name: "multi_set",
        usage: "multi_set hk sk1 v1 [sk2 v2 ...]",
        summary: "write records of one hash key atomically",
    },
    CommandSpec {
        name: "multi_get",
        usage: "multi_get hk [sk ...]",
        summary: "read sort keys of a hash key (none: all of them)",
    },
    CommandSpec {
        name: "multi_get_range",
        usage: "multi_get_range hk start_sk stop_sk [-a true|false] [-b true|false] \
                [-s anywhere|prefix|postfix] [-y pattern] [-n max_count] [-i] [-r]",
        summary: "read a sort-key range (-a/-b inclusive ends, -i no value, -r reverse)",
    },
    CommandSpec {
        name: "multi_del",
        usage: "multi_del hk sk [sk ...]",
        summary: "delete sort keys of one hash key atomically",
    },
    CommandSpec {
        name: "sortkey_count",
        usage: "sortkey_count hk",
        summary: "count a hash key's sort keys",
    },
    CommandSpec {
        name: "incr",
        usage: "incr hk sk [increment] [-t ttl_seconds]",
        summary: "add to an integer record (ttl 0 keeps, <0 clears)",
    },
    CommandSpec {
        name: "check_and_set",
        usage: "check_and_set hk -c check_sk -t check_type -o operand -s set_sk -v set_value \
                [-l ttl_seconds] [-r]",
        summary: "set a record if a check passes (-r returns the checked value)",
    },
    CommandSpec {
        name: "hash_scan",
        usage: "hash_scan hk start_sk stop_sk [-a true|false] [-b true|false] \
                [-s anywhere|prefix|postfix] [-y pattern] [-n max_count] [-i]",
        summary: "scan a hash key's sort keys in order",
    },
    CommandSpec {
        name: "full_scan",
        usage: "full_scan [-h anywhere|prefix|postfix] [-x hash_pattern] \
                [-s anywhere|prefix|postfix] [-y sort_pattern] [-n max_count] [-i]",
        summary: "scan the whole table",
    },
    CommandSpec {
        name: "count_data",
        usage: "count_data [-h anywhere|prefix|postfix] [-x hash_pattern] \
                [-s anywhere|prefix|postfix] [-y sort_pattern]",
        summary: "count the table's records",
    },
    CommandSpec {
        name: "use",
        usage: "use NAME",
        summary: "switch the current table for data commands",
    },
    CommandSpec {
        name: "cluster_info",
        usage: "cluster_info",
        summary: "meta's summary of the cluster (meta mode)",
    },
    CommandSpec {
        name: "nodes",
        usage: "nodes",
        summary: "the nodes meta knows: address, liveness, replicas (meta mode)",
    },
    CommandSpec {
        name: "get_meta_level",
        usage: "get_meta_level",
        summary: "meta's function level: freezed, steady or lively (meta mode)",
    },
    CommandSpec {
        name: "set_meta_level",
        usage: "set_meta_level freezed|steady|lively",
        summary: "set meta's function level; lively balances by itself (meta mode)",
    },
    CommandSpec {
        name: "balance",
        usage: "balance [-n]",
        summary: "one balancing round now, printing its moves; -n only prints them (meta mode)",
    },
    CommandSpec {
        name: "propose",
        usage: "propose move_primary APP.PART TO | copy_replica APP.PART FROM TO | remove_replica APP.PART NODE",
        summary: "one move by hand (meta mode)",
    },
    CommandSpec {
        name: "moves",
        usage: "moves",
        summary: "the balancer's moves in progress (meta mode)",
    },
    CommandSpec {
        name: "remove_node",
        usage: "remove_node NODE [-c]",
        summary: "move every replica off NODE and place nothing new on it; -c takes it back (meta mode)",
    },
    CommandSpec {
        name: "partition_split",
        usage: "partition_split start TABLE NEW_COUNT | query TABLE | pause TABLE | restart TABLE | cancel TABLE",
        summary: "double TABLE's partitions while it serves (NEW_COUNT = twice the count), follow, pause, resume or give up the split (meta mode)",
    },
    CommandSpec {
        name: "dup",
        usage: "dup add TABLE REMOTE_META[,REMOTE_META..] [--remote-table NAME] | list [TABLE] | pause ID | start ID | remove ID",
        summary: "duplicate TABLE to the same table (or NAME) of another cluster, list the duplications with their lag, pause, resume or end one (meta mode)",
    },
    CommandSpec {
        name: "backup",
        usage: "backup TABLE --to URL",
        summary: "back TABLE up now to file:///DIR or s3://BUCKET/PREFIX?endpoint=..&region=.. (meta mode)",
    },
    CommandSpec {
        name: "ls_backups",
        usage: "ls_backups [TABLE]",
        summary: "the backups meta knows: running, complete, failed (meta mode)",
    },
    CommandSpec {
        name: "query_backup",
        usage: "query_backup BACKUP_ID",
        summary: "one backup and the progress of each partition (meta mode)",
    },
    CommandSpec {
        name: "add_backup_policy",
        usage: "add_backup_policy -p NAME -t TABLE[,TABLE..] -b URL -i INTERVAL_SECONDS -s HH:MM -c KEEP",
        summary: "back TABLEs up to URL every INTERVAL from HH:MM (UTC), keeping KEEP complete backups each (meta mode)",
    },
    CommandSpec {
        name: "ls_backup_policy",
        usage: "ls_backup_policy",
        summary: "every backup policy (meta mode)",
    },
    CommandSpec {
        name: "query_backup_policy",
        usage: "query_backup_policy -p NAME",
        summary: "one backup policy and its backups (meta mode)",
    },
    CommandSpec {
        name: "modify_backup_policy",
        usage: "modify_backup_policy -p NAME [-a TABLES] [-r TABLES] [-i INTERVAL_SECONDS] [-s HH:MM] [-c KEEP]",
        summary: "add or remove tables, change the interval, start time or count (meta mode)",
    },
    CommandSpec {
        name: "enable_backup_policy",
        usage: "enable_backup_policy -p NAME",
        summary: "resume a policy's schedule (meta mode)",
    },
    CommandSpec {
        name: "disable_backup_policy",
        usage: "disable_backup_policy -p NAME",
        summary: "stop a policy's schedule; its backups stay (meta mode)",
    },
    CommandSpec {
        name: "restore",
        usage: "restore --from URL --backup-id ID --table OLD [--as NEW]",
        summary: "create table NEW (default OLD) from complete backup ID of table OLD (meta mode)",
    },
    CommandSpec {
        name: "query_restore_status",
        usage: "query_restore_status TABLE",
        summary: "a restore's progress, per partition (meta mode)",
    },
    CommandSpec {
        name: "cancel_restore",
        usage: "cancel_restore TABLE",
        summary: "stop restoring TABLE and remove it (meta mode)",
    },
    CommandSpec {
        name: "ls",
        usage: "ls [-a]",
        summary: "list tables (-a: dropped ones still held too) (meta mode)",
    },
    CommandSpec {
        name: "create",
        usage: "create NAME [-p partitions (default 8)] [-r replicas (default 3)] [-e k=v,k=v]",
        summary: "create a table (partitions: a power of two) (meta mode)",
    },
    CommandSpec {
        name: "drop",
        usage: "drop NAME [--reserve-seconds N]",
        summary: "drop a table; its data is held N seconds (meta's default) for recall",
    },
    CommandSpec {
        name: "recall",
        usage: "recall APP_ID [NEW_NAME]",
        summary: "bring back a dropped table while its data is held (meta mode)",
    },
    CommandSpec {
        name: "app",
        usage: "app NAME",
        summary: "a table's info and its partitions' configurations (meta mode)",
    },
    CommandSpec {
        name: "set_app_envs",
        usage: "set_app_envs KEY VALUE [KEY VALUE ...]",
        summary: "set environment entries of the current table (meta mode)",
    },
    CommandSpec {
        name: "get_app_envs",
        usage: "get_app_envs",
        summary: "the current table's environment entries (meta mode)",
    },
];

/// The check type names `check_and_set -t` accepts, in wire order.
pub const CHECK_TYPE_NAMES: [&str; 18] = [
    "no_check",
    "not_exist",
    "not_exist_or_empty",
    "exist",
    "not_empty",
    "match_anywhere",
    "match_prefix",
    "match_postfix",
    "bytes_less",
    "bytes_less_or_equal",
    "bytes_equal",
    "bytes_greater_or_equal",
    "bytes_greater",
    "int_less",
    "int_less_or_equal",
    "int_equal",
    "int_greater_or_equal",
    "int_greater",
];

/// A parsed shell command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Exit,
    Set {
        hash_key: Vec<u8>,
        sort_key: Vec<u8>,
        value: Vec<u8>,
        ttl_seconds: u32,
    },
    Get {
        hash_key: Vec<u8>,
        sort_key: Vec<u8>,
    },
    Del {
        hash_key: Vec<u8>,
        sort_key: Vec<u8>,
    },
    Exist {
        hash_key: Vec<u8>,
        sort_key: Vec<u8>,
    },
    Ttl {
        hash_key: Vec<u8>,
        sort_key: Vec<u8>,
    },
    MultiSet {
        hash_key: Vec<u8>,
        kvs: Vec<SortKeyValue>,
    },
    /// multi_get and multi_get_range.
    MultiGet(MultiGetRequest),
    MultiDel {
        hash_key: Vec<u8>,
        sort_keys: Vec<Vec<u8>>,
    },
    SortKeyCount {
        hash_key: Vec<u8>,
    },
    Incr {
        hash_key: Vec<u8>,
        sort_key: Vec<u8>,
        increment: i64,
        ttl_seconds: i32,
    },
    CheckAndSet(CheckAndSetRequest),
    HashScan {
        hash_key: Vec<u8>,
        start_sort_key: Vec<u8>,
        stop_sort_key: Vec<u8>,
        options: ScanOptions,
        max_count: u64,
    },
    FullScan {
        options: ScanOptions,
        max_count: u64,
    },
    CountData {
        options: ScanOptions,
    },
    /// Switch the current table.
    Use {
        table: String,
    },
    ClusterInfo,
    Nodes,
    /// A request to meta's balancer.
    Balancer(BalancerRequest),
    Backup(BackupRequest),
    Split(SplitRequest),
    Dup(DupRequest),
    ListTables {
        include_dropped: bool,
    },
    CreateTable(CreateTableRequest),
    DropTable {
        table: String,
        reserve_seconds: Option<u32>,
    },
    RecallTable {
        app_id: i32,
        /// Empty: the table's old name.
        new_name: String,
    },
    DescribeTable {
        table: String,
    },
    /// Environment entries for the current table.
    SetAppEnvs {
        envs: Vec<(String, String)>,
    },
    GetAppEnvs,
}

impl Command {
    /// Whether the command works on the current table's data (and so needs
    /// one, chosen with `--table` or `use`).
    pub fn needs_table(&self) -> bool {
        !matches!(
            self,
            Command::Help
                | Command::Exit
                | Command::Use { .. }
                | Command::ClusterInfo
                | Command::Nodes
                | Command::Balancer(_)
                | Command::Backup(_)
                | Command::Split(_)
                | Command::Dup(_)
                | Command::ListTables { .. }
                | Command::CreateTable(_)
                | Command::DropTable { .. }
                | Command::RecallTable { .. }
                | Command::DescribeTable { .. }
                | Command::SetAppEnvs { .. }
                | Command::GetAppEnvs
        )
    }
}

/// Why a command line is not a valid command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Escape(#[from] EscapeError),
    #[error("unknown command {0:?}; type help for the list")]
    UnknownCommand(String),
    #[error("{reason}\nusage: {usage}")]
    Usage { reason: String, usage: &'static str },
}

/// Parses one command line; `Ok(None)` for a blank line.
///
/// ```
/// use markab::shell::command::{parse, Command};
/// let command = parse(r#"get user1 "first name""#).unwrap().unwrap();
/// assert_eq!(
///     command,
///     Command::Get { hash_key: b"user1".to_vec(), sort_key: b"first name".to_vec() }
/// );
/// ```
pub fn parse(line: &str) -> Result<Option<Command>, ParseError> {
    let tokens = tokenize(line)?;
    let Some((name, arguments)) = tokens.split_first() else {
        return Ok(None);
    };
    let name = String::from_utf8_lossy(name).into_owned();
    let spec = COMMANDS
        .iter()
        .find(|spec| spec.name == name)
        .ok_or_else(|| ParseError::UnknownCommand(name.clone()))?;
    let mut parser = Parser {
        spec,
        arguments,
        next: 0,
    };
    let spec_name = spec.name;
    let command = match spec.name {
        "help" => Command::Help,
        "exit" | "quit" => Command::Exit,
        "set" => {
            let (hash_key, sort_key, value) = (
                parser.positional()?,
                parser.positional()?,
                parser.positional()?,
            );
            let ttl_seconds = match parser.optional_positional() {
                Some(ttl) => parser.number::<u32>(&ttl, "ttl_seconds")?,
                None => 0,
            };
            Command::Set {
                hash_key,
                sort_key,
                value,
                ttl_seconds,
            }
        }
        "get" | "del" | "exist" | "ttl" => {
            let (hash_key, sort_key) = (parser.positional()?, parser.positional()?);
            match spec.name {
                "get" => Command::Get { hash_key, sort_key },
                "del" => Command::Del { hash_key, sort_key },
                "exist" => Command::Exist { hash_key, sort_key },
                _ => Command::Ttl { hash_key, sort_key },
            }
        }
        "multi_set" => {
            let hash_key = parser.positional()?;
            let rest = parser.rest();
            if rest.is_empty() || !rest.len().is_multiple_of(2) {
                return Err(parser.usage("multi_set needs sort key / value pairs"));
            }
            let kvs = rest
                .chunks(2)
                .map(|pair| SortKeyValue {
                    sort_key: pair[0].clone(),
                    value: pair[1].clone(),
                })
                .collect();
            Command::MultiSet { hash_key, kvs }
        }
        "multi_get" => {
            let hash_key = parser.positional()?;
            let sort_keys = parser.rest();
            let mut request = MultiGetRequest::range(hash_key);
            // The whole hash key: up to the server's bounds.
            request.max_kv_count = -1;
            request.max_kv_size = -1;
            request.sort_keys = sort_keys;
            Command::MultiGet(request)
        }
        "multi_del" => {
            let hash_key = parser.positional()?;
            let sort_keys = parser.rest();
            if sort_keys.is_empty() {
                return Err(parser.usage("multi_del needs at least one sort key"));
            }
            Command::MultiDel {
                hash_key,
                sort_keys,
            }
        }
        "sortkey_count" => Command::SortKeyCount {
            hash_key: parser.positional()?,
        },
        "multi_get_range" => {
            let mut request = MultiGetRequest::range(parser.positional()?);
            request.start_sort_key = parser.positional()?;
            request.stop_sort_key = parser.positional()?;
            request.max_kv_count = -1;
            request.max_kv_size = -1;
            let mut filter_type = FilterType::NoFilter;
            while let Some(option) = parser.option()? {
                match option {
                    'a' => request.start_inclusive = parser.boolean_value(option)?,
                    'b' => request.stop_inclusive = parser.boolean_value(option)?,
                    's' => filter_type = parser.filter_value(option)?,
                    'y' => request.sort_key_filter.pattern = parser.value(option)?,
                    'n' => request.max_kv_count = parser.number_value::<i32>(option)?,
                    'i' => request.no_value = true,
                    'r' => request.reverse = true,
                    other => return Err(parser.unknown_option(other)),
                }
            }
            request.sort_key_filter.kind = filter_type;
            Command::MultiGet(request)
        }
        "incr" => {
            let (hash_key, sort_key) = (parser.positional()?, parser.positional()?);
            let increment = match parser.optional_positional() {
                Some(increment) => parser.number::<i64>(&increment, "increment")?,
                None => 1,
            };
            let mut ttl_seconds = 0;
            while let Some(option) = parser.option()? {
                match option {
                    't' => ttl_seconds = parser.number_value::<i32>(option)?,
                    other => return Err(parser.unknown_option(other)),
                }
            }
            Command::Incr {
                hash_key,
                sort_key,
                increment,
                ttl_seconds,
            }
        }
        "check_and_set" => {
            let hash_key = parser.positional()?;
            let mut check_sort_key = None;
            let mut check_type = None;
            let mut check_operand = Vec::new();
            let mut set_sort_key = None;
            let mut set_value = None;
            let mut set_ttl_seconds = 0;
            let mut return_check_value = false;
            while let Some(option) = parser.option()? {
                match option {
                    'c' => check_sort_key = Some(parser.value(option)?),
                    't' => check_type = Some(parser.check_type_value(option)?),
                    'o' => check_operand = parser.value(option)?,
                    's' => set_sort_key = Some(parser.value(option)?),
                    'v' => set_value = Some(parser.value(option)?),
                    'l' => set_ttl_seconds = parser.number_value::<u32>(option)?,
                    'r' => return_check_value = true,
                    other => return Err(parser.unknown_option(other)),
                }
            }
            let missing = |option: &str| parser.usage(format!("check_and_set needs -{option}"));
            Command::CheckAndSet(CheckAndSetRequest {
                hash_key,
                check_sort_key: check_sort_key.ok_or_else(|| missing("c"))?,
                check_type: check_type.ok_or_else(|| missing("t"))?,
                check_operand,
                set_sort_key: set_sort_key.ok_or_else(|| missing("s"))?,
                set_value: set_value.ok_or_else(|| missing("v"))?,
                set_ttl_seconds,
                return_check_value,
            })
        }
        "hash_scan" => {
            let hash_key = parser.positional()?;
            let start_sort_key = parser.positional()?;
            let stop_sort_key = parser.positional()?;
            let mut options = ScanOptions::default();
            let mut max_count = SCAN_PRINT_COUNT_DEFAULT;
            while let Some(option) = parser.option()? {
                match option {
                    'a' => options.start_inclusive = parser.boolean_value(option)?,
                    'b' => options.stop_inclusive = parser.boolean_value(option)?,
                    's' => options.sort_key_filter.kind = parser.filter_value(option)?,
                    'y' => options.sort_key_filter.pattern = parser.value(option)?,
                    'n' => max_count = parser.number_value::<u64>(option)?,
                    'i' => options.no_value = true,
                    other => return Err(parser.unknown_option(other)),
                }
            }
            Command::HashScan {
                hash_key,
                start_sort_key,
                stop_sort_key,
                options,
                max_count,
            }
        }
        "full_scan" | "count_data" => {
            let mut options = ScanOptions::default();
            let mut max_count = SCAN_PRINT_COUNT_DEFAULT;
            let full_scan = spec.name == "full_scan";
            while let Some(option) = parser.option()? {
                match option {
                    'h' => options.hash_key_filter.kind = parser.filter_value(option)?,
                    'x' => options.hash_key_filter.pattern = parser.value(option)?,
                    's' => options.sort_key_filter.kind = parser.filter_value(option)?,
                    'y' => options.sort_key_filter.pattern = parser.value(option)?,
                    'n' if full_scan => max_count = parser.number_value::<u64>(option)?,
                    'i' if full_scan => options.no_value = true,
                    other => return Err(parser.unknown_option(other)),
                }
            }
            if full_scan {
                Command::FullScan { options, max_count }
            } else {
                Command::CountData { options }
            }
        }
        "use" => Command::Use {
            table: parser.text_positional("table name")?,
        },
        "cluster_info" => Command::ClusterInfo,
        "nodes" => Command::Nodes,
        "get_meta_level" => Command::Balancer(BalancerRequest::GetLevel),
        "set_meta_level" => Command::Balancer(BalancerRequest::SetLevel {
            level: parser.text_positional("level")?,
        }),
        "balance" => {
            let mut apply = true;
            while let Some(option) = parser.option()? {
                match option {
                    'n' => apply = false,
                    other => return Err(parser.unknown_option(other)),
                }
            }
            Command::Balancer(BalancerRequest::Balance { apply })
        }
        "propose" => {
            let kind = parser.text_positional("move kind")?;
            let gpid_text = parser.text_positional("partition (APP.PART)")?;
            let gpid = parse_gpid(&gpid_text).ok_or_else(|| {
                parser.usage(format!(
                    "partition {gpid_text:?} is not APP.PART (e.g. 1.7)"
                ))
            })?;
            let proposed = match kind.as_str() {
                "move_primary" => ProposedMove::MovePrimary {
                    gpid,
                    to: parser.text_positional("target node")?,
                },
                "copy_replica" => ProposedMove::CopyReplica {
                    gpid,
                    from: parser.text_positional("source node")?,
                    to: parser.text_positional("target node")?,
                },
                "remove_replica" => ProposedMove::RemoveReplica {
                    gpid,
                    node: parser.text_positional("node")?,
                },
                other => {
                    return Err(parser.usage(format!(
                        "unknown move {other:?}: move_primary, copy_replica or remove_replica"
                    )))
                }
            };
            Command::Balancer(BalancerRequest::Propose(proposed))
        }
        "moves" => Command::Balancer(BalancerRequest::ListMoves),
        "partition_split" => {
            let action = parser.text_positional("action")?;
            let table = parser.text_positional("table name")?;
            Command::Split(match action.as_str() {
                "start" => {
                    let token = parser.positional()?;
                    SplitRequest::Start {
                        table,
                        new_count: parser.number::<i32>(&token, "NEW_COUNT")?,
                    }
                }
                "query" => SplitRequest::Query { table },
                "pause" => SplitRequest::Pause { table },
                "restart" => SplitRequest::Restart { table },
                "cancel" => SplitRequest::Cancel { table },
                other => {
                    return Err(parser.usage(format!(
                        "unknown action {other:?}: start, query, pause, restart or cancel"
                    )))
                }
            })
        }
        "dup" => {
            let action = parser.text_positional("action")?;
            let id = |parser: &mut Parser| -> Result<u64, ParseError> {
                let token = parser.positional()?;
                parser.number::<u64>(&token, "ID")
            };
            Command::Dup(match action.as_str() {
                "add" => {
                    let table = parser.text_positional("table name")?;
                    let metas = parser.text_positional("remote meta addresses")?;
                    let options = parser.long_options(&["--remote-table"])?;
                    let remote_table = match options.get("--remote-table") {
                        Some(value) => parser.text(value.clone(), "remote table name")?,
                        None => String::new(),
                    };
                    DupRequest::Add {
                        table,
                        remote_metas: metas
                            .split(',')
                            .map(|address| address.trim().to_owned())
                            .collect(),
                        remote_table,
                    }
                }
                "list" => DupRequest::List {
                    table: match parser.optional_positional() {
                        Some(table) => parser.text(table, "table name")?,
                        None => String::new(),
                    },
                },
                "pause" => DupRequest::Pause {
                    id: id(&mut parser)?,
                },
                "start" => DupRequest::Start {
                    id: id(&mut parser)?,
                },
                "remove" => DupRequest::Remove {
                    id: id(&mut parser)?,
                },
                other => {
                    return Err(parser.usage(format!(
                        "unknown action {other:?}: add, list, pause, start or remove"
                    )))
                }
            })
        }
        "backup" => {
            let table = parser.text_positional("table name")?;
            let options = parser.long_options(&["--to"])?;
            let url = match options.get("--to") {
                Some(value) => parser.text(value.clone(), "URL")?,
                None => return Err(parser.usage("backup needs --to URL")),
            };
            Command::Backup(BackupRequest::Start { table, url })
        }
        "restore" => {
            let options = parser.long_options(&["--from", "--backup-id", "--table", "--as"])?;
            let text = |name: &str, what: &str| match options.get(name) {
                Some(value) => parser.text(value.clone(), what).map(Some),
                None => Ok(None),
            };
            let missing = |what: &str| parser.usage(format!("restore needs {what}"));
            let backup_id = match options.get("--backup-id") {
                Some(value) => parser.number::<u64>(value, "--backup-id")?,
                None => return Err(missing("--backup-id ID")),
            };
            Command::Backup(BackupRequest::Restore {
                url: text("--from", "URL")?.ok_or_else(|| missing("--from URL"))?,
                backup_id,
                table: text("--table", "table name")?.ok_or_else(|| missing("--table OLD"))?,
                new_table: text("--as", "table name")?.unwrap_or_default(),
            })
        }
        "add_backup_policy" | "modify_backup_policy" => {
            let mut spec = BackupPolicySpec::default();
            let mut change = BackupPolicyChange::default();
            let tables = |text: String| -> Vec<String> {
                text.split(',')
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned)
                    .collect()
            };
            let adding = spec_name == "add_backup_policy";
            while let Some(option) = parser.option()? {
                match (option, adding) {
                    ('p', _) => {
                        spec.name = parser.text_value('p')?;
                        change.name = spec.name.clone();
                    }
                    ('t', true) => spec.tables = tables(parser.text_value('t')?),
                    ('b', true) => spec.url = parser.text_value('b')?,
                    ('a', false) => change.add_tables = tables(parser.text_value('a')?),
                    ('r', false) => change.remove_tables = tables(parser.text_value('r')?),
                    ('i', _) => {
                        spec.interval_seconds = parser.number_value('i')?;
                        change.interval_seconds = spec.interval_seconds;
                    }
                    ('s', _) => {
                        spec.start_time = parser.text_value('s')?;
                        change.start_time = spec.start_time.clone();
                    }
                    ('c', _) => {
                        spec.keep = parser.number_value('c')?;
                        change.keep = spec.keep;
                    }
                    (other, _) => return Err(parser.unknown_option(other)),
                }
            }
            if spec.name.is_empty() {
                return Err(parser.usage("-p NAME is required"));
            }
            if adding {
                for (missing, what) in [
                    (spec.tables.is_empty(), "-t TABLES"),
                    (spec.url.is_empty(), "-b URL"),
                    (spec.interval_seconds == 0, "-i INTERVAL_SECONDS"),
                    (spec.start_time.is_empty(), "-s HH:MM"),
                    (spec.keep == 0, "-c KEEP"),
                ] {
                    if missing {
                        return Err(parser.usage(format!("{what} is required")));
                    }
                }
                Command::Backup(BackupRequest::AddPolicy(spec))
            } else {
                Command::Backup(BackupRequest::ModifyPolicy(change))
            }
        }
        "ls_backup_policy" => Command::Backup(BackupRequest::ListPolicies),
        "query_backup_policy" | "enable_backup_policy" | "disable_backup_policy" => {
            let mut name = String::new();
            while let Some(option) = parser.option()? {
                match option {
                    'p' => name = parser.text_value('p')?,
                    other => return Err(parser.unknown_option(other)),
                }
            }
            if name.is_empty() {
                return Err(parser.usage("-p NAME is required"));
            }
            Command::Backup(match spec_name {
                "query_backup_policy" => BackupRequest::QueryPolicy { name },
                "enable_backup_policy" => BackupRequest::EnablePolicy { name },
                _ => BackupRequest::DisablePolicy { name },
            })
        }
        "query_restore_status" => Command::Backup(BackupRequest::QueryRestore {
            table: parser.text_positional("table name")?,
        }),
        "cancel_restore" => Command::Backup(BackupRequest::CancelRestore {
            table: parser.text_positional("table name")?,
        }),
        "ls_backups" => Command::Backup(BackupRequest::List {
            table: match parser.optional_positional() {
                Some(table) => parser.text(table, "table name")?,
                None => String::new(),
            },
        }),
        "query_backup" => {
            let token = parser.positional()?;
            Command::Backup(BackupRequest::Query {
                backup_id: parser.number::<u64>(&token, "BACKUP_ID")?,
            })
        }
        "remove_node" => {
            let node = parser.text_positional("node")?;
            let mut cancel = false;
            while let Some(option) = parser.option()? {
                match option {
                    'c' => cancel = true,
                    other => return Err(parser.unknown_option(other)),
                }
            }
            Command::Balancer(BalancerRequest::RemoveNode { node, cancel })
        }
        "ls" => {
            let mut include_dropped = false;
            while let Some(option) = parser.option()? {
                match option {
                    'a' => include_dropped = true,
                    other => return Err(parser.unknown_option(other)),
                }
            }
            Command::ListTables { include_dropped }
        }
        "create" => {
            let table = parser.text_positional("table name")?;
            let mut partition_count = CREATE_PARTITION_COUNT_DEFAULT;
            let mut replica_count = CREATE_REPLICA_COUNT_DEFAULT;
            let mut envs = Vec::new();
            while let Some(option) = parser.option()? {
                match option {
                    'p' => partition_count = parser.number_value::<i32>(option)?,
                    'r' => replica_count = parser.number_value::<i32>(option)?,
                    'e' => {
                        let text = parser.text_value(option)?;
                        envs = parser.env_list(&text)?;
                    }
                    other => return Err(parser.unknown_option(other)),
                }
            }
            Command::CreateTable(CreateTableRequest {
                table,
                partition_count,
                replica_count,
                envs,
                success_if_exist: false,
            })
        }
        "drop" => {
            let table = parser.text_positional("table name")?;
            let options = parser.long_options(&["--reserve-seconds"])?;
            let reserve_seconds = match options.get("--reserve-seconds") {
                Some(value) => Some(parser.number::<u32>(value, "--reserve-seconds")?),
                None => None,
            };
            Command::DropTable {
                table,
                reserve_seconds,
            }
        }
        "recall" => {
            let app_id_token = parser.positional()?;
            let app_id = parser.number::<i32>(&app_id_token, "APP_ID")?;
            if app_id <= 0 {
                return Err(parser.usage(format!("APP_ID must be positive, not {app_id}")));
            }
            let new_name = match parser.optional_positional() {
                Some(name) => parser.text(name, "NEW_NAME")?,
                None => String::new(),
            };
            Command::RecallTable { app_id, new_name }
        }
        "app" => Command::DescribeTable {
            table: parser.text_positional("table name")?,
        },
        "set_app_envs" => {
            let rest = parser.rest();
            if rest.is_empty() || !rest.len().is_multiple_of(2) {
                return Err(parser.usage("set_app_envs needs key / value pairs"));
            }
            let mut envs = Vec::with_capacity(rest.len() / 2);
            for pair in rest.chunks(2) {
                let key = parser.text(pair[0].clone(), "KEY")?;
                let value = parser.text(pair[1].clone(), "VALUE")?;
                if key.is_empty() {
                    return Err(parser.usage("an env key must not be empty"));
                }
                envs.push((key, value));
            }
            Command::SetAppEnvs { envs }
        }
        "get_app_envs" => Command::GetAppEnvs,
        other => unreachable!("command {other} is listed in COMMANDS but not parsed"),
    };
    parser.finish()?;
    Ok(Some(command))
}

/// Walks a command's arguments: positionals first, then `-x [value]`
/// options.
struct Parser<'a> {
    spec: &'static CommandSpec,
    arguments: &'a [Vec<u8>],
    next: usize,
}

impl Parser<'_> {
    fn usage(&self, reason: impl Into<String>) -> ParseError {
        ParseError::Usage {
            reason: reason.into(),
            usage: self.spec.usage,
        }
    }

    fn unknown_option(&self, option: char) -> ParseError {
        self.usage(format!("{} has no option -{option}", self.spec.name))
    }

    fn is_option(token: &[u8]) -> bool {
        token.len() == 2 && token[0] == b'-' && token[1].is_ascii_alphabetic()
    }

    /// The next argument, which must be there (and not be an option).
    fn positional(&mut self) -> Result<Vec<u8>, ParseError> {
        match self.arguments.get(self.next) {
            Some(token) if !Self::is_option(token) => {
                self.next += 1;
                Ok(token.clone())
            }
            _ => Err(self.usage(format!("{} is missing an argument", self.spec.name))),
        }
    }

    /// The next argument if there is one and it is not an option.
    fn optional_positional(&mut self) -> Option<Vec<u8>> {
        let token = self.arguments.get(self.next)?;
        if Self::is_option(token) {
            return None;
        }
        self.next += 1;
        Some(token.clone())
    }

    /// Every remaining argument, bounded by [`COMMAND_KEYS_MAX`].
    fn rest(&mut self) -> Vec<Vec<u8>> {
        let rest = self.arguments[self.next..].to_vec();
        self.next = self.arguments.len();
        rest
    }

    /// `--name value` pairs up to the end, each name one of `names` (the
    /// last of a repeated one wins).
    fn long_options(
        &mut self,
        names: &[&str],
    ) -> Result<std::collections::BTreeMap<String, Vec<u8>>, ParseError> {
        let mut options = std::collections::BTreeMap::new();
        while let Some(token) = self.arguments.get(self.next) {
            let name = String::from_utf8_lossy(token).into_owned();
            if !names.contains(&name.as_str()) {
                return Err(self.usage(format!("unexpected argument {name:?}")));
            }
            self.next += 1;
            let value = self
                .optional_positional()
                .ok_or_else(|| self.usage(format!("{name} needs a value")))?;
            options.insert(name, value);
        }
        Ok(options)
    }

    /// The next option letter, or `None` at the end.
    fn option(&mut self) -> Result<Option<char>, ParseError> {
        let Some(token) = self.arguments.get(self.next) else {
            return Ok(None);
        };
        if !Self::is_option(token) {
            return Err(self.usage(format!(
                "unexpected argument {:?}",
                String::from_utf8_lossy(token)
            )));
        }
        self.next += 1;
        Ok(Some(token[1] as char))
    }

    fn value(&mut self, option: char) -> Result<Vec<u8>, ParseError> {
        let value = self.arguments.get(self.next).cloned();
        self.next += 1;
        value.ok_or_else(|| self.usage(format!("-{option} needs a value")))
    }

    /// `token` as UTF-8 text, naming `what` in the error.
    fn text(&self, token: Vec<u8>, what: &str) -> Result<String, ParseError> {
        String::from_utf8(token).map_err(|_| self.usage(format!("{what} must be UTF-8 text")))
    }

    /// The next positional argument, as UTF-8 text.
    fn text_positional(&mut self, what: &str) -> Result<String, ParseError> {
        let token = self.positional()?;
        self.text(token, what)
    }

    /// `k=v,k=v` (no empty keys; a value may be empty).
    fn env_list(&self, text: &str) -> Result<Vec<(String, String)>, ParseError> {
        text.split(',')
            .map(|entry| match entry.split_once('=') {
                Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
                _ => Err(self.usage(format!("env entry {entry:?} must look like key=value"))),
            })
            .collect()
    }

    fn text_value(&mut self, option: char) -> Result<String, ParseError> {
        let value = self.value(option)?;
        String::from_utf8(value).map_err(|_| self.usage(format!("-{option} needs a text value")))
    }

    fn number<T: std::str::FromStr>(&self, token: &[u8], what: &str) -> Result<T, ParseError> {
        std::str::from_utf8(token)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| {
                self.usage(format!(
                    "{what} must be a number in range, not {:?}",
                    String::from_utf8_lossy(token)
                ))
            })
    }

    fn number_value<T: std::str::FromStr>(&mut self, option: char) -> Result<T, ParseError> {
        let value = self.value(option)?;
        self.number(&value, &format!("-{option}"))
    }

    fn boolean_value(&mut self, option: char) -> Result<bool, ParseError> {
        match self.text_value(option)?.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(self.usage(format!("-{option} must be true or false, not {other:?}"))),
        }
    }

    fn filter_value(&mut self, option: char) -> Result<FilterType, ParseError> {
        match self.text_value(option)?.as_str() {
            "anywhere" => Ok(FilterType::MatchAnywhere),
            "prefix" => Ok(FilterType::MatchPrefix),
            "postfix" => Ok(FilterType::MatchPostfix),
            "no_filter" => Ok(FilterType::NoFilter),
            other => Err(self.usage(format!(
                "-{option} must be anywhere, prefix, postfix or no_filter, not {other:?}"
            ))),
        }
    }

    fn check_type_value(&mut self, option: char) -> Result<CheckType, ParseError> {
        let name = self.text_value(option)?;
        CHECK_TYPE_NAMES
            .iter()
            .position(|candidate| *candidate == name)
            .and_then(|index| CheckType::from_u8(index as u8))
            .ok_or_else(|| {
                self.usage(format!(
                    "unknown check type {name:?}; one of: {}",
                    CHECK_TYPE_NAMES.join(", ")
                ))
            })
    }

    /// Rejects leftover arguments and over-long key lists.
    fn finish(&self) -> Result<(), ParseError> {
        if self.next < self.arguments.len() {
            return Err(self.usage(format!(
                "unexpected argument {:?}",
                String::from_utf8_lossy(&self.arguments[self.next])
            )));
        }
        if self.arguments.len() > COMMAND_KEYS_MAX {
            return Err(self.usage(format!("at most {COMMAND_KEYS_MAX} arguments per command")));
        }
        Ok(())
    }
}

/// `APP.PART` as a partition id.
fn parse_gpid(text: &str) -> Option<Gpid> {
    let (app_id, partition_index) = text.split_once('.')?;
    Some(Gpid {
        app_id: app_id.parse().ok()?,
        partition_index: partition_index.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use markab_wire::Filter;

    fn parsed(line: &str) -> Command {
        parse(line).unwrap().unwrap()
    }

    // Proves the balancer's commands parse into their requests, and that a
    // bad partition, move kind or missing node is a usage error.
    #[test]
    fn balancer_commands() {
        let gpid = Gpid {
            app_id: 1,
            partition_index: 3,
        };
        let cases = [
            ("get_meta_level", BalancerRequest::GetLevel),
            (
                "set_meta_level lively",
                BalancerRequest::SetLevel {
                    level: "lively".into(),
                },
            ),
            ("balance", BalancerRequest::Balance { apply: true }),
            ("balance -n", BalancerRequest::Balance { apply: false }),
            ("moves", BalancerRequest::ListMoves),
            (
                "propose move_primary 1.3 n2",
                BalancerRequest::Propose(ProposedMove::MovePrimary {
                    gpid,
                    to: "n2".into(),
                }),
            ),
            (
                "propose copy_replica 1.3 n1 n4",
                BalancerRequest::Propose(ProposedMove::CopyReplica {
                    gpid,
                    from: "n1".into(),
                    to: "n4".into(),
                }),
            ),
            (
                "propose remove_replica 1.3 n1",
                BalancerRequest::Propose(ProposedMove::RemoveReplica {
                    gpid,
                    node: "n1".into(),
                }),
            ),
            (
                "remove_node n1",
                BalancerRequest::RemoveNode {
                    node: "n1".into(),
                    cancel: false,
                },
            ),
            (
                "remove_node n1 -c",
                BalancerRequest::RemoveNode {
                    node: "n1".into(),
                    cancel: true,
                },
            ),
        ];
        for (line, request) in cases {
            assert_eq!(parsed(line), Command::Balancer(request), "{line}");
        }
        for (line, says) in [
            ("propose move_primary 1 n2", "APP.PART"),
            ("propose move_primary x.3 n2", "APP.PART"),
            ("propose teleport 1.3 n2", "unknown move"),
            ("propose copy_replica 1.3 n1", "missing an argument"),
            ("set_meta_level", "missing an argument"),
            ("remove_node", "missing an argument"),
        ] {
            let reason = usage_error(line);
            assert!(reason.contains(says), "{line}: {reason}");
        }
        assert!(matches!(parse("balance -x"), Err(ParseError::Usage { .. })));
    }

    // Proves the backup and restore commands parse into their requests,
    // and that missing or unknown options are usage errors.
    #[test]
    fn backup_commands() {
        let cases = [
            (
                "backup t --to file:///b",
                BackupRequest::Start {
                    table: "t".into(),
                    url: "file:///b".into(),
                },
            ),
            (
                "ls_backups",
                BackupRequest::List {
                    table: String::new(),
                },
            ),
            ("ls_backups t", BackupRequest::List { table: "t".into() }),
            ("query_backup 42", BackupRequest::Query { backup_id: 42 }),
            (
                "restore --from file:///b --backup-id 42 --table t --as t2",
                BackupRequest::Restore {
                    url: "file:///b".into(),
                    backup_id: 42,
                    table: "t".into(),
                    new_table: "t2".into(),
                },
            ),
            (
                "restore --table t --backup-id 42 --from file:///b",
                BackupRequest::Restore {
                    url: "file:///b".into(),
                    backup_id: 42,
                    table: "t".into(),
                    new_table: String::new(),
                },
            ),
            (
                "query_restore_status t2",
                BackupRequest::QueryRestore { table: "t2".into() },
            ),
            (
                "cancel_restore t2",
                BackupRequest::CancelRestore { table: "t2".into() },
            ),
        ];
        for (line, request) in cases {
            assert_eq!(parsed(line), Command::Backup(request), "{line}");
        }
        let policies = [
            (
                "add_backup_policy -p daily -t a,b -b file:///b -i 86400 -s 01:30 -c 7",
                BackupRequest::AddPolicy(BackupPolicySpec {
                    name: "daily".into(),
                    tables: vec!["a".into(), "b".into()],
                    url: "file:///b".into(),
                    interval_seconds: 86_400,
                    start_time: "01:30".into(),
                    keep: 7,
                }),
            ),
            ("ls_backup_policy", BackupRequest::ListPolicies),
            (
                "query_backup_policy -p daily",
                BackupRequest::QueryPolicy {
                    name: "daily".into(),
                },
            ),
            (
                "modify_backup_policy -p daily -a c -r a,b -c 3",
                BackupRequest::ModifyPolicy(BackupPolicyChange {
                    name: "daily".into(),
                    add_tables: vec!["c".into()],
                    remove_tables: vec!["a".into(), "b".into()],
                    keep: 3,
                    ..BackupPolicyChange::default()
                }),
            ),
            (
                "enable_backup_policy -p daily",
                BackupRequest::EnablePolicy {
                    name: "daily".into(),
                },
            ),
            (
                "disable_backup_policy -p daily",
                BackupRequest::DisablePolicy {
                    name: "daily".into(),
                },
            ),
        ];
        for (line, request) in policies {
            assert_eq!(parsed(line), Command::Backup(request), "{line}");
        }
        for (line, says) in [
            ("add_backup_policy -t a -b u -i 1 -s 00:00 -c 1", "-p NAME"),
            (
                "add_backup_policy -p d -b u -i 1 -s 00:00 -c 1",
                "-t TABLES",
            ),
            ("add_backup_policy -p d -t a -i 1 -s 00:00 -c 1", "-b URL"),
            (
                "add_backup_policy -p d -t a -b u -s 00:00 -c 1",
                "-i INTERVAL",
            ),
            ("add_backup_policy -p d -t a -b u -i x -s 00:00 -c 1", "-i"),
            ("add_backup_policy -p d -t a -b u -i 1 -c 1", "-s HH:MM"),
            ("add_backup_policy -p d -t a -b u -i 1 -s 00:00", "-c KEEP"),
            ("modify_backup_policy -p d -t a", "-t"),
            ("query_backup_policy", "-p NAME"),
        ] {
            let reason = usage_error(line);
            assert!(reason.contains(says), "{line}: {reason}");
        }
        for (line, says) in [
            ("backup t", "--to URL"),
            ("backup t --to", "--to needs a value"),
            ("backup t --into x", "unexpected argument"),
            ("query_backup x", "BACKUP_ID"),
            ("restore --from file:///b --table t", "--backup-id"),
            ("restore --backup-id 1 --table t", "--from URL"),
            ("restore --from file:///b --backup-id 1", "--table OLD"),
            (
                "restore --from file:///b --backup-id 1 --table t --bogus x",
                "unexpected",
            ),
            ("cancel_restore", "missing an argument"),
        ] {
            let reason = usage_error(line);
            assert!(reason.contains(says), "{line}: {reason}");
        }
    }

    fn usage_error(line: &str) -> String {
        match parse(line) {
            Err(ParseError::Usage { reason, .. }) => reason,
            other => panic!("{line}: expected a usage error, got {other:?}"),
        }
    }

    // Proves blank lines parse to nothing and unknown commands are named.
    #[test]
    fn blank_and_unknown() {
        assert_eq!(parse("   ").unwrap(), None);
        assert_eq!(
            parse("frobnicate x").unwrap_err(),
            ParseError::UnknownCommand("frobnicate".into())
        );
    }

    // Proves set takes an optional TTL and decodes escaped bytes.
    #[test]
    fn set_with_and_without_ttl() {
        assert_eq!(
            parsed(r#"set h "s k" v\x00"#),
            Command::Set {
                hash_key: b"h".to_vec(),
                sort_key: b"s k".to_vec(),
                value: b"v\0".to_vec(),
                ttl_seconds: 0
            }
        );
        assert!(matches!(
            parsed("set h s v 60"),
            Command::Set {
                ttl_seconds: 60,
                ..
            }
        ));
        assert!(usage_error("set h s v -1").contains("ttl_seconds"));
        assert!(usage_error("set h s").contains("missing"));
        assert!(usage_error("set h s v 1 extra").contains("unexpected"));
    }

    // Proves the single-record commands map to their variants.
    #[test]
    fn single_record_commands() {
        let key = (b"h".to_vec(), b"s".to_vec());
        assert_eq!(
            parsed("get h s"),
            Command::Get {
                hash_key: key.0.clone(),
                sort_key: key.1.clone()
            }
        );
        assert_eq!(
            parsed("del h s"),
            Command::Del {
                hash_key: key.0.clone(),
                sort_key: key.1.clone()
            }
        );
        assert_eq!(
            parsed("exist h s"),
            Command::Exist {
                hash_key: key.0.clone(),
                sort_key: key.1.clone()
            }
        );
        assert_eq!(
            parsed("ttl h s"),
            Command::Ttl {
                hash_key: key.0,
                sort_key: key.1
            }
        );
        assert_eq!(
            parsed(r#"get "" s"#),
            Command::Get {
                hash_key: Vec::new(),
                sort_key: b"s".to_vec()
            }
        );
        assert_eq!(parsed("exit"), Command::Exit);
        assert_eq!(parsed("quit"), Command::Exit);
        assert_eq!(parsed("help"), Command::Help);
    }

    // Proves multi_set pairs sort keys with values and rejects odd counts.
    #[test]
    fn multi_set_pairs() {
        assert_eq!(
            parsed("multi_set h a 1 b 2"),
            Command::MultiSet {
                hash_key: b"h".to_vec(),
                kvs: vec![
                    SortKeyValue {
                        sort_key: b"a".to_vec(),
                        value: b"1".to_vec()
                    },
                    SortKeyValue {
                        sort_key: b"b".to_vec(),
                        value: b"2".to_vec()
                    },
                ]
            }
        );
        assert!(usage_error("multi_set h a 1 b").contains("pairs"));
        assert!(usage_error("multi_set h").contains("pairs"));
    }

    // Proves multi_get lists sort keys, or reads the whole hash key without them.
    #[test]
    fn multi_get_sort_keys_or_whole_hash_key() {
        let Command::MultiGet(request) = parsed("multi_get h a b") else {
            panic!()
        };
        assert_eq!(request.sort_keys, vec![b"a".to_vec(), b"b".to_vec()]);
        let Command::MultiGet(request) = parsed("multi_get h") else {
            panic!()
        };
        assert!(request.sort_keys.is_empty());
        assert!(request.start_sort_key.is_empty() && request.stop_sort_key.is_empty());
        assert_eq!(request.max_kv_count, -1);
    }

    // Proves every multi_get_range option sets its request field.
    #[test]
    fn multi_get_range_options() {
        let Command::MultiGet(request) =
            parsed("multi_get_range h a z -a false -b true -s prefix -y p -n 7 -i -r")
        else {
            panic!()
        };
        assert_eq!(request.hash_key, b"h".to_vec());
        assert_eq!(request.start_sort_key, b"a".to_vec());
        assert_eq!(request.stop_sort_key, b"z".to_vec());
        assert!(!request.start_inclusive);
        assert!(request.stop_inclusive);
        assert_eq!(
            request.sort_key_filter,
            Filter::new(FilterType::MatchPrefix, b"p".to_vec())
        );
        assert_eq!(request.max_kv_count, 7);
        assert!(request.no_value);
        assert!(request.reverse);
        let Command::MultiGet(defaults) = parsed("multi_get_range h a z") else {
            panic!()
        };
        assert!(defaults.start_inclusive && !defaults.stop_inclusive && !defaults.reverse);
        assert!(usage_error("multi_get_range h a z -a maybe").contains("true or false"));
        assert!(usage_error("multi_get_range h a z -s middle").contains("anywhere"));
        assert!(usage_error("multi_get_range h a z -q 1").contains("no option -q"));
        assert!(usage_error("multi_get_range h a z -n").contains("needs a value"));
    }

    // Proves multi_del, sortkey_count and incr parse with their defaults.
    #[test]
    fn multi_del_sortkey_count_incr() {
        assert_eq!(
            parsed("multi_del h a b"),
            Command::MultiDel {
                hash_key: b"h".to_vec(),
                sort_keys: vec![b"a".to_vec(), b"b".to_vec()]
            }
        );
        assert!(usage_error("multi_del h").contains("at least one"));
        assert_eq!(
            parsed("sortkey_count h"),
            Command::SortKeyCount {
                hash_key: b"h".to_vec()
            }
        );
        assert_eq!(
            parsed("incr h s"),
            Command::Incr {
                hash_key: b"h".to_vec(),
                sort_key: b"s".to_vec(),
                increment: 1,
                ttl_seconds: 0
            }
        );
        assert_eq!(
            parsed("incr h s -5 -t -1"),
            Command::Incr {
                hash_key: b"h".to_vec(),
                sort_key: b"s".to_vec(),
                increment: -5,
                ttl_seconds: -1
            }
        );
        assert!(usage_error("incr h s ten").contains("increment"));
    }

    // Proves check_and_set reads every option, names check types, and
    // requires the mandatory ones.
    #[test]
    fn check_and_set_options() {
        let Command::CheckAndSet(request) =
            parsed("check_and_set h -c c1 -t int_greater -o 5 -s s1 -v v1 -l 30 -r")
        else {
            panic!()
        };
        assert_eq!(
            request,
            CheckAndSetRequest {
                hash_key: b"h".to_vec(),
                check_sort_key: b"c1".to_vec(),
                check_type: CheckType::ValueIntGreater,
                check_operand: b"5".to_vec(),
                set_sort_key: b"s1".to_vec(),
                set_value: b"v1".to_vec(),
                set_ttl_seconds: 30,
                return_check_value: true,
            }
        );
        for (index, name) in CHECK_TYPE_NAMES.iter().enumerate() {
            let line = format!("check_and_set h -c c -t {name} -s s -v v");
            let Command::CheckAndSet(request) = parsed(&line) else {
                panic!()
            };
            assert_eq!(request.check_type as usize, index, "{name}");
        }
        assert!(
            usage_error("check_and_set h -c c -t bogus -s s -v v").contains("unknown check type")
        );
        assert!(usage_error("check_and_set h -c c -s s -v v").contains("-t"));
        assert!(usage_error("check_and_set h -t exist -s s -v v").contains("-c"));
    }

    // Proves hash_scan, full_scan and count_data map their options.
    #[test]
    fn scan_options() {
        let Command::HashScan {
            hash_key,
            start_sort_key,
            stop_sort_key,
            options,
            max_count,
        } = parsed("hash_scan h a z -a false -b true -s postfix -y x -n 3 -i")
        else {
            panic!()
        };
        assert_eq!(
            (hash_key, start_sort_key, stop_sort_key),
            (b"h".to_vec(), b"a".to_vec(), b"z".to_vec())
        );
        assert!(!options.start_inclusive && options.stop_inclusive && options.no_value);
        assert_eq!(
            options.sort_key_filter,
            Filter::new(FilterType::MatchPostfix, b"x".to_vec())
        );
        assert_eq!(max_count, 3);

        let Command::FullScan { options, max_count } =
            parsed("full_scan -h anywhere -x hk -s prefix -y sk -n 10 -i")
        else {
            panic!()
        };
        assert_eq!(
            options.hash_key_filter,
            Filter::new(FilterType::MatchAnywhere, b"hk".to_vec())
        );
        assert_eq!(
            options.sort_key_filter,
            Filter::new(FilterType::MatchPrefix, b"sk".to_vec())
        );
        assert!(options.no_value);
        assert_eq!(max_count, 10);
        assert_eq!(
            parsed("full_scan"),
            Command::FullScan {
                options: ScanOptions::default(),
                max_count: SCAN_PRINT_COUNT_DEFAULT
            }
        );
        assert_eq!(
            parsed("count_data"),
            Command::CountData {
                options: ScanOptions::default()
            }
        );
        assert!(usage_error("count_data -n 5").contains("no option -n"));
    }

    // Proves escape errors surface as parse errors.
    #[test]
    fn escape_errors_surface() {
        assert!(matches!(parse(r"get h \q"), Err(ParseError::Escape(_))));
    }

    // Proves use, cluster_info, nodes, app and get_app_envs parse, and that
    // table names must be given.
    #[test]
    fn simple_admin_commands() {
        assert_eq!(
            parsed("use orders"),
            Command::Use {
                table: "orders".into()
            }
        );
        assert_eq!(parsed("cluster_info"), Command::ClusterInfo);
        assert_eq!(parsed("nodes"), Command::Nodes);
        assert_eq!(
            parsed("app orders"),
            Command::DescribeTable {
                table: "orders".into()
            }
        );
        assert_eq!(parsed("get_app_envs"), Command::GetAppEnvs);
        assert!(usage_error("use").contains("missing"));
        assert!(usage_error("app").contains("missing"));
        assert!(usage_error("nodes extra").contains("unexpected"));
        assert!(usage_error("use a b").contains("unexpected"));
        assert!(usage_error(r"use \xff").contains("UTF-8"));
    }

    // Proves ls takes only -a.
    #[test]
    fn ls_options() {
        assert_eq!(
            parsed("ls"),
            Command::ListTables {
                include_dropped: false
            }
        );
        assert_eq!(
            parsed("ls -a"),
            Command::ListTables {
                include_dropped: true
            }
        );
        assert!(usage_error("ls -x").contains("no option -x"));
    }

    // Proves create applies its defaults (8 partitions, 3 replicas, no
    // envs), reads -p, -r and -e, and rejects malformed values.
    #[test]
    fn create_options() {
        assert_eq!(
            parsed("create orders"),
            Command::CreateTable(CreateTableRequest {
                table: "orders".into(),
                partition_count: 8,
                replica_count: 3,
                envs: vec![],
                success_if_exist: false,
            })
        );
        assert_eq!(
            parsed("create t -p 16 -r 1 -e a=1,b=,c=x=y"),
            Command::CreateTable(CreateTableRequest {
                table: "t".into(),
                partition_count: 16,
                replica_count: 1,
                envs: vec![
                    ("a".into(), "1".into()),
                    ("b".into(), String::new()),
                    ("c".into(), "x=y".into())
                ],
                success_if_exist: false,
            })
        );
        assert!(usage_error("create").contains("missing"));
        assert!(usage_error("create t -p eight").contains("-p"));
        assert!(usage_error("create t -r").contains("needs a value"));
        assert!(usage_error("create t -e novalue").contains("key=value"));
        assert!(usage_error("create t -e =v").contains("key=value"));
    }

    // Proves drop takes an optional --reserve-seconds and rejects anything
    // else.
    #[test]
    fn drop_options() {
        assert_eq!(
            parsed("drop t"),
            Command::DropTable {
                table: "t".into(),
                reserve_seconds: None
            }
        );
        assert_eq!(
            parsed("drop t --reserve-seconds 60"),
            Command::DropTable {
                table: "t".into(),
                reserve_seconds: Some(60)
            }
        );
        assert!(usage_error("drop t --reserve-seconds").contains("needs a value"));
        assert!(usage_error("drop t --reserve-seconds -1").contains("--reserve-seconds"));
        assert!(usage_error("drop t --reserve-seconds x").contains("--reserve-seconds"));
        assert!(usage_error("drop t --hold 5").contains("unexpected"));
        assert!(usage_error("drop").contains("missing"));
    }

    // Proves recall takes a positive app id and an optional new name.
    #[test]
    fn recall_arguments() {
        assert_eq!(
            parsed("recall 3"),
            Command::RecallTable {
                app_id: 3,
                new_name: String::new()
            }
        );
        assert_eq!(
            parsed("recall 3 orders_old"),
            Command::RecallTable {
                app_id: 3,
                new_name: "orders_old".into()
            }
        );
        assert!(usage_error("recall x").contains("APP_ID"));
        assert!(usage_error("recall 0").contains("positive"));
        assert!(usage_error("recall").contains("missing"));
        assert!(usage_error("recall 3 a b").contains("unexpected"));
    }

    // Proves set_app_envs pairs keys with values and rejects odd counts and
    // empty keys.
    #[test]
    fn set_app_envs_pairs() {
        assert_eq!(
            parsed(r#"set_app_envs a 1 "b c" "" "#),
            Command::SetAppEnvs {
                envs: vec![("a".into(), "1".into()), ("b c".into(), String::new())]
            }
        );
        assert!(usage_error("set_app_envs").contains("pairs"));
        assert!(usage_error("set_app_envs a").contains("pairs"));
        assert!(usage_error(r#"set_app_envs "" v"#).contains("empty"));
    }

    // Proves only data commands ask for a current table.
    #[test]
    fn data_commands_need_a_table() {
        assert!(parsed("get h s").needs_table());
        assert!(parsed("full_scan").needs_table());
        for line in [
            "help",
            "use t",
            "ls",
            "nodes",
            "cluster_info",
            "create t",
            "drop t",
            "recall 1",
            "app t",
            "set_app_envs k v",
            "get_app_envs",
            "dup list",
        ] {
            assert!(!parsed(line).needs_table(), "{line}");
        }
    }

    // Proves the dup commands parse their actions, addresses and ids, and
    // refuse an unknown action or a bad id.
    #[test]
    fn dup_commands() {
        assert_eq!(
            parsed("dup add t 10.0.0.1:34601,10.0.0.2:34601 --remote-table u"),
            Command::Dup(DupRequest::Add {
                table: "t".into(),
                remote_metas: vec!["10.0.0.1:34601".into(), "10.0.0.2:34601".into()],
                remote_table: "u".into(),
            })
        );
        assert_eq!(
            parsed("dup add t m:1"),
            Command::Dup(DupRequest::Add {
                table: "t".into(),
                remote_metas: vec!["m:1".into()],
                remote_table: String::new(),
            })
        );
        assert_eq!(
            parsed("dup list"),
            Command::Dup(DupRequest::List {
                table: String::new()
            })
        );
        assert_eq!(
            parsed("dup list t"),
            Command::Dup(DupRequest::List { table: "t".into() })
        );
        assert_eq!(
            parsed("dup pause 17"),
            Command::Dup(DupRequest::Pause { id: 17 })
        );
        assert_eq!(
            parsed("dup start 17"),
            Command::Dup(DupRequest::Start { id: 17 })
        );
        assert_eq!(
            parsed("dup remove 17"),
            Command::Dup(DupRequest::Remove { id: 17 })
        );
        assert!(usage_error("dup stop 1").contains("unknown action"));
        assert!(usage_error("dup pause x").contains("ID must be a number"));
        assert!(usage_error("dup add t").contains("missing an argument"));
        assert!(usage_error("dup add t m:1 --remote-table").contains("needs a value"));
    }

    // Proves every listed command parses (no spec without a parser arm).
    #[test]
    fn every_listed_command_is_parsed() {
        for spec in COMMANDS {
            // A parse error is fine (arguments are missing); a panic is not.
            let _ = parse(spec.name);
        }
    }
}
