//! `adiuva`: run the server, manage its data, and measure it.

mod bench;
mod bench_agents;
mod bench_chat;
mod bench_devices;
mod bench_vectors;
mod commands;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Adiuva: the cloud backend of the local-first Adiuva app.
#[derive(Debug, Parser)]
#[command(name = "adiuva", version, about, propagate_version = true)]
pub struct Cli {
    /// Config file (TOML). Default: ./adiuva.toml when it exists.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory for the embedded database and blobs (default ./data).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (default 127.0.0.1:8080).
    Serve {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR")]
        bind: Option<SocketAddr>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI document the server serves.
    Openapi,
    /// Print the AsyncAPI document of the WebSockets the server serves.
    Asyncapi,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Check the configuration and every configured backend; non-zero exit on failure.
    Doctor,
    /// Manage user accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Cloud-storage maintenance.
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
    /// Load-test the auth endpoints (in-process server unless --url is given).
    Bench(bench::BenchArgs),
    /// Measure a vector index: search latency and recall@10 against brute force.
    BenchVectors(bench_vectors::BenchVectorsArgs),
    /// Measure chat: orchestration overhead and concurrent WebSocket chats.
    BenchChat(bench_chat::BenchChatArgs),
    /// Measure device sockets: server memory per idle socket, call round trips, queue delivery.
    BenchDevices(bench_devices::BenchDevicesArgs),
    /// Measure agents: scheduler throughput across instances, the cost of one cloud run.
    BenchAgents(bench_agents::BenchAgentsArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print every setting with its default and documentation.
    Example {
        /// `env` (a .env file), `toml` (an adiuva.toml) or `markdown` (README's table).
        #[arg(long, default_value = "env")]
        format: String,
    },
    /// Print the settings in effect (defaults, file, environment, flags); secrets as ***.
    Show,
}

#[derive(Debug, Subcommand)]
enum StorageCommand {
    /// List blobs no row points at (records, backups) and unfinished uploads' staging
    /// files, all older than --min-age; --apply deletes them. Safe while the server runs.
    Gc {
        /// Delete the orphans instead of only listing them.
        #[arg(long)]
        apply: bool,
        /// Leave alone anything written more recently than this (`90s`, `30m`, `24h`,
        /// `7d`, or seconds): an upload or update may still be writing it. Below the
        /// longest possible upload it is safe only while no server runs.
        #[arg(long, default_value = "24h", value_parser = commands::parse_age)]
        min_age: i64,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user. The password is read from stdin with --password-stdin, else generated and printed once.
    Create {
        /// Email address.
        email: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        /// user or admin.
        #[arg(long, default_value = "user")]
        role: String,
        /// free, pro, power or team.
        #[arg(long, default_value = "free")]
        tier: String,
    },
    /// List users.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set a user's tier (free, pro, power, team).
    SetTier {
        /// Email address.
        email: String,
        /// free, pro, power or team.
        tier: String,
    },
    /// Set a user's role (user, admin).
    SetRole {
        /// Email address.
        email: String,
        /// user or admin.
        role: String,
    },
    /// Delete a user with their sessions, records and backups (rows and blobs).
    Delete {
        /// Email address.
        email: String,
    },
}

fn main() -> ExitCode {
    adiuva_adapters::install_crypto_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
