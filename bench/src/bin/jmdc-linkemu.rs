//! `jmdc-linkemu`: a userspace UDP link emulator in front of one upstream server.
//!
//! Prints the bound address on the first line of stdout, then forwards until Ctrl-C, SIGTERM or
//! `--duration-s`, and prints the final counters on stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use jmdc_bench::linkemu::{
    mbit_to_bps, LinkParams, Relay, RelayConfig, Trace, DEFAULT_QUEUE_BYTES,
};

/// Relay UDP datagrams to one upstream server through an emulated link (rate, one-way delay,
/// random loss, drop-tail queue), per direction, optionally changing over time from a trace file.
#[derive(Debug, Parser)]
#[command(name = "jmdc-linkemu", version)]
struct Args {
    /// Address to listen on (port 0 picks a free one; the bound address is printed first on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Server every datagram is forwarded to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Rate of both directions in Mbit/s (10⁶ bit/s); unlimited when absent.
    #[arg(long)]
    rate_mbit: Option<f64>,
    /// One-way delay of both directions in milliseconds.
    #[arg(long, default_value_t = 0.0)]
    delay_ms: f64,
    /// Random drop probability of both directions (0..=1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Queue capacity of both directions in bytes (drop-tail).
    #[arg(long, default_value_t = DEFAULT_QUEUE_BYTES)]
    queue_bytes: usize,
    /// Uplink (client → upstream) rate in Mbit/s, overriding --rate-mbit.
    #[arg(long)]
    up_rate_mbit: Option<f64>,
    /// Downlink (upstream → client) rate in Mbit/s, overriding --rate-mbit.
    #[arg(long)]
    down_rate_mbit: Option<f64>,
    /// Uplink one-way delay in ms, overriding --delay-ms.
    #[arg(long)]
    up_delay_ms: Option<f64>,
    /// Downlink one-way delay in ms, overriding --delay-ms.
    #[arg(long)]
    down_delay_ms: Option<f64>,
    /// Uplink loss probability, overriding --loss.
    #[arg(long)]
    up_loss: Option<f64>,
    /// Downlink loss probability, overriding --loss.
    #[arg(long)]
    down_loss: Option<f64>,
    /// Seed of the loss generators.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// CSV trace: `at_ms, direction, rate_mbit, delay_ms, loss, queue_bytes` per line (empty fields
    /// keep the previous value; see docs/link-emulator.md).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Repeat the trace with this period in milliseconds.
    #[arg(long, requires = "trace")]
    trace_loop_ms: Option<u64>,
    /// Seconds a silent client keeps its upstream socket.
    #[arg(long, default_value_t = 120)]
    idle_timeout_s: u64,
    /// Print the counters on stderr every this many seconds (0 = only at exit).
    #[arg(long, default_value_t = 0)]
    stats_interval_s: u64,
    /// Stop after this many seconds (0 = run until Ctrl-C / SIGTERM).
    #[arg(long, default_value_t = 0)]
    duration_s: u64,
}

fn delay(ms: f64, name: &str) -> Result<Duration> {
    anyhow::ensure!(
        ms.is_finite() && ms >= 0.0,
        "--{name} must be ≥ 0, got {ms}"
    );
    Duration::try_from_secs_f64(ms / 1e3).with_context(|| format!("--{name} {ms} is too large"))
}

fn direction(
    args: &Args,
    rate: Option<f64>,
    delay_ms: Option<f64>,
    loss: Option<f64>,
    prefix: &str,
) -> Result<LinkParams> {
    let params = LinkParams {
        rate_bps: rate.or(args.rate_mbit).map(mbit_to_bps),
        delay: delay(
            delay_ms.unwrap_or(args.delay_ms),
            &format!("{prefix}delay-ms"),
        )?,
        loss: loss.unwrap_or(args.loss),
        queue_bytes: args.queue_bytes,
    };
    params
        .validate()
        .with_context(|| format!("{prefix}link parameters"))?;
    Ok(params)
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let uplink = direction(
        &args,
        args.up_rate_mbit,
        args.up_delay_ms,
        args.up_loss,
        "up-",
    )?;
    let downlink = direction(
        &args,
        args.down_rate_mbit,
        args.down_delay_ms,
        args.down_loss,
        "down-",
    )?;
    let mut config = RelayConfig::new(args.listen, args.upstream)
        .with_uplink(uplink)
        .with_downlink(downlink)
        .with_seed(args.seed);
    config.session_idle_timeout = Duration::from_secs(args.idle_timeout_s.max(1));
    if let Some(path) = &args.trace {
        let mut trace = Trace::from_file(path, uplink, downlink)?;
        if let Some(period) = args.trace_loop_ms {
            trace = trace.repeat_every(Duration::from_millis(period))?;
        }
        config = config.with_trace(trace);
    }
    let relay = Relay::bind(config).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", relay.local_addr())?;
        out.flush()?;
    }
    eprintln!(
        "jmdc-linkemu: {} -> {}\n  uplink:   {uplink}\n  downlink: {downlink}",
        relay.local_addr(),
        args.upstream
    );
    let handle = relay.handle();
    let reporter = (args.stats_interval_s > 0).then(|| {
        let handle = handle.clone();
        let every = Duration::from_secs(args.stats_interval_s);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            while !handle.is_shut_down() {
                tick.tick().await;
                eprintln!("{}", handle.stats());
            }
        })
    });
    let run_for = async {
        if args.duration_s > 0 {
            tokio::time::sleep(Duration::from_secs(args.duration_s)).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = terminated() => {}
        () = run_for => {}
        () = relay.stopped() => {}
    }
    if let Some(task) = reporter {
        task.abort();
    }
    let stats = relay.shutdown().await;
    eprintln!("{stats}");
    Ok(())
}
