use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use jmdc_cloud::{build_server, tls, CloudConfig};

/// jmdc-cloud: finishes split DNN inference for edge devices over QUIC.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve until SIGINT/SIGTERM.
    Serve {
        #[arg(long, short)]
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
    /// Parse and validate a configuration file; exit 1 naming the file and key on error.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::GenCert { cert, key, names } => {
            tls::generate_self_signed(&names, &cert, &key)?;
            println!("wrote {} and {}", cert.display(), key.display());
            Ok(())
        }
        Command::CheckConfig { config } => match CloudConfig::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        Command::Serve { config } => {
            let cfg = CloudConfig::load(&config)?;
            jmdc_core::logging::init(&cfg.log_level);
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let server = build_server(&cfg)?;
                tracing::info!(addr = %server.local_addr()?, "jmdc-cloud listening");
                server.serve(shutdown_signal()).await;
                anyhow::Ok(())
            })
        }
    }
}
