//! The `missive` binary: the server (`serve`) and the scriptable client
//! commands, in one executable. This file only parses flags and hands the
//! command to `commands::run`.

mod admin;
mod backup;
mod bench;
mod chat;
mod cli;
mod commands;
mod encryption;
mod file_keys;
mod migrate;
mod profile;
mod serve;
mod text_output;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "missive",
    version,
    about = "A WhatsApp-style messaging server and its clients"
)]
struct Args {
    /// How client and admin commands print: `json` (one JSON value per
    /// line, for scripts) or `text` (for people).
    #[arg(
        long,
        global = true,
        env = "MISSIVE_OUTPUT",
        value_enum,
        default_value_t
    )]
    output: text_output::Output,
    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    cli::set_output(args.output);
    runtime.block_on(commands::run(args.command))
}

/// Where profiles live: `$MISSIVE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/missive`,
/// else `~/.config/missive`.
fn config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MISSIVE_CONFIG_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(dir).join("missive");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".config").join("missive")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Args;

    /// Every command, as its path of names (`group add`).
    fn commands(command: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        for sub in command.get_subcommands() {
            let path = format!("{path} {}", sub.get_name()).trim().to_owned();
            out.push((path.clone(), sub.clone()));
            commands(sub, path, out);
        }
    }

    #[test]
    fn every_argument_is_explained_and_passwords_are_asked_only_where_used() {
        // Goal: `--help` describes each argument, positional or option
        // (no bare <USERNAME>), and --password appears only on the
        // commands that send one.
        let mut all = Vec::new();
        commands(&Args::command(), String::new(), &mut all);
        let unexplained: Vec<String> = all
            .iter()
            .flat_map(|(path, command)| {
                command
                    .get_arguments()
                    .filter(|arg| arg.get_help().is_none() && !arg.is_hide_set())
                    .map(move |arg| format!("`missive {path}` {}", arg.get_id()))
            })
            .collect();
        assert!(unexplained.is_empty(), "no help text: {unexplained:#?}");
        for (path, command) in &all {
            let has_password = command
                .get_arguments()
                .any(|arg| arg.get_long() == Some("password"));
            assert_eq!(
                has_password,
                matches!(
                    path.as_str(),
                    "register" | "login" | "admin reset-password" | "admin create"
                ),
                "`missive {path}`"
            );
        }
    }
}
