//! The threads the awaitable calls wait on.
//!
//! An awaitable call must not block the event loop, so its blocking wait
//! (for the group commit) runs on another thread. Starting a thread per call
//! costs more than the commit it waits for; this pool keeps its threads, and
//! starts one more only when none is idle, so every call in flight still
//! waits on a thread of its own and joins the same group commit (64 tasks
//! awaiting at once share fsyncs as 64 Rust producers do).
//!
//! Bounded: at most `THREADS_MAX` threads; beyond that calls queue (still
//! never blocking the caller) and wait for a free thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Threads the pool starts at most.
const THREADS_MAX: usize = 512;

struct Pool {
    sender: flume::Sender<Job>,
    receiver: flume::Receiver<Job>,
    idle: AtomicUsize,
    threads: AtomicUsize,
}

static POOL: OnceLock<Pool> = OnceLock::new();

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let (sender, receiver) = flume::unbounded();
        Pool {
            sender,
            receiver,
            idle: AtomicUsize::new(0),
            threads: AtomicUsize::new(0),
        }
    })
}

/// Runs `job` on a pool thread; never blocks.
pub(crate) fn spawn(job: Job) -> std::io::Result<()> {
    let pool = pool();
    // Claim an idle thread, or start one (within the bound).
    let claimed = pool
        .idle
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok();
    if !claimed && pool.threads.fetch_add(1, Ordering::AcqRel) < THREADS_MAX {
        let receiver = pool.receiver.clone();
        let started = std::thread::Builder::new()
            .name("enforcelog-await".into())
            .spawn(move || worker(receiver));
        if let Err(e) = started {
            pool.threads.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
    } else if !claimed {
        pool.threads.fetch_sub(1, Ordering::AcqRel);
    }
    // The channel lives as long as the process (the pool is a static).
    pool.sender
        .send(job)
        .map_err(|_| std::io::Error::other("the await pool is gone"))
}

fn worker(receiver: flume::Receiver<Job>) {
    let pool = pool();
    while let Ok(job) = receiver.recv() {
        job();
        pool.idle.fetch_add(1, Ordering::AcqRel);
    }
}
