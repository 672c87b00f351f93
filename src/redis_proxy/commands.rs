//! The command table (name, arity, handler) and the mapping of Redis
//! commands onto one Markab table. See docs/redis.md for the mapping:
//!
//! * a Redis string `key` is the record `(key, "")`;
//! * a Redis hash `key` is the records `(key, field)` with non-empty fields;
//! * a key is a string when `(key, "")` exists, else a hash when it has any
//!   other sort key, else it does not exist.

use std::collections::HashMap;

use crate::client::{ClientError, Table};
use crate::wire::{
    CheckAndMutateRequest, CheckAndSetRequest, CheckType, ErrorCode, Key, MultiGetRequest,
    Mutation, SortKeyValue,
};

use super::resp::{parse_redis_integer, Reply};

/// Records read per multi_get page when a whole hash is read or deleted.
pub const HASH_PAGE_RECORDS_MAX: i32 = 1000;
/// Most fields of a hash the proxy reads whole (HGETALL, HKEYS, HVALS,
/// EXPIRE on a hash, DEL); larger hashes get an error instead.
pub const HASH_FIELDS_MAX: usize = 100_000;
/// Most rounds of compare-and-set when EXPIRE / PERSIST lose a race with a
/// concurrent writer of the same key.
pub const EXPIRE_ATTEMPTS_MAX: usize = 8;
/// Longest TTL the proxy accepts (about 31 years): Markab stores absolute
/// expire times as 32-bit epoch seconds.
pub const TTL_SECONDS_MAX: i64 = 1_000_000_000;
/// Longest prefix of the command and its arguments quoted in the unknown
/// command error (Redis's bound).
const UNKNOWN_COMMAND_QUOTE_MAX: usize = 128;

const _: () = assert!(HASH_PAGE_RECORDS_MAX > 1);
const _: () = assert!(HASH_FIELDS_MAX >= HASH_PAGE_RECORDS_MAX as usize);

/// Why a command failed; `Display` is the Redis error line (without `-`).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    #[error("ERR hash value is not an integer")]
    HashNotInteger,
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    #[error("ERR decrement would overflow")]
    DecrementOverflow,
    #[error("ERR syntax error")]
    Syntax,
    #[error("ERR invalid expire time in '{0}' command")]
    InvalidExpire(&'static str),
    #[error("ERR wrong number of arguments for '{0}' command")]
    Arity(&'static str),
    #[error("ERR DB index is out of range")]
    DbIndex,
    #[error("ERR unknown subcommand '{subcommand}'. Try {command} HELP.")]
    UnknownSubcommand {
        command: &'static str,
        subcommand: String,
    },
    #[error("ERR {0} is not supported by the Markab proxy")]
    Unsupported(&'static str),
    #[error("ERR empty keys are not supported by the Markab proxy")]
    EmptyKey,
    #[error("ERR empty hash fields are not supported by the Markab proxy")]
    EmptyField,
    #[error("ERR the hash has more than {HASH_FIELDS_MAX} fields; the Markab proxy does not read it whole")]
    HashTooLarge,
    #[error("TRYAGAIN the key changed concurrently {EXPIRE_ATTEMPTS_MAX} times; try again")]
    Contended,
    /// Markab could not serve the request (timeouts, unavailability, ...):
    /// `TRYAGAIN` for transient conditions, `ERR` otherwise.
    #[error("{} markab: {cause}", if *transient { "TRYAGAIN" } else { "ERR" })]
    Markab { transient: bool, cause: ClientError },
}

impl From<ClientError> for CommandError {
    fn from(error: ClientError) -> CommandError {
        let transient = matches!(
            error.code(),
            Some(
                ErrorCode::Timeout
                    | ErrorCode::Busy
                    | ErrorCode::NotHosted
                    | ErrorCode::ShuttingDown
                    | ErrorCode::WrongShard
                    | ErrorCode::UnknownPartition
            )
        ) || matches!(error, ClientError::Io(_) | ClientError::Connect { .. });
        CommandError::Markab {
            transient,
            cause: error,
        }
    }
}

type CommandResult = Result<Reply, CommandError>;

/// What the connection does after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send the reply, go on.
    Reply(Reply),
    /// Send the reply, then close the connection (QUIT).
    ReplyAndClose(Reply),
}

/// Which code runs a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handler {
    Ping,
    Echo,
    Quit,
    Select,
    Command,
    Client,
    Config,
    Get,
    Set,
    SetEx,
    PSetEx,
    SetNx,
    GetSet,
    Del,
    Exists,
    Ttl,
    PTtl,
    Expire,
    PExpire,
    Persist,
    Incr,
    IncrBy,
    Decr,
    DecrBy,
    MGet,
    MSet,
    StrLen,
    HSet,
    HMSet,
    HGet,
    HDel,
    HExists,
    HGetAll,
    HKeys,
    HVals,
    HLen,
    HMGet,
    HIncrBy,
}

/// One supported command.
#[derive(Clone, Copy, Debug)]
pub struct CommandSpec {
    /// Lower-case name, as Redis prints it in errors.
    pub name: &'static str,
    /// Redis's arity: `n > 0` exactly n arguments (the name included),
    /// `n < 0` at least `-n`.
    pub arity: i32,
    pub handler: Handler,
}

const fn spec(name: &'static str, arity: i32, handler: Handler) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        handler,
    }
}

/// Every supported command with Redis 7's arity.
pub const COMMANDS: &[CommandSpec] = &[
    spec("ping", -1, Handler::Ping),
    spec("echo", 2, Handler::Echo),
    spec("quit", -1, Handler::Quit),
    spec("select", 2, Handler::Select),
    spec("command", -1, Handler::Command),
    spec("client", -2, Handler::Client),
    spec("config", -2, Handler::Config),
    spec("get", 2, Handler::Get),
    spec("set", -3, Handler::Set),
    spec("setex", 4, Handler::SetEx),
    spec("psetex", 4, Handler::PSetEx),
    spec("setnx", 3, Handler::SetNx),
    spec("getset", 3, Handler::GetSet),
    spec("del", -2, Handler::Del),
    spec("unlink", -2, Handler::Del),
    spec("exists", -2, Handler::Exists),
    spec("ttl", 2, Handler::Ttl),
    spec("pttl", 2, Handler::PTtl),
    spec("expire", -3, Handler::Expire),
    spec("pexpire", -3, Handler::PExpire),
    spec("persist", 2, Handler::Persist),
    spec("incr", 2, Handler::Incr),
    spec("incrby", 3, Handler::IncrBy),
    spec("decr", 2, Handler::Decr),
    spec("decrby", 3, Handler::DecrBy),
    spec("mget", -2, Handler::MGet),
    spec("mset", -3, Handler::MSet),
    spec("strlen", 2, Handler::StrLen),
    spec("hset", -4, Handler::HSet),
    spec("hmset", -4, Handler::HMSet),
    spec("hget", 3, Handler::HGet),
    spec("hdel", -3, Handler::HDel),
    spec("hexists", 3, Handler::HExists),
    spec("hgetall", 2, Handler::HGetAll),
    spec("hkeys", 2, Handler::HKeys),
    spec("hvals", 2, Handler::HVals),
    spec("hlen", 2, Handler::HLen),
    spec("hmget", -3, Handler::HMGet),
    spec("hincrby", 4, Handler::HIncrBy),
];

/// The command named `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|spec| spec.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Redis 7's error for a command it does not know, quoting at most 128
/// bytes of the name and of the arguments.
pub fn unknown_command_error(args: &[Vec<u8>]) -> String {
    let name = args.first().map(Vec::as_slice).unwrap_or_default();
    let name = String::from_utf8_lossy(&name[..name.len().min(UNKNOWN_COMMAND_QUOTE_MAX)]);
    let mut quoted = String::new();
    for arg in args.iter().skip(1) {
        if quoted.len() >= UNKNOWN_COMMAND_QUOTE_MAX {
            break;
        }
        let room = UNKNOWN_COMMAND_QUOTE_MAX - quoted.len();
        let text = String::from_utf8_lossy(&arg[..arg.len().min(room)]);
        quoted.push('\'');
        quoted.push_str(&text);
        quoted.push_str("' ");
    }
    format!("ERR unknown command '{name}', with args beginning with: {quoted}")
}

/// Runs one command (its name first) against `table`. Never panics on any
/// argument list; every failure becomes an error reply.
pub async fn execute(table: &Table, args: &[Vec<u8>]) -> Action {
    let Some(name) = args.first() else {
        return Action::Reply(Reply::error("ERR empty command"));
    };
    let Some(spec) = lookup(name) else {
        return Action::Reply(Reply::error(unknown_command_error(args)));
    };
    let count = args.len() as i64;
    let arity = i64::from(spec.arity);
    if (arity > 0 && count != arity) || (arity < 0 && count < -arity) {
        return Action::Reply(Reply::error(CommandError::Arity(spec.name).to_string()));
    }
    if spec.handler == Handler::Quit {
        return Action::ReplyAndClose(Reply::OK);
    }
    let reply = match run(table, spec, &args[1..]).await {
        Ok(reply) => reply,
        Err(error) => {
            if let CommandError::Markab { cause, .. } = &error {
                tracing::debug!(command = spec.name, error = %cause, "markab request failed");
            }
            Reply::error(error.to_string())
        }
    };
    Action::Reply(reply)
}

async fn run(table: &Table, spec: &CommandSpec, args: &[Vec<u8>]) -> CommandResult {
    match spec.handler {
        Handler::Ping => match args {
            [] => Ok(Reply::Simple("PONG")),
            [message] => Ok(Reply::Bulk(message.clone())),
            _ => Err(CommandError::Arity(spec.name)),
        },
        Handler::Echo => Ok(Reply::Bulk(args[0].clone())),
        Handler::Quit => Ok(Reply::OK),
        Handler::Select => match parse_redis_integer(&args[0]) {
            None => Err(CommandError::NotInteger),
            Some(0) => Ok(Reply::OK),
            Some(_) => Err(CommandError::DbIndex),
        },
        Handler::Command => command_command(args),
        Handler::Client => client_command(args),
        Handler::Config => config_command(args),
        Handler::Get => get(table, key(&args[0])?).await,
        Handler::Set => set_command(table, args).await,
        Handler::SetEx => {
            let ttl_seconds = expire_seconds(&args[1], false, "setex")?;
            set_plain(table, key(&args[0])?, &args[2], ttl_seconds).await?;
            Ok(Reply::OK)
        }
        Handler::PSetEx => {
            let ttl_seconds = expire_seconds(&args[1], true, "psetex")?;
            set_plain(table, key(&args[0])?, &args[2], ttl_seconds).await?;
            Ok(Reply::OK)
        }
        Handler::SetNx => {
            let options = SetOptions {
                condition: Condition::NotExists,
                ..SetOptions::default()
            };
            match set_with(table, key(&args[0])?, &args[1], options).await? {
                Reply::OK => Ok(Reply::Integer(1)),
                _ => Ok(Reply::Integer(0)),
            }
        }
        Handler::GetSet => {
            let options = SetOptions {
                get: true,
                ..SetOptions::default()
            };
            set_with(table, key(&args[0])?, &args[1], options).await
        }
        Handler::Del => {
            let mut deleted = 0;
            for arg in args {
                if delete_key(table, key(arg)?).await? {
                    deleted += 1;
                }
            }
            Ok(Reply::Integer(deleted))
        }
        Handler::Exists => {
            let mut found = 0;
            for arg in args {
                if probe(table, key(arg)?, 1, true).await?.kind() != Kind::Missing {
                    found += 1;
                }
            }
            Ok(Reply::Integer(found))
        }
        Handler::Ttl => Ok(Reply::Integer(ttl(table, key(&args[0])?, 1).await?)),
        Handler::PTtl => Ok(Reply::Integer(ttl(table, key(&args[0])?, 1000).await?)),
        Handler::Expire => expire_command(table, args, false).await,
        Handler::PExpire => expire_command(table, args, true).await,
        Handler::Persist => persist(table, key(&args[0])?).await,
        Handler::Incr => incr_by(table, key(&args[0])?, 1).await,
        Handler::Decr => incr_by(table, key(&args[0])?, -1).await,
        Handler::IncrBy => {
            let increment = parse_redis_integer(&args[1]).ok_or(CommandError::NotInteger)?;
            incr_by(table, key(&args[0])?, increment).await
        }
        Handler::DecrBy => {
            let decrement = parse_redis_integer(&args[1]).ok_or(CommandError::NotInteger)?;
            let increment = decrement
                .checked_neg()
                .ok_or(CommandError::DecrementOverflow)?;
            incr_by(table, key(&args[0])?, increment).await
        }
        Handler::MGet => mget(table, args).await,
        Handler::MSet => mset(table, spec, args).await,
        Handler::StrLen => match get(table, key(&args[0])?).await? {
            Reply::Bulk(value) => Ok(Reply::Integer(value.len() as i64)),
            _ => Ok(Reply::Integer(0)),
        },
        Handler::HSet => hset(table, spec, args).await,
        Handler::HMSet => {
            hset(table, spec, args).await?;
            Ok(Reply::OK)
        }
        Handler::HGet => {
            let hash_key = key(&args[0])?;
            let (value, string) = futures::join!(
                get_field(table, hash_key, &args[1]),
                table.exist(hash_key, b"")
            );
            if string? {
                return Err(CommandError::WrongType);
            }
            Ok(value?.map_or(Reply::Nil, Reply::Bulk))
        }
        Handler::HDel => {
            let hash_key = key(&args[0])?;
            if table.exist(hash_key, b"").await? {
                return Err(CommandError::WrongType);
            }
            let fields: Vec<Vec<u8>> = args[1..]
                .iter()
                .filter(|field| !field.is_empty())
                .cloned()
                .collect();
            if fields.is_empty() {
                return Ok(Reply::Integer(0));
            }
            Ok(Reply::Integer(table.multi_del(hash_key, fields).await?))
        }
        Handler::HExists => {
            let hash_key = key(&args[0])?;
            let field = args[1].as_slice();
            let (exists, string) = futures::join!(
                async {
                    if field.is_empty() {
                        Ok(false)
                    } else {
                        table.exist(hash_key, field).await
                    }
                },
                table.exist(hash_key, b"")
            );
            if string? {
                return Err(CommandError::WrongType);
            }
            Ok(Reply::Integer(i64::from(exists?)))
        }
        Handler::HGetAll => {
            let fields = read_hash(table, key(&args[0])?, false).await?;
            let mut items = Vec::with_capacity(fields.len() * 2);
            for kv in fields {
                items.push(Reply::Bulk(kv.sort_key));
                items.push(Reply::Bulk(kv.value));
            }
            Ok(Reply::Array(items))
        }
        Handler::HKeys => {
            let fields = read_hash(table, key(&args[0])?, true).await?;
            Ok(Reply::Array(
                fields
                    .into_iter()
                    .map(|kv| Reply::Bulk(kv.sort_key))
                    .collect(),
            ))
        }
        Handler::HVals => {
            let fields = read_hash(table, key(&args[0])?, false).await?;
            Ok(Reply::Array(
                fields.into_iter().map(|kv| Reply::Bulk(kv.value)).collect(),
            ))
        }
        Handler::HLen => {
            let hash_key = key(&args[0])?;
            let (count, string) =
                futures::join!(table.sortkey_count(hash_key), table.exist(hash_key, b""));
            if string? {
                return Err(CommandError::WrongType);
            }
            Ok(Reply::Integer(count?))
        }
        Handler::HMGet => hmget(table, args).await,
        Handler::HIncrBy => hincrby(table, args).await,
    }
}

/// The Redis key as a Markab hash key; empty keys are refused.
fn key(arg: &[u8]) -> Result<&[u8], CommandError> {
    if arg.is_empty() {
        Err(CommandError::EmptyKey)
    } else {
        Ok(arg)
    }
}

/// Parses an EX / PX style argument into whole Markab seconds (PX rounds
/// up). Non-integers are `NotInteger`; values `<= 0` or beyond
/// [`TTL_SECONDS_MAX`] are `InvalidExpire`.
fn expire_seconds(
    arg: &[u8],
    milliseconds: bool,
    command: &'static str,
) -> Result<u32, CommandError> {
    let amount = parse_redis_integer(arg).ok_or(CommandError::NotInteger)?;
    if amount <= 0 {
        return Err(CommandError::InvalidExpire(command));
    }
    let seconds = if milliseconds {
        amount / 1000 + i64::from(amount % 1000 != 0)
    } else {
        amount
    };
    if seconds > TTL_SECONDS_MAX {
        return Err(CommandError::InvalidExpire(command));
    }
    u32::try_from(seconds).map_err(|_| CommandError::InvalidExpire(command))
}

/// What a key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Missing,
    String,
    Hash,
}

/// The first records of a key.
struct Probe {
    /// The string's value when `(key, "")` exists (empty with `no_value`).
    string: Option<Vec<u8>>,
    /// Whether any field record exists.
    has_fields: bool,
}

impl Probe {
    fn kind(&self) -> Kind {
        if self.string.is_some() {
            Kind::String
        } else if self.has_fields {
            Kind::Hash
        } else {
            Kind::Missing
        }
    }
}

/// Reads up to `records` records of `hash_key` from its start in one round
/// trip: enough to tell its kind (with `records` >= 2) or whether it exists.
async fn probe(
    table: &Table,
    hash_key: &[u8],
    records: i32,
    no_value: bool,
) -> Result<Probe, CommandError> {
    let mut request = MultiGetRequest::range(hash_key.to_vec());
    request.max_kv_count = records;
    request.max_kv_size = 0;
    request.no_value = no_value;
    let result = table.multi_get(request).await?;
    let mut probe = Probe {
        string: None,
        has_fields: false,
    };
    for kv in result.kvs {
        if kv.sort_key.is_empty() {
            probe.string = Some(kv.value);
        } else {
            probe.has_fields = true;
        }
    }
    Ok(probe)
}

/// One page of a hash key's records after `after` (all of them from the
/// start, the string record included, when `after` is `None`).
async fn read_page(
    table: &Table,
    hash_key: &[u8],
    after: Option<&[u8]>,
    no_value: bool,
) -> Result<Vec<SortKeyValue>, CommandError> {
    let mut request = MultiGetRequest::range(hash_key.to_vec());
    request.max_kv_count = HASH_PAGE_RECORDS_MAX;
    request.max_kv_size = 0;
    request.no_value = no_value;
    if let Some(after) = after {
        request.start_sort_key = after.to_vec();
        request.start_inclusive = false;
    }
    Ok(table.multi_get(request).await?.kvs)
}

/// Every field of the hash `hash_key` (sorted by field), or `WrongType`
/// when the key is a string.
async fn read_hash(
    table: &Table,
    hash_key: &[u8],
    no_value: bool,
) -> Result<Vec<SortKeyValue>, CommandError> {
    let mut fields = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = read_page(table, hash_key, after.as_deref(), no_value).await?;
        let Some(last) = page.last() else {
            return Ok(fields);
        };
        after = Some(last.sort_key.clone());
        for kv in page {
            if kv.sort_key.is_empty() {
                return Err(CommandError::WrongType);
            }
            fields.push(kv);
        }
        if fields.len() > HASH_FIELDS_MAX {
            return Err(CommandError::HashTooLarge);
        }
    }
}

/// Deletes the records of `hash_key` (only its fields with
/// `fields_only`); returns whether any existed.
async fn delete_records(
    table: &Table,
    hash_key: &[u8],
    fields_only: bool,
) -> Result<bool, CommandError> {
    let rounds_max = HASH_FIELDS_MAX / HASH_PAGE_RECORDS_MAX as usize + 2;
    let mut deleted_any = false;
    let start: Option<&[u8]> = if fields_only { Some(b"") } else { None };
    for _ in 0..rounds_max {
        let page = read_page(table, hash_key, start, true).await?;
        if page.is_empty() {
            return Ok(deleted_any);
        }
        let sort_keys = page.into_iter().map(|kv| kv.sort_key).collect();
        if table.multi_del(hash_key, sort_keys).await? > 0 {
            deleted_any = true;
        }
    }
    Err(CommandError::HashTooLarge)
}

/// DEL: removes the key whatever it holds.
async fn delete_key(table: &Table, hash_key: &[u8]) -> Result<bool, CommandError> {
    delete_records(table, hash_key, false).await
}

async fn get(table: &Table, hash_key: &[u8]) -> CommandResult {
    if let Some(value) = table.get(hash_key, b"").await? {
        return Ok(Reply::Bulk(value));
    }
    // Not a string: a hash, or missing (or a string written meanwhile,
    // whose value the probe returns).
    let probe = probe(table, hash_key, 1, false).await?;
    match (probe.kind(), probe.string) {
        (Kind::String, Some(value)) => Ok(Reply::Bulk(value)),
        (Kind::Hash, _) => Err(CommandError::WrongType),
        _ => Ok(Reply::Nil),
    }
}

/// A field's value; the empty field is never a field (it is the string).
async fn get_field(
    table: &Table,
    hash_key: &[u8],
    field: &[u8],
) -> Result<Option<Vec<u8>>, ClientError> {
    if field.is_empty() {
        return Ok(None);
    }
    table.get(hash_key, field).await
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Condition {
    #[default]
    Always,
    NotExists,
    Exists,
}

#[derive(Clone, Copy, Debug, Default)]
struct SetOptions {
    condition: Condition,
    get: bool,
    ttl_seconds: u32,
}

async fn set_command(table: &Table, args: &[Vec<u8>]) -> CommandResult {
    let hash_key = key(&args[0])?;
    let value = &args[1];
    let mut options = SetOptions::default();
    let mut expire_given = false;
    let mut index = 2;
    while index < args.len() {
        let option = args[index].to_ascii_uppercase();
        match option.as_slice() {
            b"NX" if options.condition != Condition::Exists => {
                options.condition = Condition::NotExists
            }
            b"XX" if options.condition != Condition::NotExists => {
                options.condition = Condition::Exists
            }
            b"GET" => options.get = true,
            b"EX" | b"PX" if !expire_given => {
                let Some(amount) = args.get(index + 1) else {
                    return Err(CommandError::Syntax);
                };
                options.ttl_seconds = expire_seconds(amount, option == b"PX", "set")?;
                expire_given = true;
                index += 1;
            }
            b"KEEPTTL" => return Err(CommandError::Unsupported("SET KEEPTTL")),
            b"EXAT" | b"PXAT" => return Err(CommandError::Unsupported("SET EXAT/PXAT")),
            _ => return Err(CommandError::Syntax),
        }
        index += 1;
    }
    set_with(table, hash_key, value, options).await
}

/// SET without options: writes the string and removes any hash fields the
/// key had (the two run concurrently; see docs/redis.md on atomicity).
async fn set_plain(
    table: &Table,
    hash_key: &[u8],
    value: &[u8],
    ttl_seconds: u32,
) -> Result<(), CommandError> {
    let (set, fields) = futures::join!(
        table.set(hash_key, b"", value, ttl_seconds),
        delete_records(table, hash_key, true)
    );
    set?;
    fields?;
    Ok(())
}

/// SET with NX / XX / GET: the condition and the old value come from one
/// atomic check_and_set on the string record.
async fn set_with(
    table: &Table,
    hash_key: &[u8],
    value: &[u8],
    options: SetOptions,
) -> CommandResult {
    if options.condition == Condition::Always && !options.get {
        set_plain(table, hash_key, value, options.ttl_seconds).await?;
        return Ok(Reply::OK);
    }
    if probe(table, hash_key, 2, true).await?.kind() == Kind::Hash {
        if options.get {
            return Err(CommandError::WrongType);
        }
        return match options.condition {
            Condition::NotExists => Ok(Reply::Nil),
            Condition::Exists | Condition::Always => {
                set_plain(table, hash_key, value, options.ttl_seconds).await?;
                Ok(Reply::OK)
            }
        };
    }
    let check_type = match options.condition {
        Condition::Always => CheckType::NoCheck,
        Condition::NotExists => CheckType::ValueNotExist,
        Condition::Exists => CheckType::ValueExist,
    };
    let result = table
        .check_and_set(CheckAndSetRequest {
            hash_key: hash_key.to_vec(),
            check_sort_key: Vec::new(),
            check_type,
            check_operand: Vec::new(),
            set_sort_key: Vec::new(),
            set_value: value.to_vec(),
            set_ttl_seconds: options.ttl_seconds,
            return_check_value: options.get,
        })
        .await?;
    if options.get {
        if result.check_value_exist {
            return Ok(Reply::Bulk(result.check_value));
        }
        return Ok(Reply::Nil);
    }
    Ok(if result.set_succeeded {
        Reply::OK
    } else {
        Reply::Nil
    })
}

/// TTL (`scale` 1) and PTTL (`scale` 1000): -2 missing, -1 no TTL.
async fn ttl(table: &Table, hash_key: &[u8], scale: i64) -> Result<i64, CommandError> {
    let scaled = |seconds: i32| -> i64 {
        if seconds < 0 {
            -1
        } else {
            i64::from(seconds) * scale
        }
    };
    if let Some(seconds) = table.ttl(hash_key, b"").await? {
        return Ok(scaled(seconds));
    }
    let page = read_page(table, hash_key, Some(b""), true).await?;
    match page.first() {
        None => Ok(-2),
        Some(first) => match table.ttl(hash_key, &first.sort_key).await? {
            Some(seconds) => Ok(scaled(seconds)),
            None => Ok(-2),
        },
    }
}

async fn expire_command(table: &Table, args: &[Vec<u8>], milliseconds: bool) -> CommandResult {
    let hash_key = key(&args[0])?;
    if args.len() > 2 {
        return Err(CommandError::Unsupported("EXPIRE NX/XX/GT/LT"));
    }
    let amount = parse_redis_integer(&args[1]).ok_or(CommandError::NotInteger)?;
    if amount <= 0 {
        // Redis deletes a key whose new expire time is in the past.
        return Ok(Reply::Integer(i64::from(
            delete_key(table, hash_key).await?,
        )));
    }
    let command = if milliseconds { "pexpire" } else { "expire" };
    let ttl_seconds = expire_seconds(&args[1], milliseconds, command)?;
    set_ttl(table, hash_key, ttl_seconds, false).await
}

/// PERSIST: 1 when a TTL was removed.
async fn persist(table: &Table, hash_key: &[u8]) -> CommandResult {
    set_ttl(table, hash_key, 0, true).await
}

/// Rewrites the key's value(s) unchanged with a new TTL (0 = none). A
/// string is rewritten by check_and_set on its unchanged value, retried
/// on a lost race; a hash is rewritten with one multi_set of the fields
/// read (not atomic with concurrent field writes, see docs/redis.md).
/// With `only_if_expiring` (PERSIST) nothing is written for a key without
/// a TTL and the reply is 0.
async fn set_ttl(
    table: &Table,
    hash_key: &[u8],
    ttl_seconds: u32,
    only_if_expiring: bool,
) -> CommandResult {
    for _ in 0..EXPIRE_ATTEMPTS_MAX {
        let Some(value) = table.get(hash_key, b"").await? else {
            return set_hash_ttl(table, hash_key, ttl_seconds, only_if_expiring).await;
        };
        if only_if_expiring && table.ttl(hash_key, b"").await? == Some(-1) {
            return Ok(Reply::Integer(0));
        }
        let result = table
            .check_and_set(CheckAndSetRequest {
                hash_key: hash_key.to_vec(),
                check_sort_key: Vec::new(),
                check_type: CheckType::ValueBytesEqual,
                check_operand: value.clone(),
                set_sort_key: Vec::new(),
                set_value: value,
                set_ttl_seconds: ttl_seconds,
                return_check_value: false,
            })
            .await?;
        if result.set_succeeded {
            return Ok(Reply::Integer(1));
        }
    }
    Err(CommandError::Contended)
}

async fn set_hash_ttl(
    table: &Table,
    hash_key: &[u8],
    ttl_seconds: u32,
    only_if_expiring: bool,
) -> CommandResult {
    let fields = match read_hash(table, hash_key, false).await {
        Ok(fields) => fields,
        // The string appeared meanwhile: the key changed under us.
        Err(CommandError::WrongType) => return Err(CommandError::Contended),
        Err(other) => return Err(other),
    };
    let Some(first) = fields.first() else {
        return Ok(Reply::Integer(0));
    };
    if only_if_expiring && table.ttl(hash_key, &first.sort_key).await? == Some(-1) {
        return Ok(Reply::Integer(0));
    }
    table.multi_set(hash_key, fields, ttl_seconds).await?;
    Ok(Reply::Integer(1))
}

/// INCR / INCRBY / DECR / DECRBY through Markab's atomic incr on the string
/// record; Redis's type and integer rules are checked on a probe first.
async fn incr_by(table: &Table, hash_key: &[u8], increment: i64) -> CommandResult {
    let probe = probe(table, hash_key, 2, false).await?;
    if probe.kind() == Kind::Hash {
        return Err(CommandError::WrongType);
    }
    if let Some(value) = &probe.string {
        let current = parse_redis_integer(value).ok_or(CommandError::NotInteger)?;
        current
            .checked_add(increment)
            .ok_or(CommandError::Overflow)?;
    }
    match table.incr(hash_key, b"", increment, 0).await {
        Ok(value) => Ok(Reply::Integer(value)),
        Err(error) => Err(incr_error(error, CommandError::NotInteger)),
    }
}

/// Maps Markab's incr refusals onto Redis's words.
fn incr_error(error: ClientError, not_integer: CommandError) -> CommandError {
    match &error {
        ClientError::Server(op) if op.code == ErrorCode::InvalidArgument => {
            if op.message.contains("overflow") {
                CommandError::Overflow
            } else {
                not_integer
            }
        }
        _ => CommandError::from(error),
    }
}

async fn mget(table: &Table, args: &[Vec<u8>]) -> CommandResult {
    let keys: Vec<Key> = args
        .iter()
        .filter(|arg| !arg.is_empty())
        .map(|arg| Key::new(arg.clone(), Vec::new()))
        .collect();
    let records = if keys.is_empty() {
        Vec::new()
    } else {
        table.batch_get(keys).await?
    };
    let values: HashMap<Vec<u8>, Vec<u8>> = records
        .into_iter()
        .filter(|record| record.sort_key.is_empty())
        .map(|record| (record.hash_key, record.value))
        .collect();
    Ok(Reply::Array(
        args.iter()
            .map(|arg| values.get(arg).cloned().map_or(Reply::Nil, Reply::Bulk))
            .collect(),
    ))
}

/// MSET: each pair is a plain SET (the last value of a repeated key
/// wins), run concurrently; not atomic across keys.
async fn mset(table: &Table, spec: &CommandSpec, args: &[Vec<u8>]) -> CommandResult {
    if !args.len().is_multiple_of(2) {
        return Err(CommandError::Arity(spec.name));
    }
    let mut last: HashMap<&[u8], &[u8]> = HashMap::new();
    for pair in args.chunks_exact(2) {
        last.insert(key(&pair[0])?, &pair[1]);
    }
    let writes = last
        .into_iter()
        .map(|(hash_key, value)| set_plain(table, hash_key, value, 0));
    for result in futures::future::join_all(writes).await {
        result?;
    }
    Ok(Reply::OK)
}

/// HSET: the fields are written by one check_and_mutate that also checks
/// the key is not a string (atomic); the count of new fields comes from a
/// read just before.
async fn hset(table: &Table, spec: &CommandSpec, args: &[Vec<u8>]) -> CommandResult {
    if args.len().is_multiple_of(2) {
        return Err(CommandError::Arity(spec.name));
    }
    let hash_key = key(&args[0])?;
    let mut values: HashMap<&[u8], &[u8]> = HashMap::new();
    for pair in args[1..].chunks_exact(2) {
        if pair[0].is_empty() {
            return Err(CommandError::EmptyField);
        }
        values.insert(&pair[0], &pair[1]);
    }
    let mut request = MultiGetRequest::range(hash_key.to_vec());
    request.sort_keys = values.keys().map(|field| field.to_vec()).collect();
    request.max_kv_count = 0;
    request.max_kv_size = 0;
    request.no_value = true;
    let existing = table.multi_get(request).await?.kvs.len();
    let mutations = values
        .iter()
        .map(|(field, value)| Mutation::Put {
            sort_key: field.to_vec(),
            value: value.to_vec(),
            ttl_seconds: 0,
        })
        .collect();
    let result = table
        .check_and_mutate(CheckAndMutateRequest {
            hash_key: hash_key.to_vec(),
            check_sort_key: Vec::new(),
            check_type: CheckType::ValueNotExist,
            check_operand: Vec::new(),
            mutations,
            return_check_value: false,
        })
        .await?;
    if !result.set_succeeded {
        return Err(CommandError::WrongType);
    }
    Ok(Reply::Integer(values.len().saturating_sub(existing) as i64))
}

async fn hmget(table: &Table, args: &[Vec<u8>]) -> CommandResult {
    let hash_key = key(&args[0])?;
    let fields: Vec<Vec<u8>> = args[1..]
        .iter()
        .filter(|field| !field.is_empty())
        .cloned()
        .collect();
    let (found, string) = futures::join!(
        async {
            if fields.is_empty() {
                Ok(Vec::new())
            } else {
                table
                    .multi_get_sort_keys(hash_key, fields)
                    .await
                    .map(|result| result.kvs)
            }
        },
        table.exist(hash_key, b"")
    );
    if string? {
        return Err(CommandError::WrongType);
    }
    let values: HashMap<Vec<u8>, Vec<u8>> = found?
        .into_iter()
        .map(|kv| (kv.sort_key, kv.value))
        .collect();
    Ok(Reply::Array(
        args[1..]
            .iter()
            .map(|field| values.get(field).cloned().map_or(Reply::Nil, Reply::Bulk))
            .collect(),
    ))
}

/// HINCRBY through Markab's atomic incr on the field record.
async fn hincrby(table: &Table, args: &[Vec<u8>]) -> CommandResult {
    let hash_key = key(&args[0])?;
    let field = args[1].as_slice();
    if field.is_empty() {
        return Err(CommandError::EmptyField);
    }
    let increment = parse_redis_integer(&args[2]).ok_or(CommandError::NotInteger)?;
    let (current, string) = futures::join!(table.get(hash_key, field), table.exist(hash_key, b""));
    if string? {
        return Err(CommandError::WrongType);
    }
    if let Some(value) = current? {
        let current = parse_redis_integer(&value).ok_or(CommandError::HashNotInteger)?;
        current
            .checked_add(increment)
            .ok_or(CommandError::Overflow)?;
    }
    match table.incr(hash_key, field, increment, 0).await {
        Ok(value) => Ok(Reply::Integer(value)),
        Err(error) => Err(incr_error(error, CommandError::HashNotInteger)),
    }
}

fn command_command(args: &[Vec<u8>]) -> CommandResult {
    let Some(subcommand) = args.first() else {
        return Ok(Reply::Array(Vec::new()));
    };
    match subcommand.to_ascii_uppercase().as_slice() {
        b"COUNT" => Ok(Reply::Integer(COMMANDS.len() as i64)),
        b"DOCS" | b"INFO" => Ok(Reply::Array(Vec::new())),
        _ => Err(CommandError::UnknownSubcommand {
            command: "COMMAND",
            subcommand: String::from_utf8_lossy(subcommand).into_owned(),
        }),
    }
}

fn client_command(args: &[Vec<u8>]) -> CommandResult {
    let subcommand = args[0].to_ascii_uppercase();
    match (subcommand.as_slice(), args.len()) {
        (b"SETNAME", 2) => Ok(Reply::OK),
        (b"SETINFO", 3) => Ok(Reply::OK),
        (b"SETNAME", _) => Err(CommandError::Arity("client|setname")),
        (b"SETINFO", _) => Err(CommandError::Arity("client|setinfo")),
        _ => Err(CommandError::UnknownSubcommand {
            command: "CLIENT",
            subcommand: String::from_utf8_lossy(&args[0]).into_owned(),
        }),
    }
}

/// The parameters CONFIG GET answers: enough for redis-benchmark.
const CONFIG_PARAMETERS: &[(&str, &str)] = &[("save", ""), ("appendonly", "no")];

fn config_command(args: &[Vec<u8>]) -> CommandResult {
    if !args[0].eq_ignore_ascii_case(b"GET") {
        return Err(CommandError::UnknownSubcommand {
            command: "CONFIG",
            subcommand: String::from_utf8_lossy(&args[0]).into_owned(),
        });
    }
    if args.len() < 2 {
        return Err(CommandError::Arity("config|get"));
    }
    let mut items = Vec::new();
    for (name, value) in CONFIG_PARAMETERS {
        if args[1..]
            .iter()
            .any(|pattern| glob_match(&pattern.to_ascii_lowercase(), name.as_bytes()))
        {
            items.push(Reply::Bulk(name.as_bytes().to_vec()));
            items.push(Reply::Bulk(value.as_bytes().to_vec()));
        }
    }
    Ok(Reply::Array(items))
}

/// Glob matching with `*` and `?` (enough for CONFIG GET patterns).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((&byte, rest)) => text.first() == Some(&byte) && glob_match(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|item| item.as_bytes().to_vec()).collect()
    }

    #[test]
    fn unknown_command_wording() {
        // The unknown command error matches Redis 7 byte for byte, including the 128-byte bound.
        assert_eq!(
            unknown_command_error(&args(&["foo", "a", "b"])),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            unknown_command_error(&args(&["foo"])),
            "ERR unknown command 'foo', with args beginning with: "
        );
        let long = "x".repeat(300);
        let error = unknown_command_error(&args(&["foo", &long, "next"]));
        assert!(
            error.ends_with(&format!("'{}' ", "x".repeat(128))),
            "{error}"
        );
    }

    #[test]
    fn lookup_is_case_insensitive_and_arity_matches_redis() {
        // Names match in any case and every entry has Redis's arity for it.
        assert_eq!(lookup(b"GeT").unwrap().arity, 2);
        assert_eq!(lookup(b"SET").unwrap().arity, -3);
        assert_eq!(lookup(b"hset").unwrap().arity, -4);
        assert!(lookup(b"flushall").is_none());
        let mut names: Vec<&str> = COMMANDS.iter().map(|spec| spec.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len(), "duplicate command names");
    }

    #[test]
    fn expire_seconds_rounding_and_bounds() {
        // PX rounds up to whole seconds; zero, negative and huge values are refused like Redis.
        assert_eq!(expire_seconds(b"1500", true, "set").unwrap(), 2);
        assert_eq!(expire_seconds(b"1", true, "set").unwrap(), 1);
        assert_eq!(expire_seconds(b"10", false, "set").unwrap(), 10);
        assert!(matches!(
            expire_seconds(b"0", false, "set"),
            Err(CommandError::InvalidExpire("set"))
        ));
        assert!(matches!(
            expire_seconds(b"abc", false, "set"),
            Err(CommandError::NotInteger)
        ));
        assert!(matches!(
            expire_seconds(b"9223372036854775807", false, "set"),
            Err(CommandError::InvalidExpire("set"))
        ));
    }

    #[test]
    fn config_get_patterns() {
        // CONFIG GET answers save and appendonly by exact name or glob, and nothing else.
        let reply = config_command(&args(&["GET", "save"])).unwrap();
        assert_eq!(
            reply,
            Reply::Array(vec![Reply::Bulk(b"save".to_vec()), Reply::Bulk(Vec::new())])
        );
        let Reply::Array(all) = config_command(&args(&["get", "*"])).unwrap() else {
            panic!("not an array")
        };
        assert_eq!(all.len(), 4);
        assert_eq!(
            config_command(&args(&["GET", "maxmemory"])).unwrap(),
            Reply::Array(Vec::new())
        );
        assert!(config_command(&args(&["SET", "a", "b"])).is_err());
    }

    #[test]
    fn error_lines_use_redis_words() {
        // Error variants display as the exact lines Redis sends.
        assert_eq!(
            CommandError::Arity("get").to_string(),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            CommandError::WrongType.to_string(),
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        );
        assert_eq!(
            CommandError::UnknownSubcommand {
                command: "CLIENT",
                subcommand: "foo".into()
            }
            .to_string(),
            "ERR unknown subcommand 'foo'. Try CLIENT HELP."
        );
        let timeout = CommandError::from(ClientError::Timeout {
            operation: "get",
            timeout_ms: 5,
        });
        assert!(
            timeout.to_string().starts_with("TRYAGAIN markab: "),
            "{timeout}"
        );
    }
}
