//! `markab shell`: a data shell in Pegasus's command syntax.
//!
//! ```text
//! markab shell --node 127.0.0.1:34801 --table temp
//! markab shell --node 127.0.0.1:34801 --table temp -e 'get user1 name'
//! ```
//!
//! Keys and values are binary-safe: see [`escape`] for the quoting and
//! escapes, and docs/client.md for every command.

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

/// Arguments of `markab shell`.
#[derive(clap::Args, Clone, Debug)]
pub struct ShellArgs {
    /// `host:port` of a node (any of its shards).
    #[arg(long)]
    pub node: String,
    /// The table to work on.
    #[arg(long)]
    pub table: String,
    /// Run this one command, print its result and exit (non-zero on error).
    #[arg(short = 'e', long = "execute")]
    pub execute: Option<String>,
    /// Operation timeout in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
}

/// Runs the shell: one command with `-e`, otherwise an interactive prompt.
/// Errors of single commands are printed; only setup errors (the node is
/// unreachable, the table is unknown) are returned.
pub async fn run(args: ShellArgs) -> anyhow::Result<ExitCode> {
    let options = ClientOptions {
        operation_timeout: Duration::from_millis(args.timeout_ms.max(1)),
        ..ClientOptions::default()
    };
    let client = Client::connect(&args.node, options)
        .await
        .with_context(|| format!("connecting to {}", args.node))?;
    let table = client
        .open_table(&args.table)
        .await
        .with_context(|| format!("opening table {}", args.table))?;

    if let Some(line) = &args.execute {
        let mut stdout = std::io::stdout();
        return Ok(match run_line(&table, line, &mut stdout).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        });
    }
    interactive(&args, &table).await
}

/// What a line asked the shell to do next.
enum Next {
    Continue,
    Exit,
}

/// Parses and executes one line, writing its output to `out`.
async fn run_line(
    table: &Table,
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
        command => {
            execute::execute(table, command, out).await?;
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

async fn interactive(args: &ShellArgs, table: &Table) -> anyhow::Result<ExitCode> {
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
    println!(
        "markab shell: table {} on {} ({} partitions). Type help for commands.",
        table.name(),
        args.node,
        table.partition_count()
    );
    let prompt = format!("{}> ", table.name());
    loop {
        // readline blocks: run it off the async worker threads.
        let prompt_for_line = prompt.clone();
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
        match run_line(table, &line, &mut stdout).await {
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
    }

    // Proves the shell's future can run on any tokio runtime (it is Send).
    #[test]
    fn run_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let future = run(ShellArgs {
            node: "127.0.0.1:1".into(),
            table: "t".into(),
            execute: None,
            timeout_ms: 1,
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
