use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};
use jmdc_cloud::{tls, CloudConfig};

/// jmdc-cloud: finishes split DNN inference for edge devices over QUIC.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The configuration file when `--config` is not given.
const DEFAULT_CONFIG: &str = "/etc/jmdc/cloud.toml";

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve until SIGINT/SIGTERM (systemd Type=notify; SIGHUP re-reads the log level).
    Serve {
        /// Main configuration file; `<stem>.d/*.toml` next to it and `JMDC_CLOUD__…` variables
        /// are applied on top.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Create a self-signed certificate and key (PEM) for trials.
    GenCert {
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        /// DNS names / IP addresses the certificate is valid for.
        #[arg(long = "name", default_values_t = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
        names: Vec<String>,
    },
    /// Parse and validate the layered configuration; exit 1 naming the file (or environment
    /// variable) and the key on error.
    CheckConfig {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn check_config(config: &Path) -> Result<(), jmdc_cloud::config::ConfigError> {
    CloudConfig::load(config)?;
    println!("{}: ok", config.display());
    for layer in jmdc_core::settings::config_layers(config)?.iter().skip(1) {
        println!("  drop-in {}", layer.display());
    }
    Ok(())
}

fn main() -> Result<()> {
    // ONNX Runtime ≥ 1.2x on Linux sends usage telemetry unless this variable is set; opt out
    // before any thread exists (see docs/systemd.md).
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    }
    let cli = Cli::parse();
    match cli.command {
        Command::GenCert { cert, key, names } => {
            tls::generate_self_signed(&names, &cert, &key)?;
            println!("wrote {} and {}", cert.display(), key.display());
            Ok(())
        }
        Command::CheckConfig { config } => {
            if let Err(e) = check_config(&config) {
                eprintln!("{e}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Serve { config } => {
            let cfg = match CloudConfig::load(&config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            };
            let log = jmdc_core::logging::init(&cfg.log_level);
            for layer in jmdc_core::settings::config_layers(&config)? {
                tracing::info!(file = %layer.display(), "configuration layer");
            }
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(jmdc_cloud::service::run(&config, cfg, log))
        }
    }
}
