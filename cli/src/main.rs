//! `enforcelog`: the command-line face of the store.
//!
//! This file owns the global contract: the arguments every command shares,
//! dispatch, and how a failure becomes one line on stderr and an exit code
//! (0 success, 1 corruption found, 2 bad input or usage, 3 store locked by
//! another writer, 4 any other failure). Nothing here may panic on user
//! input; a panic hook turns a bug into one line and exit code 4 as a last
//! resort.

mod audit;
mod clock;
mod demo;
mod failure;
#[cfg(feature = "jetstream")]
mod fleet;
mod info;
mod ops;
mod output;
mod read;
mod store_dir;
mod units;
mod write;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{ArgAction, Parser, Subcommand};
use enforcelog::Durability;
use tracing_subscriber::EnvFilter;

use crate::failure::{Failure, EXIT_USAGE};

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  corruption or tampering found (verify), a log that does not extend
     a head (audit), or a damaged record met while reading
  2  bad input or usage; also a read command pointed at a directory that
     holds no store (read commands never create one)
  3  the store is locked by another writer (only with --exclusive, or
     for repair; otherwise a writer beside another one claims a shard)
  4  any other failure (I/O, full disk, internal error)

Times in: RFC 3339 with a zone (2026-11-25T10:00:00Z or +01:00), a date
alone (2026-11-01 = midnight UTC), now, or a duration before now (24h, 1w).
A time with a clock but no zone is refused. Durations, everywhere: 1w, 1d12h,
30d, 90s, 10ms, 500us (units w d h m s ms us, largest first).
Times out: UTC with 6 fractional digits; tables show local time with --local
or when TZ is set. JSON and JSON Lines are always UTC.
Every command that prints data takes --format table, json or jsonl.
Flags name the event fields: --tenant tenant_id, --rule rule_id, --action
action_taken, --run run_id, --at/--since/--until enforced_at.
Errors are one line on stderr; -v adds detail, -vv the store's own log.";

/// An embeddable, append-only audit log of policy-enforcement outcomes.
///
/// Start with `enforcelog demo`: it records a million synthetic outcomes
/// durably and shows throughput, replay speed and trigger statistics.
#[derive(Debug, Parser)]
#[command(name = "enforcelog", version, after_help = AFTER_HELP)]
#[command(arg_required_else_help = true, propagate_version = true)]
struct Cli {
    /// The store directory.
    ///
    /// Created by the first write. Read commands never create it: on a
    /// missing store they fail with exit code 2.
    #[arg(
        long,
        global = true,
        env = "ENFORCELOG_DIR",
        default_value = "./enforcelog-data",
        value_name = "DIR",
        help_heading = "Global options"
    )]
    data_dir: PathBuf,

    /// When writes are acknowledged: fsync, interval:10ms or none.
    ///
    /// `fsync` (the default): after fdatasync, so an acknowledged event
    /// survives a crash; concurrent writers share each fsync (group commit).
    /// `interval:<duration>` (us, ms or s): fsync at most once per interval;
    /// a crash may lose the last interval. `none`: the operating system
    /// decides; for bulk loads and tests. Read commands ignore it.
    #[arg(long, global = true, default_value = "fsync", value_name = "MODE",
          value_parser = units::parse_durability, help_heading = "Global options")]
    durability: Durability,

    /// More output on stderr: -v error detail, -vv the store's warnings.
    ///
    /// -v adds detail to errors, -vv shows the store's own warnings, -vvv
    /// info and -vvvv debug messages. RUST_LOG, when set, overrides the
    /// log filter.
    #[arg(short, long, global = true, action = ArgAction::Count,
          help_heading = "Global options")]
    verbose: u8,

    /// Print times in tables in the local time zone (also when TZ is set);
    /// JSON output stays UTC.
    #[arg(long, global = true, help_heading = "Global options")]
    local: bool,

    /// Writers fail (exit 3) when another process writes the directory,
    /// instead of claiming a shard of it.
    ///
    /// By default `record`, `import` and `demo` share the directory with
    /// other writers (other CLI invocations, worker processes using the
    /// library): when another process holds the store, the command writes
    /// into a shard of it (`DIR/shards/<n>/`), and every read command
    /// answers for all shards. With --exclusive a writer must be the only
    /// one, as before shards existed. Read commands ignore it.
    #[arg(long, global = true, help_heading = "Global options")]
    exclusive: bool,

    /// Segment size in bytes for writers (hidden: for tests, so that a
    /// small store rolls segments; the library's bounds apply).
    #[arg(
        long,
        global = true,
        hide = true,
        value_name = "BYTES",
        env = "ENFORCELOG_SEGMENT_MAX_BYTES"
    )]
    segment_max_bytes: Option<u64>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(about = demo::ABOUT, long_about = demo::LONG_ABOUT)]
    Demo(demo::DemoArgs),
    #[command(about = write::RECORD_ABOUT, long_about = write::RECORD_LONG_ABOUT)]
    Record(write::RecordArgs),
    #[command(about = write::IMPORT_ABOUT, long_about = write::IMPORT_LONG_ABOUT)]
    Import(write::ImportArgs),
    #[command(about = read::QUERY_ABOUT, long_about = read::QUERY_LONG_ABOUT)]
    Query(read::QueryArgs),
    #[command(about = read::STATS_ABOUT, long_about = read::STATS_LONG_ABOUT)]
    Stats(read::StatsArgs),
    #[command(about = read::DUMP_ABOUT, long_about = read::DUMP_LONG_ABOUT)]
    Dump(read::DumpArgs),
    #[command(about = read::TAIL_ABOUT, long_about = read::TAIL_LONG_ABOUT)]
    Tail(read::TailArgs),
    #[command(about = info::INFO_ABOUT, long_about = info::INFO_LONG_ABOUT)]
    Info(info::InfoArgs),
    #[command(about = ops::VERIFY_ABOUT, long_about = ops::VERIFY_LONG_ABOUT)]
    Verify(ops::VerifyArgs),
    #[command(about = ops::REPAIR_ABOUT, long_about = ops::REPAIR_LONG_ABOUT)]
    Repair(ops::RepairArgs),
    #[command(about = ops::QUARANTINE_ABOUT, long_about = ops::QUARANTINE_LONG_ABOUT)]
    Quarantine(ops::QuarantineArgs),
    #[command(about = audit::HEAD_ABOUT, long_about = audit::HEAD_LONG_ABOUT)]
    Head(audit::HeadArgs),
    #[command(about = audit::PROVE_ABOUT, long_about = audit::PROVE_LONG_ABOUT)]
    Prove(audit::ProveArgs),
    #[command(about = audit::AUDIT_ABOUT, long_about = audit::AUDIT_LONG_ABOUT)]
    Audit(audit::AuditArgs),
    #[command(about = audit::KEYGEN_ABOUT, long_about = audit::KEYGEN_LONG_ABOUT)]
    Keygen(audit::KeygenArgs),
    #[command(about = ops::COMPLETIONS_ABOUT, long_about = ops::COMPLETIONS_LONG_ABOUT)]
    Completions(ops::CompletionsArgs),
    #[cfg(feature = "jetstream")]
    #[command(about = fleet::SHIP_ABOUT, long_about = fleet::SHIP_LONG_ABOUT)]
    Ship(fleet::ShipArgs),
    #[cfg(feature = "jetstream")]
    #[command(name = "fleet-stats", about = fleet::FLEET_ABOUT, long_about = fleet::FLEET_LONG_ABOUT)]
    FleetStats(fleet::FleetStatsArgs),
}

/// What every command gets from the global flags.
#[derive(Debug, Clone)]
pub struct Global {
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub verbose: u8,
    /// `--segment-max-bytes` (hidden), if given.
    pub segment_max_bytes: Option<u64>,
    /// `--exclusive`: writers refuse to share the directory (exit 3).
    pub exclusive: bool,
}

fn main() -> ExitCode {
    install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    init_tracing(cli.verbose);
    clock::init(cli.local);
    let global = Global {
        data_dir: cli.data_dir,
        durability: cli.durability,
        verbose: cli.verbose,
        segment_max_bytes: cli.segment_max_bytes,
        exclusive: cli.exclusive,
    };
    match dispatch(&global, cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(global.verbose),
    }
}

fn dispatch(global: &Global, command: Command) -> Result<(), Failure> {
    match command {
        Command::Demo(args) => demo::run(global, &args),
        Command::Record(args) => write::record(global, &args),
        Command::Import(args) => write::import(global, &args),
        Command::Query(args) => read::query(global, &args),
        Command::Stats(args) => read::stats(global, &args),
        Command::Dump(args) => read::dump(global, &args),
        Command::Tail(args) => read::tail(global, &args),
        Command::Info(args) => info::info(global, &args),
        Command::Verify(args) => ops::verify(global, &args),
        Command::Repair(args) => ops::repair(global, &args),
        Command::Quarantine(args) => ops::quarantine(global, &args),
        Command::Head(args) => audit::head(global, &args),
        Command::Prove(args) => audit::prove(global, &args),
        Command::Audit(args) => audit::audit(global, &args),
        Command::Keygen(args) => audit::keygen(&args),
        Command::Completions(args) => {
            ops::completions(&args, &mut <Cli as clap::CommandFactory>::command())
        }
        #[cfg(feature = "jetstream")]
        Command::Ship(args) => fleet::ship(global, &args),
        #[cfg(feature = "jetstream")]
        Command::FleetStats(args) => fleet::fleet_stats(global, &args),
    }
}

/// Help and version go to stdout with exit 0; every other parse error is
/// one line on stderr with exit 2 (help asked for by omission goes to
/// stderr, also with exit 2).
fn usage_error(e: &clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = write!(std::io::stdout(), "{}", e.render());
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = write!(std::io::stderr(), "{}", e.render());
            ExitCode::from(EXIT_USAGE)
        }
        _ => {
            let line = printable(&first_paragraph(&e.render().to_string()));
            let _ = writeln!(std::io::stderr(), "{line} (see --help)");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `text` with control characters (and the separators and bidi controls
/// an id may not hold) escaped: clap echoes the offending argument, and an
/// argument must not move the cursor or forge a second line.
fn printable(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || enforcelog::event::is_forbidden_in_id(c) {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// The first paragraph of a clap message and its tips, on one line.
fn first_paragraph(text: &str) -> String {
    let mut line = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    for tip in text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("tip:"))
    {
        line.push_str("; ");
        line.push_str(tip);
    }
    line
}

/// A panic is a bug; still, the user gets one line and exit code 4, never
/// a backtrace.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = message.replace('\n', " ");
        let _ = writeln!(
            std::io::stderr(),
            "error: internal error (a bug in enforcelog): {message}{place}"
        );
        std::process::exit(i32::from(failure::EXIT_OTHER));
    }));
}

/// The store logs through `tracing`; by default nothing of it shows (the
/// command's own `error:` line says what failed), `-vv` shows warnings.
fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 | 1 => "off",
        2 => "warn",
        3 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
