//! Running parsed commands against a table and printing their results.

use std::io::Write;

use futures::StreamExt;
use markab_wire::MultiGetRequest;

use super::command::Command;
use super::escape::quote;
use crate::client::Table;

/// Runs a data command (one for which `Command::needs_table` holds) on
/// `table` and writes its result to `out`.
pub(super) async fn execute(
    table: &Table,
    command: Command,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    match command {
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
        | Command::GetAppEnvs => anyhow::bail!("{command:?} is not a data command"),
        Command::Set {
            hash_key,
            sort_key,
            value,
            ttl_seconds,
        } => {
            table.set(&hash_key, &sort_key, &value, ttl_seconds).await?;
            writeln!(out, "OK")?;
        }
        Command::Get { hash_key, sort_key } => match table.get(&hash_key, &sort_key).await? {
            Some(value) => writeln!(out, "{}", record_line(&hash_key, &sort_key, Some(&value)))?,
            None => writeln!(out, "Not found")?,
        },
        Command::Del { hash_key, sort_key } => {
            table.del(&hash_key, &sort_key).await?;
            writeln!(out, "OK")?;
        }
        Command::Exist { hash_key, sort_key } => {
            let exists = table.exist(&hash_key, &sort_key).await?;
            writeln!(out, "{}", if exists { "True" } else { "False" })?;
        }
        Command::Ttl { hash_key, sort_key } => match table.ttl(&hash_key, &sort_key).await? {
            None => writeln!(out, "Not found")?,
            Some(seconds) if seconds < 0 => writeln!(out, "Infinite")?,
            Some(seconds) => writeln!(out, "{seconds}")?,
        },
        Command::MultiSet { hash_key, kvs } => {
            table.multi_set(&hash_key, kvs, 0).await?;
            writeln!(out, "OK")?;
        }
        Command::MultiGet(request) => multi_get(table, request, out).await?,
        Command::MultiDel {
            hash_key,
            sort_keys,
        } => {
            let deleted = table.multi_del(&hash_key, sort_keys).await?;
            writeln!(out, "{deleted} key-value pairs deleted.")?;
        }
        Command::SortKeyCount { hash_key } => {
            writeln!(out, "{}", table.sortkey_count(&hash_key).await?)?;
        }
        Command::Incr {
            hash_key,
            sort_key,
            increment,
            ttl_seconds,
        } => {
            let value = table
                .incr(&hash_key, &sort_key, increment, ttl_seconds)
                .await?;
            writeln!(out, "{value}")?;
        }
        Command::CheckAndSet(request) => {
            let result = table.check_and_set(request).await?;
            if result.set_succeeded {
                writeln!(out, "Set succeeded.")?;
            } else {
                writeln!(out, "Set failed: the check did not pass.")?;
            }
            if result.check_value_returned {
                if result.check_value_exist {
                    writeln!(out, "Check value: {}", quote(&result.check_value))?;
                } else {
                    writeln!(out, "Check value does not exist.")?;
                }
            }
        }
        Command::HashScan {
            hash_key,
            start_sort_key,
            stop_sort_key,
            options,
            max_count,
        } => {
            let no_value = options.no_value;
            let records = table.hash_scan(&hash_key, &start_sort_key, &stop_sort_key, options);
            print_records(records, max_count, no_value, out).await?;
        }
        Command::FullScan { options, max_count } => {
            let no_value = options.no_value;
            let records = table.full_scan(options);
            print_records(records, max_count, no_value, out).await?;
        }
        Command::CountData { options } => {
            let count = table.count(options).await?;
            writeln!(out, "Count done, total {count} rows.")?;
        }
    }
    Ok(())
}

async fn multi_get(
    table: &Table,
    request: MultiGetRequest,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let hash_key = request.hash_key.clone();
    let no_value = request.no_value;
    let result = table.multi_get(request).await?;
    for kv in &result.kvs {
        let value = (!no_value).then_some(kv.value.as_slice());
        writeln!(out, "{}", record_line(&hash_key, &kv.sort_key, value))?;
    }
    writeln!(out)?;
    write!(out, "{} key-value pairs got", result.kvs.len())?;
    if result.incomplete {
        write!(out, ", incomplete (a count or size bound cut it short)")?;
    }
    writeln!(out, ".")?;
    Ok(())
}

async fn print_records(
    records: impl futures::Stream<Item = Result<markab_wire::Record, crate::client::ClientError>>,
    max_count: u64,
    no_value: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    futures::pin_mut!(records);
    let mut printed: u64 = 0;
    while printed < max_count {
        let Some(record) = records.next().await else {
            break;
        };
        let record = record?;
        let value = (!no_value).then_some(record.value.as_slice());
        writeln!(
            out,
            "{}",
            record_line(&record.hash_key, &record.sort_key, value)
        )?;
        printed += 1;
    }
    // Dropping the stream here clears a cursor left open by -n.
    writeln!(out)?;
    writeln!(out, "{printed} key-value pairs got.")?;
    Ok(())
}

/// `"hk" : "sk" => "value"`, or `"hk" : "sk"` without a value; every part
/// escaped so the line can be pasted back into a command.
pub(super) fn record_line(hash_key: &[u8], sort_key: &[u8], value: Option<&[u8]>) -> String {
    match value {
        Some(value) => format!(
            "{} : {} => {}",
            quote(hash_key),
            quote(sort_key),
            quote(value)
        ),
        None => format!("{} : {}", quote(hash_key), quote(sort_key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::escape::tokenize;

    // Proves record lines escape their parts and can be tokenized back.
    #[test]
    fn record_line_is_pasteable() {
        let line = record_line(b"h k", b"s\x00", Some(b"v\"\xff"));
        assert_eq!(line, r#""h k" : "s\x00" => "v\"\xFF""#);
        let tokens = tokenize(&line).unwrap();
        assert_eq!(tokens[0], b"h k".to_vec());
        assert_eq!(tokens[2], b"s\x00".to_vec());
        assert_eq!(tokens[4], b"v\"\xff".to_vec());
        assert_eq!(record_line(b"h", b"s", None), r#""h" : "s""#);
    }
}
