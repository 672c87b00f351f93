//! `markab shell`: a data and admin shell in Pegasus's command syntax.
//!
//! ```text
//! markab shell --meta 127.0.0.1:34601 --table temp
//! markab shell --meta 127.0.0.1:34601 -e 'create orders -p 16'
//! markab shell --node 127.0.0.1:34801 --table temp -e 'get user1 name'
//! ```
//!
//! Keys and values are binary-safe: see [`escape`] for the quoting and
//! escapes, and docs/client.md for every command.

mod admin;
pub mod command;
pub mod escape;
mod execute;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Editor, Helper};

use crate::client::{Client, ClientOptions, Table};
use command::{parse, Command, COMMANDS};

/// History file name, in the home directory.
const HISTORY_FILE_NAME: &str = ".markab_history";
/// Most history entries kept.
const HISTORY_ENTRIES_MAX: usize = 10_000;

/// Arguments of `markab shell`: exactly one of `--meta` (a cluster) and
/// `--node` (a standalone node).
#[derive(clap::Args, Clone, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["node", "meta"])))]
pub struct ShellArgs {
    /// `host:port` of a standalone node (any of its shards).
    #[arg(long)]
    pub node: Option<String>,
    /// `host:port` of the cluster's meta servers, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub meta: Vec<String>,
    /// The table data commands work on (`use NAME` switches it).
    #[arg(long)]
    pub table: Option<String>,
    /// Run this one command, print its result and exit (non-zero on error).
    #[arg(short = 'e', long = "execute")]
    pub execute: Option<String>,
    /// Operation timeout in milliseconds.
    #[arg(long, default_value_t = SHELL_TIMEOUT_MS_DEFAULT)]
    pub timeout_ms: u64,
}

/// Shell operation timeout unless `--timeout-ms` says otherwise.
pub const SHELL_TIMEOUT_MS_DEFAULT: u64 = 5000;

impl Default for ShellArgs {
    /// No target, no table, interactive, a 5 s timeout.
    fn default() -> ShellArgs {
        ShellArgs {
            node: None,
            meta: Vec::new(),
            table: None,
            execute: None,
            timeout_ms: SHELL_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// Runs the shell: one command with `-e`, otherwise an interactive prompt.
/// Errors of single commands are printed; only setup errors (no meta or
/// node reachable, the `--table` is unknown) are returned.
pub async fn run(args: ShellArgs) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let options = ClientOptions {
        operation_timeout: timeout,
        meta_timeout: timeout,
        ..ClientOptions::default()
    };
    let (client, target) = match (&args.node, args.meta.is_empty()) {
        (Some(node), true) => {
            let client = Client::connect(node, options)
                .await
                .with_context(|| format!("connecting to node {node}"))?;
            (client, node.clone())
        }
        (None, false) => {
            let target = args.meta.join(",");
            let client = Client::connect_meta(&args.meta, options)
                .await
                .with_context(|| format!("connecting to meta {target}"))?;
            (client, format!("meta {target}"))
        }
        _ => anyhow::bail!("give exactly one of --meta HOST:PORT[,HOST:PORT] and --node HOST:PORT"),
    };
    let mut session = Session {
        client,
        table: None,
        target,
    };
    if let Some(name) = &args.table {
        let table = session
            .client
            .open_table(name)
            .await
            .with_context(|| format!("opening table {name}"))?;
        session.table = Some(table);
    }

    if let Some(line) = &args.execute {
        let mut stdout = std::io::stdout();
        return Ok(match run_line(&mut session, line, &mut stdout).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        });
    }
    interactive(&mut session).await
}

/// The shell's state between lines.
struct Session {
    client: Client,
    /// The table data commands work on, if one is chosen.
    table: Option<Table>,
    /// What the shell is connected to, for messages.
    target: String,
}

impl Session {
    fn prompt(&self) -> String {
        match &self.table {
            Some(table) => format!("{}> ", table.name()),
            None => "markab> ".to_string(),
        }
    }
}

/// What a line asked the shell to do next.
enum Next {
    Continue,
    Exit,
}

/// Parses and executes one line, writing its output to `out`.
async fn run_line(
    session: &mut Session,
    line: &str,
    out: &mut (dyn std::io::Write + Send),
) -> anyhow::Result<Next> {
    let Some(command) = parse(line)? else {
        return Ok(Next::Continue);
    };
    match command {
        Command::Exit => Ok(Next::Exit),
        Command::Help => {
            write_help(out)?;
            Ok(Next::Continue)
        }
        Command::Use { table } => {
            let opened = session
                .client
                .open_table(&table)
                .await
                .with_context(|| format!("opening table {table}"))?;
            writeln!(
                out,
                "OK, current table is {} (app id {}, {} partitions).",
                opened.name(),
                opened.app_id(),
                opened.partition_count()
            )?;
            session.table = Some(opened);
            Ok(Next::Continue)
        }
        command if command.needs_table() => {
            let Some(table) = &session.table else {
                anyhow::bail!(
                    "no current table: choose one with `use NAME` (or start with --table NAME)"
                );
            };
            execute::execute(table, command, out).await?;
            Ok(Next::Continue)
        }
        command => {
            let current = session.table.as_ref().map(|table| table.name());
            admin::execute(&session.client, current, command, out).await?;
            Ok(Next::Continue)
        }
    }
}

fn write_help(out: &mut (dyn std::io::Write + Send)) -> std::io::Result<()> {
    writeln!(
        out,
        "Commands (keys and values may be quoted; escapes: \\\\ \\\" \\n \\t \\r \\0 \\xHH \\ ):"
    )?;
    for spec in COMMANDS {
        writeln!(out, "  {:<60} {}", spec.usage, spec.summary)?;
    }
    Ok(())
}

async fn interactive(session: &mut Session) -> anyhow::Result<ExitCode> {
    let config = rustyline::Config::builder()
        .max_history_size(HISTORY_ENTRIES_MAX)
        .context("history size")?
        .auto_add_history(false)
        .build();
    let mut editor: Editor<CommandCompleter, rustyline::history::DefaultHistory> =
        Editor::with_config(config).context("starting the line editor")?;
    editor.set_helper(Some(CommandCompleter));
    let history_path =
        std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(HISTORY_FILE_NAME));
    if let Some(path) = &history_path {
        // A missing or unreadable history file is not an error.
        let _ = editor.load_history(path);
    }
    match &session.table {
        Some(table) => println!(
            "markab shell: table {} on {} ({} partitions). Type help for commands.",
            table.name(),
            session.target,
            table.partition_count()
        ),
        None => println!(
            "markab shell: connected to {}; no current table (use NAME). Type help for commands.",
            session.target
        ),
    }
    loop {
        // readline blocks: run it off the async worker threads.
        let prompt_for_line = session.prompt();
        let (returned_editor, line) = tokio::task::spawn_blocking(move || {
            let line = editor.readline(&prompt_for_line);
            (editor, line)
        })
        .await
        .context("line editor task")?;
        editor = returned_editor;
        let line = match line {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(error) => return Err(error).context("reading a line"),
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
        }
        let mut stdout = std::io::stdout();
        match run_line(session, &line, &mut stdout).await {
            Ok(Next::Continue) => {}
            Ok(Next::Exit) => break,
            // Interactive errors are reported and the session goes on.
            Err(error) => eprintln!("error: {error:#}"),
        }
    }
    if let Some(path) = &history_path {
        let _ = editor.save_history(path);
    }
    Ok(ExitCode::SUCCESS)
}

/// Tab completion of command names (the first word of a line).
struct CommandCompleter;

impl Completer for CommandCompleter {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        position: usize,
        _context: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(complete_command(line, position))
    }
}

/// Command names that complete the word at `position`, when that word is
/// the line's first.
fn complete_command(line: &str, position: usize) -> (usize, Vec<String>) {
    let before = &line[..position.min(line.len())];
    let start = before.len() - before.trim_start().len();
    let word = &before[start..];
    if word.contains(char::is_whitespace) {
        return (position, Vec::new());
    }
    let candidates = COMMANDS
        .iter()
        .filter(|spec| spec.name.starts_with(word))
        .map(|spec| spec.name.to_string())
        .collect();
    (start, candidates)
}

impl Hinter for CommandCompleter {
    type Hint = String;
}
impl Highlighter for CommandCompleter {}
impl Validator for CommandCompleter {}
impl Helper for CommandCompleter {}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the first word completes to matching command names only.
    #[test]
    fn completes_first_word_only() {
        let (start, candidates) = complete_command("multi_g", 7);
        assert_eq!(start, 0);
        assert_eq!(
            candidates,
            vec!["multi_get".to_string(), "multi_get_range".to_string()]
        );
        let (start, candidates) = complete_command("  ex", 4);
        assert_eq!(start, 2);
        assert_eq!(candidates, vec!["exit".to_string(), "exist".to_string()]);
        assert!(complete_command("get hk", 6).1.is_empty());
        assert_eq!(
            complete_command("cl", 2).1,
            vec!["cluster_info".to_string()]
        );
        assert_eq!(
            complete_command("get_a", 5).1,
            vec!["get_app_envs".to_string()]
        );
        assert_eq!(
            complete_command("re", 2).1,
            vec![
                "remove_node".to_string(),
                "restore".to_string(),
                "recall".to_string()
            ]
        );
        assert_eq!(complete_command("rec", 3).1, vec!["recall".to_string()]);
    }

    // Proves the command line takes exactly one of --meta and --node, and
    // splits --meta on commas.
    #[test]
    fn meta_and_node_are_exclusive() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            shell: ShellArgs,
        }
        let cli = Cli::try_parse_from(["shell", "--meta", "a:1,b:2", "--table", "t"]).unwrap();
        assert_eq!(cli.shell.meta, vec!["a:1".to_string(), "b:2".to_string()]);
        assert_eq!(cli.shell.node, None);
        let cli = Cli::try_parse_from(["shell", "--node", "n:1"]).unwrap();
        assert_eq!(cli.shell.node.as_deref(), Some("n:1"));
        assert!(Cli::try_parse_from(["shell", "--node", "n:1", "--meta", "a:1"]).is_err());
        assert!(Cli::try_parse_from(["shell"]).is_err());
    }

    // Proves run() itself refuses both or neither of --meta and --node
    // (ShellArgs can be built without clap).
    #[tokio::test]
    async fn run_requires_one_target() {
        let neither = run(ShellArgs::default()).await.unwrap_err();
        assert!(neither.to_string().contains("exactly one"), "{neither}");
        let both = run(ShellArgs {
            node: Some("127.0.0.1:1".into()),
            meta: vec!["127.0.0.1:1".into()],
            ..ShellArgs::default()
        })
        .await
        .unwrap_err();
        assert!(both.to_string().contains("exactly one"), "{both}");
    }

    // Proves the shell's future can run on any tokio runtime (it is Send).
    #[test]
    fn run_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let future = run(ShellArgs {
            node: Some("127.0.0.1:1".into()),
            table: Some("t".into()),
            execute: None,
            timeout_ms: 1,
            ..ShellArgs::default()
        });
        assert_send(&future);
    }

    // Proves help lists every command's syntax.
    #[test]
    fn help_lists_every_command() {
        let mut out = Vec::new();
        write_help(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for spec in COMMANDS {
            assert!(text.contains(spec.usage), "{}", spec.name);
        }
    }
}
