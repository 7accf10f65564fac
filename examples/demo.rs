//! The enforcelog demo: append synthetic enforcement outcomes durably, read
//! them back, verify the log.
//!
//! ```text
//! cargo run --release --example demo -- [--records N] [--writers W] [--dir DIR]
//! ```
//!
//! `W` tokio tasks (default 64) each keep one `append().await` in flight until
//! `N` records (default 200,000) of about 200 bytes are acknowledged under
//! `Durability::Fsync`. The demo then closes the log, reopens it read-only,
//! reads every record back checking that offsets are dense and the new
//! payloads are the ones written, and runs `verify()`. A directory that
//! already holds a log is appended to. Set `RUST_LOG=info` to see the log's
//! own messages. The exit status is non-zero if any check fails.

use std::error::Error;
use std::fmt::Display;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Instant;

use enforcelog::{Durability, Log, LogOptions, Record};
use tracing_subscriber::EnvFilter;

type BoxError = Box<dyn Error + Send + Sync>;

/// Length of every synthetic payload, in bytes.
const PAYLOAD_BYTES: usize = 200;

const ACTIONS: [&str; 4] = ["STOPPED", "KILLED", "ABORTED", "BLOCKED"];

const USAGE: &str = "usage: demo [--records N] [--writers W] [--dir DIR]

  --records N   records to append (default 200000)
  --writers W   concurrent tokio tasks appending (default 64)
  --dir DIR     log directory, created or appended to (default ./enforcelog-data)";

#[derive(Debug)]
struct Args {
    records: u64,
    writers: usize,
    dir: PathBuf,
}

/// Parses the command line by hand; `Ok(None)` means help was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        records: 200_000,
        writers: 64,
        dir: PathBuf::from("./enforcelog-data"),
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--records" => parsed.records = parse_number(&flag, &value()?)?,
            "--writers" => parsed.writers = parse_number(&flag, &value()?)?,
            "--dir" => parsed.dir = PathBuf::from(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if parsed.writers == 0 {
        return Err("--writers must be at least 1".into());
    }
    Ok(Some(parsed))
}

fn parse_number<T: FromStr>(flag: &str, value: &str) -> Result<T, String>
where
    T::Err: Display,
{
    value
        .parse()
        .map_err(|e| format!("{flag} {value}: not a count: {e}"))
}

/// A synthetic enforcement outcome, JSON-ish text of exactly
/// `PAYLOAD_BYTES` bytes, unique per `(writer, seq)`.
fn payload(writer: usize, seq: u64) -> Vec<u8> {
    let action = ACTIONS[(seq % ACTIONS.len() as u64) as usize];
    let mut text = format!(
        r#"{{"tenant":"tenant-{:03}","rule":"rule-{:04}","action":"{action}","subject":"pid:{}","writer":{writer},"seq":{seq},"reason":""#,
        (seq * 7 + writer as u64) % 50,
        (seq * 13) % 1000,
        10_000 + (seq * 31 + writer as u64) % 50_000,
    );
    let closing = r#""}"#;
    let pad = PAYLOAD_BYTES.saturating_sub(text.len() + closing.len());
    text.extend(std::iter::repeat_n('.', pad));
    text.push_str(closing);
    text.into_bytes()
}

/// Writer `i`'s share of `total` records spread over `writers`.
fn share(total: u64, writers: usize, i: usize) -> u64 {
    let (writers, i) = (writers as u64, i as u64);
    total / writers + u64::from(i < total % writers)
}

/// What the append phase did.
struct Appended {
    /// Offset of every record appended, indexed by `(writer, seq)` order.
    offsets: Vec<Vec<u64>>,
    seconds: f64,
}

/// Appends `records` spread over `writers` tokio tasks, each with one append
/// in flight, and returns the offsets each writer was given.
fn append_all(log: &Log, records: u64, writers: usize) -> Result<Appended, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let offsets = runtime.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let log = log.clone();
                let n = share(records, writers, w);
                tokio::spawn(async move {
                    let mut offsets = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
                    for seq in 0..n {
                        offsets.push(log.append(Record::now(payload(w, seq))).await?);
                    }
                    Ok::<_, enforcelog::Error>(offsets)
                })
            })
            .collect();
        let mut offsets = Vec::with_capacity(writers);
        for task in tasks {
            offsets.push(task.await??);
        }
        Ok::<_, BoxError>(offsets)
    })?;
    Ok(Appended {
        offsets,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Checks that the acknowledged offsets are exactly `start..start + records`,
/// each given once, and increasing for each writer. Returns, for each new
/// offset, the `(writer, seq)` whose record it holds.
fn check_offsets(
    appended: &Appended,
    start: u64,
    records: u64,
) -> Result<Vec<(usize, u64)>, BoxError> {
    let len = usize::try_from(records)?;
    let mut owner: Vec<Option<(usize, u64)>> = vec![None; len];
    for (w, offsets) in appended.offsets.iter().enumerate() {
        if !offsets.windows(2).all(|pair| pair[0] < pair[1]) {
            return Err(format!("writer {w} was given offsets out of order").into());
        }
        for (seq, &offset) in (0u64..).zip(offsets) {
            let slot = offset
                .checked_sub(start)
                .and_then(|i| owner.get_mut(usize::try_from(i).ok()?))
                .ok_or_else(|| {
                    format!("offset {offset} is outside {start}..{}", start + records)
                })?;
            if slot.replace((w, seq)).is_some() {
                return Err(format!("offset {offset} was given twice").into());
            }
        }
    }
    owner
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            o.ok_or_else(|| format!("offset {} was never given", start + i as u64).into())
        })
        .collect()
}

/// Reads the whole log back, checking dense offsets from 0 and, for the
/// records this run appended, the exact payload. Returns records and bytes read.
fn read_back(log: &Log, start: u64, owners: &[(usize, u64)]) -> Result<(u64, u64), BoxError> {
    let mut expected = 0u64;
    let mut bytes = 0u64;
    for record in log.read_from(0)? {
        let record = record?;
        if record.offset != expected {
            return Err(format!("read offset {} where {expected} was due", record.offset).into());
        }
        if let Some(&(w, seq)) = expected
            .checked_sub(start)
            .and_then(|i| owners.get(usize::try_from(i).ok()?))
        {
            if record.payload != payload(w, seq) {
                return Err(
                    format!("offset {expected} does not hold writer {w}'s record {seq}").into(),
                );
            }
        }
        bytes += record.payload.len() as u64;
        expected += 1;
    }
    Ok((expected, bytes))
}

fn run(args: &Args) -> Result<(), BoxError> {
    let options = LogOptions {
        durability: Durability::Fsync,
        ..LogOptions::default()
    };
    let log = Log::open(&args.dir, options)?;
    let start = log.next_offset();
    if start == 0 {
        println!("log:      {} (new)", args.dir.display());
    } else {
        println!(
            "log:      {} (existing, appending from offset {start})",
            args.dir.display()
        );
    }

    let appended = append_all(&log, args.records, args.writers)?;
    let metrics = log.metrics();
    log.close()?;
    println!(
        "append:   {} records of {PAYLOAD_BYTES} bytes by {} tokio tasks in {:.2} s: {:.0} durable records/s",
        args.records,
        args.writers,
        appended.seconds,
        args.records as f64 / appended.seconds,
    );
    println!(
        "fsync:    {} fdatasync calls, {:.1} records per fdatasync, {:.1} MiB written",
        metrics.fsyncs,
        metrics.records as f64 / metrics.fsyncs.max(1) as f64,
        metrics.bytes as f64 / f64::from(1 << 20),
    );
    let owners = check_offsets(&appended, start, args.records)?;

    let started = Instant::now();
    let reader = Log::open_read_only(&args.dir)?;
    let total = start + args.records;
    if reader.next_offset() != total {
        return Err(format!(
            "reopened log ends at {}, expected {total}",
            reader.next_offset()
        )
        .into());
    }
    let (read, bytes) = read_back(&reader, start, &owners)?;
    let seconds = started.elapsed().as_secs_f64();
    if read != total {
        return Err(format!("read {read} records back, expected {total}").into());
    }
    println!(
        "replay:   {read} records (offsets 0..{total}, dense) in {seconds:.2} s: {:.0} records/s, {:.0} MiB/s of payload",
        read as f64 / seconds,
        bytes as f64 / f64::from(1 << 20) / seconds,
    );

    let started = Instant::now();
    let report = reader.verify()?;
    println!(
        "verify:   {} segments, {} batches, {} records, next offset {}, {} problems ({:.2} s): {}",
        report.segments,
        report.batches,
        report.records,
        report.next_offset,
        report.problems.len(),
        started.elapsed().as_secs_f64(),
        if report.is_clean() {
            "clean"
        } else {
            "NOT CLEAN"
        },
    );
    for problem in &report.problems {
        println!(
            "  {:?} in {} at byte {}: {}",
            problem.kind,
            problem.path.display(),
            problem.position,
            problem.reason
        );
    }
    if !report.is_clean() {
        return Err("verification found problems".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("demo: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: error: {e}");
            ExitCode::FAILURE
        }
    }
}
