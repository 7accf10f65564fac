//! `ship` and `fleet-stats`: the NATS JetStream commands (feature
//! `jetstream`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use enforcelog::now_us;
use enforcelog::ship::{fold_fleet, FleetConsumer, ShipOptions, Shipper};
use serde_json::Value;

use crate::failure::Failure;
use crate::output::Format;
use crate::output::Out;
use crate::read::{check_filter, stats_table, StatsArgs};
use crate::store_dir::open_reader;
use crate::Global;
use enforcelog::stats_report;

pub const SHIP_ABOUT: &str = "Ship committed events to NATS JetStream until stopped";
pub const SHIP_LONG_ABOUT: &str = "\
Publish every committed entry of the store to a JetStream stream (created
if missing, subjects <prefix>.>), one message per entry, with the message id
<store id>:<offset> so that JetStream drops re-sends. The shipped offset is
saved in DIR/ship/<stream>.offset only after JetStream acknowledged it: a
ship that is killed, or loses its connection, resumes there. Runs until
stopped (or, with --until-caught-up, until everything committed is
shipped), reconnecting with backoff through NATS outages, and reports
progress on stderr every few seconds. It only reads the store: recording
(in another process) never waits for it.";

pub const FLEET_ABOUT: &str = "Trigger statistics of every store shipping to a JetStream stream";
pub const FLEET_LONG_ABOUT: &str = "\
Read the whole JetStream stream the shippers publish to and print trigger
statistics for the fleet, in the formats of `stats`: each (store, offset)
is counted once however often it was sent, whatever order the hosts'
events arrive in. The window is counted back from --as-of (default now).
Needs no store directory. Without --state the whole stream is read each
time; with --state DIR a durable consumer is kept and the folded view
checkpointed in DIR, so the next call reads only what arrived since.";

#[derive(Debug, Args)]
pub struct NatsArgs {
    /// A NATS server URL (repeat, or separate with commas, for a cluster).
    #[arg(
        long = "nats",
        value_name = "URL",
        required = true,
        value_delimiter = ','
    )]
    servers: Vec<String>,
    /// A NATS credentials file.
    #[arg(long, value_name = "FILE")]
    creds: Option<PathBuf>,
    /// Refuse to connect without TLS.
    #[arg(long)]
    tls: bool,
    /// The JetStream stream.
    #[arg(long, value_name = "NAME", default_value = "ENFORCELOG")]
    stream: String,
    /// The first token of every subject.
    #[arg(long, value_name = "PREFIX", default_value = "enforcelog")]
    subject_prefix: String,
}

impl NatsArgs {
    fn options(&self) -> ShipOptions {
        ShipOptions {
            servers: self.servers.clone(),
            credentials: self.creds.clone(),
            require_tls: self.tls,
            stream: self.stream.clone(),
            subject_prefix: self.subject_prefix.clone(),
            ..ShipOptions::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct ShipArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Replicas of the stream, if this creates it (3 on a cluster).
    #[arg(long, value_name = "N", default_value_t = 1)]
    replicas: usize,
    /// Messages in flight before their acknowledgements are awaited.
    #[arg(long, value_name = "N", default_value_t = 512)]
    batch: usize,
    /// Stop once everything committed is shipped.
    #[arg(long)]
    until_caught_up: bool,
}

#[derive(Debug, Args)]
pub struct FleetStatsArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// What to show, as for `stats`.
    #[command(flatten)]
    stats: StatsArgs,
    /// Keep a durable consumer and a checkpoint of the folded view in DIR,
    /// so the next call reads only what arrived since.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// The durable consumer's name (with --state).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "enforcelog-fleet",
        requires = "state"
    )]
    consumer: String,
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::other(format!("start the async runtime: {e}")))
}

pub fn ship(global: &Global, args: &ShipArgs) -> Result<(), Failure> {
    let store = open_reader(global)?;
    let options = ShipOptions {
        replicas: args.replicas,
        batch: args.batch,
        ..args.nats.options()
    };
    let shipper = Shipper::new(&store, options)?;
    let watcher = shipper.clone();
    let running = shipper.clone();
    let until_caught_up = args.until_caught_up;
    let terminal = std::io::stderr().is_terminal();
    runtime()?.block_on(async move {
        let report =
            async {
                let mut last_line = std::time::Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let p = watcher.progress();
                    if until_caught_up && p.connected && p.lag() == 0 {
                        return;
                    }
                    if last_line.elapsed() >= Duration::from_secs(if terminal { 1 } else { 5 }) {
                        eprintln!(
                        "shipped {} of {} (lag {}), {}; published {}, duplicates {}, failures {}",
                        p.shipped,
                        p.committed,
                        p.lag(),
                        if p.connected { "connected" } else { "not connected" },
                        p.published,
                        p.duplicates,
                        p.failures
                    );
                        last_line = std::time::Instant::now();
                    }
                }
            };
        running.run(report).await
    })?;
    let p = shipper.progress();
    let mut out = Out::new();
    out.line(&serde_json::json!({ "shipped": p.shipped, "lag": p.lag() }).to_string())?;
    out.flush()
}

pub fn fleet_stats(_global: &Global, args: &FleetStatsArgs) -> Result<(), Failure> {
    check_filter(
        "tenant",
        enforcelog::Field::TenantId,
        args.stats.tenant.as_ref(),
    )?;
    check_filter("rule", enforcelog::Field::RuleId, args.stats.rule.as_ref())?;
    let options = args.nats.options();
    options.validate()?;
    let windows = vec![args.stats.window];
    let view = runtime()?.block_on(async {
        match &args.state {
            None => fold_fleet(&options, windows).await,
            Some(dir) => {
                let mut reader =
                    FleetConsumer::open(&options, &args.consumer, dir, windows).await?;
                reader.catch_up().await?;
                Ok(reader.into_view())
            }
        }
    })?;
    let as_of = args.stats.as_of.unwrap_or_else(now_us);
    let rules: Vec<_> = view
        .stats_all(as_of)
        .into_iter()
        .filter(|r| args.stats.tenant.as_ref().is_none_or(|t| *t == r.tenant_id))
        .filter(|r| args.stats.rule.as_ref().is_none_or(|x| *x == r.rule_id))
        .collect();
    let mut out = Out::new();
    match args.stats.format {
        Format::Json => {
            let mut report = stats_report(as_of, args.stats.window, &rules);
            report["stores"] = Value::from(view.stores());
            report["duplicates_dropped"] = Value::from(view.duplicates);
            // The tree heads shipped with each batch, checked against the
            // records received (docs/AUDIT.md).
            report["heads_checked"] = Value::from(view.heads_checked);
            report["heads_mismatched"] = Value::from(view.heads_mismatched);
            report["heads_unchecked"] = Value::from(view.heads_unchecked);
            let text = serde_json::to_string_pretty(&report)
                .map_err(|e| Failure::other(format!("encoding JSON: {e}")))?;
            out.line(&text)?;
        }
        Format::Jsonl => {
            for rule in &rules {
                out.line(&rule.to_json().to_string())?;
            }
        }
        Format::Table => stats_table(&rules, args.stats.window).print(&mut out)?,
    }
    out.flush()
}
