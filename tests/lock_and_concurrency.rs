//! The writer lock, read-only views beside a live writer, and many
//! concurrent appenders, on the real file system.
//!
//! The cross-process lock test runs this same test binary again as a child
//! process, selecting only [`child_process_probe`] and telling it through
//! `ENFORCELOG_CHILD_DIR` which log to try; without that variable the probe
//! does nothing.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use enforcelog::{Durability, Error, Log, LogOptions, Record};

const CHILD_DIR_ENV: &str = "ENFORCELOG_CHILD_DIR";
const CHILD_TEST: &str = "child_process_probe";
/// How long an open that should fail at once may take before the test
/// calls it blocked (generous: only a hang should trip it).
const BLOCKED_AFTER: Duration = Duration::from_secs(20);

fn fsync_options(segment_max_bytes: u64) -> LogOptions {
    LogOptions {
        segment_max_bytes,
        record_max_bytes: 1024,
        durability: Durability::Fsync,
        ..LogOptions::default()
    }
}

/// Runs `f` on another thread and fails if it does not return in time.
fn within_time<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(BLOCKED_AFTER)
        .unwrap_or_else(|_| panic!("{what} did not return within {BLOCKED_AFTER:?}"))
}

fn try_open(dir: &Path) -> enforcelog::Result<Log> {
    let dir = dir.to_path_buf();
    within_time("a second Log::open", move || {
        Log::open(dir, LogOptions::default())
    })
}

#[test]
fn a_second_writer_in_this_process_is_locked_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Log::open(dir.path(), fsync_options(1 << 20)).expect("open");
    first
        .append_blocking(Record::new(1, b"one".to_vec()))
        .expect("append");
    match try_open(dir.path()) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    // A clone is the same writer, not a second one; a read-only view
    // takes no lock.
    let clone = first.clone();
    let ro = Log::open_read_only(dir.path()).expect("read-only beside the writer");
    assert_eq!(ro.next_offset(), 1);
    drop(first);
    assert!(
        matches!(try_open(dir.path()), Err(Error::Locked { .. })),
        "a live clone still holds the lock"
    );
    drop(clone);

    let second = try_open(dir.path()).expect("open after the first writer is dropped");
    second
        .append_blocking(Record::new(2, b"two".to_vec()))
        .expect("append");
    // `close` releases the lock even while the handle lives on.
    second.close().expect("close");
    let third = try_open(dir.path()).expect("open after close");
    assert_eq!(third.next_offset(), 2);
    assert!(matches!(
        second.append_blocking(Record::new(3, b"x".to_vec())),
        Err(Error::Closed)
    ));
}

/// The child side of the cross-process test: tries to open the log named by
/// `ENFORCELOG_CHILD_DIR` and prints what happened. Does nothing when run
/// as an ordinary test.
#[test]
fn child_process_probe() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    match Log::open_read_only(&dir) {
        Ok(ro) => println!("CHILD_READ_ONLY next_offset={}", ro.next_offset()),
        Err(e) => println!("CHILD_READ_ONLY error {e}"),
    }
    match Log::open(&dir, LogOptions::default()) {
        Err(Error::Locked { .. }) => println!("CHILD_OPEN=locked"),
        Err(e) => println!("CHILD_OPEN=error {e}"),
        Ok(log) => {
            let offset = log.append_blocking(Record::new(9, b"from the child".to_vec()));
            let closed = log.close();
            println!("CHILD_OPEN=opened append={offset:?} close={closed:?}");
        }
    }
}

/// Runs [`child_process_probe`] in a new process on `dir`; returns its output.
fn run_child(dir: &Path) -> String {
    let exe = std::env::current_exe().expect("current test binary");
    let mut command = Command::new(exe);
    command
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir);
    let output =
        within_time("the child process", move || command.output()).expect("run the child process");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the child process failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn a_second_writer_in_another_process_is_locked_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), fsync_options(1 << 20)).expect("open");
    log.append_blocking(Record::new(1, b"parent".to_vec()))
        .expect("append");

    let out = run_child(dir.path());
    assert!(out.contains("CHILD_OPEN=locked"), "child output:\n{out}");
    assert!(
        out.contains("CHILD_READ_ONLY next_offset=1"),
        "child output:\n{out}"
    );

    drop(log);
    let out = run_child(dir.path());
    assert!(
        out.contains("CHILD_OPEN=opened append=Ok(1) close=Ok(())"),
        "once the parent let go, the child should write: output:\n{out}"
    );
    let log = Log::open(dir.path(), fsync_options(1 << 20)).expect("reopen");
    let payloads: Vec<Vec<u8>> = log
        .read_from(0)
        .expect("read")
        .map(|r| r.expect("record").payload)
        .collect();
    assert_eq!(payloads, [b"parent".to_vec(), b"from the child".to_vec()]);
}

// ---------------------------------------------------------------------------
// Read-only views beside a writer.

fn read_all(log: &Log) -> Vec<(u64, Vec<u8>)> {
    log.read_from(0)
        .expect("read_from(0)")
        .map(|r| r.map(|r| (r.offset, r.payload)).expect("read a record"))
        .collect()
}

#[test]
fn a_read_only_view_sees_what_was_committed_and_refreshes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = Log::open(dir.path(), fsync_options(4096)).expect("open");
    writer
        .append_batch_blocking((0..3u8).map(|i| Record::new(0, vec![i])).collect())
        .expect("batch");
    writer
        .append_blocking(Record::new(0, vec![3]))
        .expect("append");

    let ro = Log::open_read_only(dir.path()).expect("open read-only");
    assert_eq!(ro.next_offset(), 4);
    let expected: Vec<(u64, Vec<u8>)> = (0..4u8).map(|i| (u64::from(i), vec![i])).collect();
    assert_eq!(read_all(&ro), expected);

    // More appends, enough to roll several segments.
    let mut next = 4u8;
    for _ in 0..40 {
        let batch = (next..next + 5)
            .map(|i| Record::new(0, vec![i; 150]))
            .collect();
        writer.append_batch_blocking(batch).expect("batch");
        next += 5;
    }
    assert_eq!(ro.next_offset(), 4, "a view does not move until refreshed");
    assert_eq!(read_all(&ro), expected);
    ro.refresh().expect("refresh");
    assert_eq!(ro.next_offset(), u64::from(next));
    let all = read_all(&ro);
    assert_eq!(all.len(), usize::from(next));
    for (offset, payload) in &all[4..] {
        assert_eq!(payload, &vec![u8::try_from(*offset).expect("small"); 150]);
    }
    assert!(ro.verify().expect("verify").is_clean());
    assert!(
        std::fs::read_dir(dir.path())
            .expect("list")
            .filter(|e| e
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log")))
            .count()
            > 2,
        "the workload should have rolled segments"
    );
}

/// Records per batch in the concurrent reader test.
const BATCH_LEN: u64 = 5;

#[test]
fn a_refreshing_reader_never_sees_part_of_a_batch() {
    const BATCHES: u64 = 600;
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = Log::open(dir.path(), fsync_options(4096)).expect("open");
    let ro = Log::open_read_only(dir.path()).expect("open read-only");
    let total = BATCHES * BATCH_LEN;

    let writing = std::thread::spawn(move || {
        for batch in 0..BATCHES {
            let records = (0..BATCH_LEN)
                .map(|i| {
                    let offset = batch * BATCH_LEN + i;
                    Record::new(0, format!("{offset:08} {}", "x".repeat(40)))
                })
                .collect();
            let range = writer.append_batch_blocking(records).expect("batch");
            assert_eq!(range.start, batch * BATCH_LEN);
        }
        writer.close().expect("close");
    });

    let mut seen = 0u64;
    let mut views = 0u64;
    let mut partial_views = 0u64;
    // Each pass refreshes; the writer finishes in bounded time, and the
    // pass limit only guards against a reader that stops making progress.
    while seen < total {
        views += 1;
        assert!(views < 10_000_000, "the reader stopped making progress");
        ro.refresh().expect("refresh beside a live writer");
        let next = ro.next_offset();
        assert_eq!(
            next % BATCH_LEN,
            0,
            "the view ends inside a batch: next_offset {next}"
        );
        assert!(next >= seen, "the view went back from {seen} to {next}");
        for record in ro.read_from(seen).expect("read_from") {
            let record = record.expect("read a record beside a live writer");
            let want = format!("{:08} {}", record.offset, "x".repeat(40));
            assert_eq!(record.payload, want.as_bytes(), "at {}", record.offset);
            seen = record.offset + 1;
        }
        assert_eq!(seen, next, "read fewer records than the view holds");
        if next > 0 && next < total {
            partial_views += 1;
        }
    }
    writing.join().expect("writer thread");
    assert_eq!(seen, total);
    eprintln!("{views} views, {partial_views} while the writer was running");
}

// ---------------------------------------------------------------------------
// Many appenders.

fn tagged(task: u32, seq: u32) -> Record {
    let mut payload = Vec::with_capacity(24);
    payload.extend_from_slice(&task.to_le_bytes());
    payload.extend_from_slice(&seq.to_le_bytes());
    payload.extend_from_slice(b"concurrent-append");
    Record::new(i64::from(task) << 32 | i64::from(seq), payload)
}

fn untag(payload: &[u8]) -> (u32, u32) {
    let task = u32::from_le_bytes(payload[0..4].try_into().expect("4 bytes"));
    let seq = u32::from_le_bytes(payload[4..8].try_into().expect("4 bytes"));
    (task, seq)
}

/// Checks the offsets handed to each appender and what a reopen reads.
fn check_appends(dir: &Path, offsets: &[Vec<u64>], log: &Log) {
    let tasks = offsets.len();
    let per_task = offsets[0].len();
    let total = (tasks * per_task) as u64;
    let mut all: Vec<u64> = offsets.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all.len() as u64, total);
    assert!(
        all.iter().copied().eq(0..total),
        "the acknowledged offsets are not exactly 0..{total}"
    );
    for (task, offsets) in offsets.iter().enumerate() {
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "task {task}: offsets of its sequential appends are not increasing"
        );
    }
    let metrics = log.metrics();
    assert_eq!(metrics.records, total);
    assert_eq!(metrics.batches, total);
    assert!(metrics.fsyncs > 0);
    let per_fsync = metrics.records as f64 / metrics.fsyncs as f64;
    eprintln!("{metrics:?}: {per_fsync:.1} records per fsync");
    assert!(
        per_fsync > 1.0,
        "no group commit: {} records, {} fsyncs",
        metrics.records,
        metrics.fsyncs
    );
    log.close().expect("close");

    let reopened = Log::open(dir, LogOptions::default()).expect("reopen");
    assert_eq!(reopened.next_offset(), total);
    let mut found = HashSet::new();
    for record in reopened.read_from(0).expect("read_from") {
        let record = record.expect("read a record");
        let (task, seq) = untag(&record.payload);
        assert_eq!(
            offsets[task as usize][seq as usize], record.offset,
            "task {task} seq {seq} was acknowledged at another offset"
        );
        assert_eq!(record.timestamp_us, i64::from(task) << 32 | i64::from(seq));
        assert!(found.insert((task, seq)), "task {task} seq {seq} twice");
    }
    assert_eq!(found.len() as u64, total);
    assert!(reopened.verify().expect("verify").is_clean());
}

#[test]
fn many_tokio_tasks_get_dense_offsets_and_share_fsyncs() {
    const TASKS: u32 = 64;
    const APPENDS: u32 = 1000;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), fsync_options(1 << 20)).expect("open");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let offsets: Vec<Vec<u64>> = runtime.block_on(async {
        let handles: Vec<_> = (0..TASKS)
            .map(|task| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut offsets = Vec::with_capacity(APPENDS as usize);
                    for seq in 0..APPENDS {
                        offsets.push(log.append(tagged(task, seq)).await.expect("append"));
                    }
                    offsets
                })
            })
            .collect();
        let mut offsets = Vec::new();
        for handle in handles {
            offsets.push(handle.await.expect("task"));
        }
        offsets
    });
    let elapsed = started.elapsed();
    eprintln!(
        "{} appends from {TASKS} tasks under Durability::Fsync in {elapsed:?}",
        TASKS * APPENDS
    );
    check_appends(dir.path(), &offsets, &log);
}

#[test]
fn many_threads_get_dense_offsets_and_share_fsyncs() {
    const THREADS: u32 = 16;
    const APPENDS: u32 = 500;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), fsync_options(256 << 10)).expect("open");
    let started = Instant::now();
    let offsets: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|thread| {
                let log = &log;
                scope.spawn(move || {
                    (0..APPENDS)
                        .map(|seq| log.append_blocking(tagged(thread, seq)).expect("append"))
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("appender thread"))
            .collect()
    });
    eprintln!(
        "{} appends from {THREADS} threads under Durability::Fsync in {:?}",
        THREADS * APPENDS,
        started.elapsed()
    );
    check_appends(dir.path(), &offsets, &log);
}
