//! `turnpike`: charge for any HTTP API per call over Lightning (L402).

mod admin_cmd;
mod backend_check;
mod demo;
mod fetch;
mod import_aperture;
mod ledger_cmd;
mod mcp;
mod wallets;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Charge for any HTTP API per call, in sats, over Lightning (L402).
#[derive(Parser)]
#[command(name = "turnpike", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: a reverse proxy that answers 402 with an invoice and forwards paid calls.
    Serve {
        /// The TOML configuration file.
        #[arg(long, short, default_value = "turnpike.toml")]
        config: PathBuf,
    },
    /// Manage a running gateway through its admin API: services, tokens, payments, stats.
    Admin(admin_cmd::AdminArgs),
    /// Fetch a URL like curl, paying L402 challenges within a limit.
    Fetch(fetch::FetchArgs),
    /// Lightning backends and wallets.
    Backend {
        #[command(subcommand)]
        command: BackendCommand,
    },
    /// What the ledger recorded: totals per origin and per day, and the budget left.
    Spend {
        /// Only this wallet's payments (and its budget left).
        #[arg(long)]
        wallet: Option<String>,
        /// Only payments since this date (YYYY-MM-DD, UTC) or unix time.
        #[arg(long)]
        since: Option<String>,
        /// One JSON object: total_sats, by_origin, by_day, payments, budget_left.
        #[arg(long)]
        json: bool,
        /// The wallet file (default: $TURNPIKE_WALLETS, else ~/.config/turnpike/wallets.toml).
        #[arg(long)]
        wallet_config: Option<PathBuf>,
    },
    /// Serve MCP tools that let an agent pay for HTTP calls with a wallet, within its budget
    /// (stdio, or streamable HTTP with --http).
    Mcp(mcp::McpArgs),
    /// Tokens kept for reuse.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Wallets of the wallet file.
    Wallet {
        #[command(subcommand)]
        command: WalletCommand,
    },
    /// Convert an Aperture configuration (aperture.yaml) into a turnpike.toml, listing on
    /// standard error every key that could not be converted, or not exactly.
    ImportAperture {
        /// Aperture's YAML configuration.
        input: PathBuf,
        /// Where to write the TOML (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Run a demo: the gateway with the dev Lightning backend in front of a built-in API.
    Demo {
        /// Address for the demo gateway.
        #[arg(long, default_value = "127.0.0.1:8402")]
        listen: SocketAddr,
        /// Data directory (default: turnpike-demo in the system's temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address of the admin listener (API and dashboard).
        #[arg(long, default_value = turnpike_gateway::config::DEFAULT_ADMIN_LISTEN)]
        admin_listen: SocketAddr,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// List the stored tokens.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove stored tokens by id (or all).
    Rm {
        /// Token ids, from `turnpike tokens list`.
        ids: Vec<i64>,
        /// Remove every stored token.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

#[derive(Subcommand)]
enum WalletCommand {
    /// A wallet's balance (every wallet of the file without NAME) and its budget left.
    Balance {
        /// The wallet.
        name: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// The wallet file (default: $TURNPIKE_WALLETS, else ~/.config/turnpike/wallets.toml).
        #[arg(long)]
        wallet_config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BackendCommand {
    /// Connect to the gateway's backend (or a wallet) and print what it reports.
    Check {
        /// The gateway configuration whose [backend] to check.
        #[arg(
            long,
            short,
            default_value = "turnpike.toml",
            conflicts_with = "wallet"
        )]
        config: std::path::PathBuf,
        /// Check this wallet of the wallet file instead.
        #[arg(long)]
        wallet: Option<String>,
        /// The wallet file (default: $TURNPIKE_WALLETS, else ~/.config/turnpike/wallets.toml).
        #[arg(long)]
        wallet_config: Option<std::path::PathBuf>,
    },
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Says where a hub's newcomers go: the registration page (or that the operator registers
/// providers), the dashboard linked from it, the directory.
fn log_hub(
    hub: &turnpike_gateway::config::HubConfig,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
) {
    let register = if hub.open_registration {
        format!("http://{listen}/_turnpike/hub/register")
    } else {
        "closed (open_registration = false): the operator registers providers".to_owned()
    };
    let dashboard = match (&hub.dashboard_url, admin) {
        (Some(url), _) => url.clone(),
        (None, Some(addr)) => format!("http://{addr}/ (set [hub] dashboard_url to link it)"),
        (None, None) => "none: [admin] is off, so providers cannot log in".to_owned(),
    };
    tracing::info!(
        register,
        dashboard,
        directory = %format_args!("http://{listen}/directory"),
        "hub: providers register, then log in to the dashboard; agents search the directory"
    );
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

async fn serve(config_path: PathBuf) -> anyhow::Result<()> {
    let config = turnpike_gateway::GatewayConfig::load(&config_path)
        .with_context(|| format!("loading {}", config_path.display()))?;
    let listen = config.listen;
    let services = config.services.len();
    let workers = config.worker_threads();
    let (admin, data_dir) = (config.admin.clone(), config.data_dir.clone());
    let hub = config.hub.clone().filter(|h| h.enabled);
    raise_file_limit(config.connections.max);
    let gateway = turnpike_gateway::Gateway::from_config(config)
        .await
        .context("starting the gateway")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let admin = start_admin(&gateway, &admin, &data_dir, listener.local_addr()?).await?;
    tracing::info!(%listen, services, workers, "turnpike gateway listening");
    if let Some(hub) = hub {
        log_hub(&hub, listen, admin.as_ref().map(|a| a.addr));
    }
    let reloader = tokio::spawn(reload_on_sighup(config_path, gateway.control()));
    let served = gateway
        .serve_on_workers(listener, workers, shutdown_signal())
        .await
        .context("serving");
    reloader.abort();
    if let Some(admin) = admin {
        admin.task.abort();
    }
    served
}

/// A running admin listener.
pub struct AdminListener {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The default token file, when the token is in it.
    pub token_file: Option<PathBuf>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the admin listener of `gateway` (unless `[admin] enabled = false`), refusing the
/// public listener's address.
pub async fn start_admin(
    gateway: &turnpike_gateway::Gateway,
    config: &turnpike_gateway::config::AdminConfig,
    data_dir: &std::path::Path,
    public: SocketAddr,
) -> anyhow::Result<Option<AdminListener>> {
    if !config.enabled {
        return Ok(None);
    }
    if config.listen == public {
        anyhow::bail!("admin.listen {} is the public listener", config.listen);
    }
    let (token, token_file) = turnpike_admin::token_file::load(config.token.as_ref(), data_dir)
        .context("the admin token")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the admin listener {}", config.listen))?;
    let addr = listener.local_addr()?;
    let gateway = gateway.clone();
    let task = tokio::spawn(async move {
        if let Err(e) =
            turnpike_admin::serve(&gateway, &token, listener, std::future::pending()).await
        {
            tracing::error!(error = %e, "the admin listener stopped");
        }
    });
    tracing::info!(%addr, "admin API and dashboard listening");
    Ok(Some(AdminListener {
        addr,
        token_file,
        task,
    }))
}

/// On each SIGHUP, reads the config file again and replaces the file's services with its
/// `[[services]]`, keeping the services stored through the admin API over them: a file with any
/// error (or one that clashes with the stored services) is refused (the old services stay) and
/// the error logged with the key at fault. Requests in flight finish on the services they
/// matched. Other keys take effect at the next start.
async fn reload_on_sighup(
    config_path: PathBuf,
    control: std::sync::Arc<turnpike_gateway::control::Control>,
) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP: reloading is off");
            return;
        };
        while hangups.recv().await.is_some() {
            let reloaded = match turnpike_gateway::GatewayConfig::load(&config_path) {
                Ok(config) => control
                    .replace_file_services(config.services.clone())
                    .await
                    .map(|()| config),
                Err(e) => Err(e),
            };
            match reloaded {
                Ok(config) => tracing::info!(
                    services = config.services.len(),
                    "SIGHUP: services reloaded from {}",
                    config_path.display()
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: {} refused, the services in force stay",
                    config_path.display()
                ),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (config_path, control);
}

/// Raises the soft limit on open files to the hard one, and warns when it is still too low for
/// `max_connections` (each may hold an upstream connection too).
fn raise_file_limit(max_connections: usize) {
    let wanted = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_mul(2)
        .saturating_add(256);
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit < wanted => tracing::warn!(
            file_limit = limit,
            max_connections,
            "the open-file limit is below twice connections.max: lower connections.max or raise \
             the limit (ulimit -n), or accepting may fail under load"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    turnpike_lightning::ensure_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("turnpike: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => {
                init_logging("info");
                serve(config)
                    .await
                    .map(|()| std::process::ExitCode::SUCCESS)
            }
            Command::Demo {
                listen,
                data_dir,
                admin_listen,
            } => {
                init_logging("info");
                demo::run(listen, data_dir, admin_listen)
                    .await
                    .map(|()| std::process::ExitCode::SUCCESS)
            }
            Command::Backend {
                command:
                    BackendCommand::Check {
                        config,
                        wallet,
                        wallet_config,
                    },
            } => {
                init_logging("warn");
                backend_check::run(&config, wallet.as_deref(), wallet_config.as_deref()).await
            }
            Command::Spend {
                wallet,
                since,
                json,
                wallet_config,
            } => {
                init_logging("warn");
                ledger_cmd::spend(
                    wallet.as_deref(),
                    since.as_deref(),
                    json,
                    wallet_config.as_deref(),
                )
                .await
            }
            Command::Tokens { command } => {
                init_logging("warn");
                match command {
                    TokensCommand::List { json } => ledger_cmd::tokens_list(json).await,
                    TokensCommand::Rm { ids, all } => ledger_cmd::tokens_rm(&ids, all).await,
                }
            }
            Command::Wallet {
                command:
                    WalletCommand::Balance {
                        name,
                        json,
                        wallet_config,
                    },
            } => {
                init_logging("warn");
                ledger_cmd::balance(name.as_deref(), json, wallet_config.as_deref()).await
            }
            Command::Mcp(args) => {
                init_logging("warn");
                mcp::run(args).await
            }
            Command::Admin(args) => {
                init_logging("warn");
                admin_cmd::run(args).await
            }
            Command::ImportAperture {
                input,
                output,
                force,
            } => import_aperture::run(&input, output.as_deref(), force),
            Command::Fetch(args) => {
                init_logging(if args.verbose { "warn" } else { "error" });
                fetch::run(args).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("turnpike: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
