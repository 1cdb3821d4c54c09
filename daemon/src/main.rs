use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use jmdc_edge::config::EdgeConfig;
use jmdc_edge::run::{run, RunOptions};
use jmdc_edge::stats::comparison_table;

/// Where the packaged service keeps its configuration.
const DEFAULT_CONFIG: &str = "/etc/jmdc/edge.toml";

/// jmdc-edge: split DNN inference on the edge device.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run frames from the configured source through the configured plan (or several `--plan`s).
    Run {
        /// Configuration file; its drop-in folder (`<stem>.d/*.toml`) and `JMDC_EDGE__…` variables apply on top.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Plan override `variant=…,split=…,keep=…,codec=…`; repeat to compare plans side by side.
        #[arg(long)]
        plan: Vec<String>,
        /// Stop after this many frames.
        #[arg(long)]
        limit: Option<usize>,
        /// Print only summaries.
        #[arg(long, short)]
        quiet: bool,
        /// Also write the summaries as JSON to this file.
        #[arg(long)]
        summary_json: Option<PathBuf>,
    },
    /// Measure top-1 of every (variant, split, keep ratio, codec) with the real codec and ONNX
    /// Runtime, and write the accuracy table the adaptive loop uses.
    Calibrate(jmdc_edge::calibrate::CalibrateArgs),
    /// Parse and validate a configuration file, then check every file it names (model package
    /// with its hashes, the cloud's CA, this device's certificate and key, the source's file or
    /// folder, the accuracy table, the ONNX Runtime library); exit 1 naming the file and key of
    /// every problem.
    CheckConfig {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Only parse and validate (for packaging checks on a machine without the files).
        #[arg(long)]
        syntax_only: bool,
    },
}

fn main() -> Result<()> {
    // ONNX Runtime ≥ 1.2x on Linux sends usage telemetry unless this variable is set; opt out
    // before any thread exists (see docs/systemd.md).
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    }
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig {
            config,
            syntax_only,
        } => match EdgeConfig::load(&config) {
            Ok(cfg) => {
                if !syntax_only {
                    let problems = jmdc_edge::preflight::check_files(&cfg);
                    if !problems.is_empty() {
                        for p in &problems {
                            eprintln!("{}: {p}", config.display());
                        }
                        std::process::exit(1);
                    }
                }
                let layers = jmdc_service::settings::config_layers(&config).unwrap_or_default();
                for layer in layers.iter().skip(1) {
                    println!("  drop-in {}", layer.display());
                }
                println!(
                    "{}: ok{}",
                    config.display(),
                    if syntax_only { " (syntax only)" } else { "" }
                );
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        Command::Calibrate(args) => {
            jmdc_service::logging::init("warn");
            jmdc_edge::calibrate::calibrate_command(&args)?;
            Ok(())
        }
        Command::Run {
            config,
            plan,
            limit,
            quiet,
            summary_json,
        } => {
            let cfg = EdgeConfig::load(&config)?;
            let log = jmdc_service::logging::init(&cfg.log_level);
            let set_log_level: jmdc_edge::service::LogLevelSetter =
                Box::new(move |level: &str| log.set_level(level));
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let opts = RunOptions {
                plan_overrides: plan,
                limit,
                quiet,
            };
            // JSON result lines on stdout stay parseable: the summaries and the table go to stderr.
            let json_on_stdout = cfg.output.json_on_stdout(quiet);
            let summaries = runtime.block_on(run(&config, &cfg, &opts, Some(set_log_level)))?;
            if summaries.len() > 1 {
                if json_on_stdout {
                    eprintln!("{}", comparison_table(&summaries));
                } else {
                    println!("{}", comparison_table(&summaries));
                }
            }
            if let Some(path) = summary_json {
                std::fs::write(&path, serde_json::to_vec_pretty(&summaries)?)?;
            }
            Ok(())
        }
    }
}
