use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};
use jmdc_cloud::{identity, pki, tls, CloudConfig};

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
    /// Create the worker's certificate and key (PEM): signed by the CA of `--ca-cert`/`--ca-key`,
    /// or self-signed without them (trials).
    GenCert {
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        /// DNS names / IP addresses the certificate is valid for.
        #[arg(long = "name", default_values_t = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
        names: Vec<String>,
        #[arg(long, requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        #[arg(long, requires = "ca_cert")]
        ca_key: Option<PathBuf>,
        /// Days of validity (with a CA).
        #[arg(long, default_value_t = 825)]
        days: i64,
    },
    /// Create a certificate authority (PEM certificate and key) for device certificates — and,
    /// if you like, the worker's. Keep the key offline.
    GenCa {
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "jmdc device CA")]
        name: String,
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue a device's certificate and key, signed by the CA; `--device` becomes the identity
    /// the worker logs.
    GenDeviceCert {
        #[arg(long)]
        ca_cert: PathBuf,
        #[arg(long)]
        ca_key: PathBuf,
        /// Device name (a DNS-style label, e.g. `pi-kitchen-01`).
        #[arg(long)]
        device: String,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value_t = 825)]
        days: i64,
    },
    /// Print a certificate's SHA-256 fingerprint and name; with `--revoke LIST`, append it to
    /// the worker's deny list (`tls.revoked`; the worker re-reads it on SIGHUP).
    Fingerprint {
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        revoke: Option<PathBuf>,
    },
    /// Parse and validate the layered configuration, then check every file it names (TLS
    /// certificate and key, device CA, deny list, model packages with their hashes, the ONNX
    /// Runtime library); exit 1 naming the file (or environment variable) and the key on error.
    CheckConfig {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Only parse and validate (for packaging checks on a machine without the files).
        #[arg(long)]
        syntax_only: bool,
    },
}

/// Exit 1 with every problem named; print `ok` otherwise.
fn check_config(config: &Path, syntax_only: bool) -> Result<(), String> {
    let cfg = CloudConfig::load(config).map_err(|e| e.to_string())?;
    if !syntax_only {
        let problems = jmdc_cloud::preflight::check_files(&cfg);
        if !problems.is_empty() {
            let lines: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {p}", config.display()))
                .collect();
            return Err(lines.join("\n"));
        }
    }
    println!(
        "{}: ok{}",
        config.display(),
        if syntax_only { " (syntax only)" } else { "" }
    );
    for layer in jmdc_service::settings::config_layers(config)
        .map_err(|e| e.to_string())?
        .iter()
        .skip(1)
    {
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
        Command::GenCert {
            cert,
            key,
            names,
            ca_cert,
            ca_key,
            days,
        } => {
            match (ca_cert, ca_key) {
                (Some(ca_cert), Some(ca_key)) => pki::issue(
                    &ca_cert,
                    &ca_key,
                    &names,
                    true,
                    pki::Validity::days_from_now(days),
                    &cert,
                    &key,
                )?,
                _ => tls::generate_self_signed(&names, &cert, &key)?,
            }
            println!("wrote {} and {}", cert.display(), key.display());
            Ok(())
        }
        Command::GenCa {
            cert,
            key,
            name,
            days,
        } => {
            pki::generate_ca(&name, pki::Validity::days_from_now(days), &cert, &key)?;
            println!("wrote {} and {}", cert.display(), key.display());
            Ok(())
        }
        Command::GenDeviceCert {
            ca_cert,
            ca_key,
            device,
            cert,
            key,
            days,
        } => {
            pki::issue(
                &ca_cert,
                &ca_key,
                std::slice::from_ref(&device),
                false,
                pki::Validity::days_from_now(days),
                &cert,
                &key,
            )?;
            println!(
                "wrote {} and {} for device {device}",
                cert.display(),
                key.display()
            );
            Ok(())
        }
        Command::Fingerprint { cert, revoke } => {
            let certs = tls::load_certs(&cert)?;
            let der = certs.first().map(|c| c.as_ref()).unwrap_or_default();
            let fp = identity::fingerprint(der);
            let name = identity::name_of(der);
            println!("{fp}  {name}");
            if let Some(list) = revoke {
                use std::io::Write;
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&list)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", list.display()))?;
                writeln!(file, "{fp}  # {name}")
                    .map_err(|e| anyhow::anyhow!("{}: {e}", list.display()))?;
                println!(
                    "appended to {}; send the worker SIGHUP (systemctl reload jmdc-cloud)",
                    list.display()
                );
            }
            Ok(())
        }
        Command::CheckConfig {
            config,
            syntax_only,
        } => {
            if let Err(e) = check_config(&config, syntax_only) {
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
            let log = jmdc_service::logging::init(&cfg.log_level);
            for layer in jmdc_service::settings::config_layers(&config)? {
                tracing::info!(file = %layer.display(), "configuration layer");
            }
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(jmdc_cloud::service::run(&config, cfg, log))
        }
    }
}
