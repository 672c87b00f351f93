//! Running the admin commands (answered by meta) and printing their
//! results as aligned text tables.

use std::io::Write;

use markab_wire::{NodeInfo, TableDescription, TableInfo, TableStatus};

use super::command::Command;
use crate::client::Client;

/// Runs an admin command (one for which `Command::needs_table` is false,
/// other than help, exit and use) and writes its result to `out`.
/// `current_table` is the table `set_app_envs` / `get_app_envs` work on.
pub(super) async fn execute(
    client: &Client,
    current_table: Option<&str>,
    command: Command,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let current = || {
        current_table.ok_or_else(|| {
            anyhow::anyhow!(
                "no current table: choose one with `use NAME` (or start with --table NAME)"
            )
        })
    };
    match command {
        Command::ClusterInfo => {
            let pairs = client.cluster_info().await?;
            write_pairs(&pairs, "(meta reported nothing)", out)?;
        }
        Command::Nodes => write_nodes(&client.list_nodes().await?, out)?,
        Command::Balancer(request) => {
            let pairs = client.balancer(request).await?;
            write_pairs(&pairs, "(meta reported nothing)", out)?;
        }
        Command::Backup(request) => {
            let pairs = client.backup(request).await?;
            write_pairs(&pairs, "(no backups)", out)?;
        }
        Command::Split(request) => {
            let pairs = client.partition_split(request).await?;
            write_pairs(&pairs, "(meta reported nothing)", out)?;
        }
        Command::Dup(request) => {
            let pairs = client.dup(request).await?;
            write_pairs(&pairs, "(no duplications)", out)?;
        }
        Command::ListTables { include_dropped } => {
            write_tables(&client.list_tables(include_dropped).await?, out)?;
        }
        Command::CreateTable(request) => {
            let info = client.create_table(request).await?;
            writeln!(
                out,
                "Table {} created: app id {}, {} partitions, {} replicas.",
                info.name, info.app_id, info.partition_count, info.replica_count
            )?;
        }
        Command::DropTable {
            table,
            reserve_seconds,
        } => {
            client.drop_table(&table, reserve_seconds).await?;
            match reserve_seconds {
                Some(seconds) => writeln!(
                    out,
                    "Table {table} dropped; its data is held {seconds} s (ls -a shows its app id \
                     for recall)."
                )?,
                None => writeln!(
                    out,
                    "Table {table} dropped; its data is held for meta's hold time (ls -a shows \
                     its app id for recall)."
                )?,
            }
        }
        Command::RecallTable { app_id, new_name } => {
            let info = client.recall_table(app_id, &new_name).await?;
            writeln!(
                out,
                "Table {} recalled (app id {}, {} partitions).",
                info.name, info.app_id, info.partition_count
            )?;
        }
        Command::DescribeTable { table } => {
            write_description(&client.describe_table(&table).await?, out)?;
        }
        Command::SetAppEnvs { envs } => {
            let table = current()?;
            let count = envs.len();
            client.set_app_envs(table, envs).await?;
            writeln!(out, "OK, {count} env entries set on {table}.")?;
        }
        Command::GetAppEnvs => {
            let pairs = client.get_app_envs(current()?).await?;
            write_pairs(&pairs, "(no envs)", out)?;
        }
        other => anyhow::bail!("{other:?} is not an admin command"),
    }
    Ok(())
}

/// `key : value` lines, keys padded to one width; `empty` when there are
/// none.
fn write_pairs(
    pairs: &[(String, String)],
    empty: &str,
    out: &mut (dyn Write + Send),
) -> std::io::Result<()> {
    if pairs.is_empty() {
        return writeln!(out, "{empty}");
    }
    let width = pairs.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    for (key, value) in pairs {
        writeln!(out, "{key:<width$} : {value}")?;
    }
    Ok(())
}

/// Writes rows as columns padded to their widest cell, two spaces apart.
fn write_columns(rows: &[Vec<String>], out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[column]));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn write_nodes(nodes: &[NodeInfo], out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    if nodes.is_empty() {
        return writeln!(out, "(no nodes have registered)");
    }
    let mut rows = vec![vec![
        "node".to_string(),
        "status".to_string(),
        "replicas".to_string(),
        "primaries".to_string(),
        "shards".to_string(),
        "replicas_per_shard".to_string(),
        "primaries_per_shard".to_string(),
        "last_beacon_ms_ago".to_string(),
    ]];
    let list = |counts: &[i32]| {
        counts
            .iter()
            .map(|count| count.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    for node in nodes {
        let status = match (node.alive, node.removing) {
            (true, false) => "ALIVE",
            (true, true) => "REMOVING",
            (false, _) => "UNALIVE",
        };
        rows.push(vec![
            node.node.clone(),
            status.to_string(),
            node.replica_count.to_string(),
            node.primary_count.to_string(),
            node.shard_addresses.len().to_string(),
            list(&node.shard_replica_counts),
            list(&node.shard_primary_counts),
            node.last_beacon_ms_ago.to_string(),
        ]);
    }
    write_columns(&rows, out)?;
    let alive = nodes.iter().filter(|node| node.alive).count();
    writeln!(out, "\n{} nodes, {alive} alive.", nodes.len())
}

fn status_name(status: TableStatus) -> &'static str {
    match status {
        TableStatus::Available => "AVAILABLE",
        TableStatus::Dropped => "DROPPED",
    }
}

fn write_tables(tables: &[TableInfo], out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    if tables.is_empty() {
        return writeln!(out, "(no tables)");
    }
    let mut rows = vec![vec![
        "app_id".to_string(),
        "status".to_string(),
        "name".to_string(),
        "partitions".to_string(),
        "replicas".to_string(),
        "created (UTC)".to_string(),
        "data held until (UTC)".to_string(),
    ]];
    for table in tables {
        rows.push(vec![
            table.app_id.to_string(),
            status_name(table.status).to_string(),
            table.name.clone(),
            table.partition_count.to_string(),
            table.replica_count.to_string(),
            utc_time(table.create_time_s),
            match table.status {
                TableStatus::Dropped => utc_time(table.drop_expire_s),
                TableStatus::Available => "-".to_string(),
            },
        ]);
    }
    write_columns(&rows, out)?;
    writeln!(out, "\n{} tables.", tables.len())
}

fn write_description(
    description: &TableDescription,
    out: &mut (dyn Write + Send),
) -> std::io::Result<()> {
    let info = &description.info;
    let envs = info
        .envs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let envs = if envs.is_empty() {
        "-".to_string()
    } else {
        envs
    };
    write_pairs(
        &[
            ("app_name".to_string(), info.name.clone()),
            ("app_id".to_string(), info.app_id.to_string()),
            ("status".to_string(), status_name(info.status).to_string()),
            (
                "partition_count".to_string(),
                info.partition_count.to_string(),
            ),
            ("replica_count".to_string(), info.replica_count.to_string()),
            ("create_time".to_string(), utc_time(info.create_time_s)),
            ("envs".to_string(), envs),
        ],
        "",
        out,
    )?;
    writeln!(out)?;
    let mut rows = vec![vec![
        "pidx".to_string(),
        "ballot".to_string(),
        "primary".to_string(),
        "secondaries".to_string(),
        "learners".to_string(),
    ]];
    for partition in &description.partitions {
        rows.push(vec![
            partition.partition_index.to_string(),
            partition.ballot.to_string(),
            if partition.primary.is_empty() {
                "-".to_string()
            } else {
                partition.primary.clone()
            },
            if partition.secondaries.is_empty() {
                "-".to_string()
            } else {
                partition.secondaries.join(",")
            },
            if partition.learners.is_empty() {
                "-".to_string()
            } else {
                partition.learners.join(",")
            },
        ]);
    }
    write_columns(&rows, out)?;
    let unplaced = description
        .partitions
        .iter()
        .filter(|partition| partition.primary.is_empty())
        .count();
    writeln!(
        out,
        "\n{} partitions, {unplaced} without a primary.",
        description.partitions.len()
    )
}

/// `YYYY-MM-DD HH:MM:SS` for Unix seconds (UTC); `-` for 0.
fn utc_time(unix_seconds: u64) -> String {
    if unix_seconds == 0 {
        return "-".to_string();
    }
    let days = (unix_seconds / 86_400) as i64;
    let seconds_of_day = unix_seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        seconds_of_day / 3600,
        seconds_of_day % 3600 / 60,
        seconds_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use markab_wire::PartitionConfig;

    fn text(write: impl FnOnce(&mut (dyn Write + Send)) -> std::io::Result<()>) -> String {
        let mut out = Vec::new();
        write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    // Proves Unix seconds print as UTC calendar times, leap days included.
    #[test]
    fn utc_times() {
        assert_eq!(utc_time(0), "-");
        assert_eq!(utc_time(1), "1970-01-01 00:00:01");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc_time(1_700_000_000), "2023-11-14 22:13:20");
    }

    // Proves app prints the table's info and one row per partition with
    // ballot, primary and secondaries.
    #[test]
    fn description_lists_partitions() {
        let description = TableDescription {
            info: TableInfo {
                app_id: 4,
                name: "orders".into(),
                partition_count: 2,
                replica_count: 3,
                envs: vec![("k".into(), "v".into())],
                ..TableInfo::default()
            },
            partitions: vec![
                PartitionConfig {
                    partition_index: 0,
                    ballot: 3,
                    primary: "127.0.0.1:34801".into(),
                    secondaries: vec!["127.0.0.1:34811".into(), "127.0.0.1:34821".into()],
                    learners: vec!["127.0.0.1:34831".into()],
                },
                PartitionConfig {
                    partition_index: 1,
                    ballot: 1,
                    primary: String::new(),
                    secondaries: vec![],
                    learners: vec![],
                },
            ],
        };
        let printed = text(|out| write_description(&description, out));
        assert!(printed.contains("app_name        : orders"), "{printed}");
        assert!(printed.contains("envs            : k=v"), "{printed}");
        assert!(
            printed.contains(
                "pidx  ballot  primary          secondaries                      learners"
            ),
            "{printed}"
        );
        assert!(
            printed.contains(
                "0     3       127.0.0.1:34801  127.0.0.1:34811,127.0.0.1:34821  127.0.0.1:34831"
            ),
            "{printed}"
        );
        assert!(
            printed.contains("1     1       -                -"),
            "{printed}"
        );
        assert!(
            printed.contains("2 partitions, 1 without a primary."),
            "{printed}"
        );
    }

    // Proves nodes and ls print a header, one row each and a summary, and
    // say so when there is nothing.
    #[test]
    fn nodes_and_tables_tables() {
        let nodes = vec![
            NodeInfo {
                node: "127.0.0.1:34801".into(),
                shard_addresses: vec!["127.0.0.1:34801".into(), "127.0.0.1:34802".into()],
                alive: true,
                replica_count: 5,
                last_beacon_ms_ago: 120,
                ..NodeInfo::default()
            },
            NodeInfo {
                node: "127.0.0.1:34811".into(),
                alive: false,
                ..NodeInfo::default()
            },
        ];
        let printed = text(|out| write_nodes(&nodes, out));
        assert!(printed.contains("127.0.0.1:34801  ALIVE    5"), "{printed}");
        assert!(printed.contains("UNALIVE"), "{printed}");
        assert!(printed.contains("2 nodes, 1 alive."), "{printed}");
        assert_eq!(
            text(|out| write_nodes(&[], out)),
            "(no nodes have registered)\n"
        );

        let tables = vec![TableInfo {
            app_id: 2,
            name: "temp".into(),
            status: TableStatus::Dropped,
            partition_count: 8,
            replica_count: 3,
            create_time_s: 1,
            drop_expire_s: 86_400,
            ..TableInfo::default()
        }];
        let printed = text(|out| write_tables(&tables, out));
        assert!(printed.contains("DROPPED"), "{printed}");
        assert!(printed.contains("1970-01-02 00:00:00"), "{printed}");
        assert!(printed.contains("1 tables."), "{printed}");
        assert_eq!(text(|out| write_tables(&[], out)), "(no tables)\n");
    }

    // Proves pairs are aligned on their keys.
    #[test]
    fn pairs_align() {
        let pairs = vec![
            ("meta".to_string(), "127.0.0.1:34601".to_string()),
            ("node_count".to_string(), "3".to_string()),
        ];
        assert_eq!(
            text(|out| write_pairs(&pairs, "-", out)),
            "meta       : 127.0.0.1:34601\nnode_count : 3\n"
        );
        assert_eq!(
            text(|out| write_pairs(&[], "(no envs)", out)),
            "(no envs)\n"
        );
    }
}
