//! The benches' Rust baseline, measured in the same process and the same
//! minute as the Python figures beside it (python/benches/durable.py):
//! `producers` tokio tasks on a two-thread runtime, each with one
//! `Store::record(..).await` in flight, like `cargo bench --bench durable`.
//! A disk whose speed drifts from minute to minute then cannot make the
//! Python/Rust ratio look better or worse than it is.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use enforcelog::{Action, Event, Store, StoreOptions};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

use crate::to_py_err;

/// Durable records per second from `producers` Rust tasks for `seconds`,
/// each event like the Python bench's: tenant `tenant_123`, rule
/// `rule_{i % 16}`, BLOCKED, run `run_{i}`, `details_json`.
#[pyfunction]
pub(crate) fn rust_producers(
    py: Python<'_>,
    path: PathBuf,
    producers: usize,
    seconds: f64,
    details_json: &str,
) -> PyResult<f64> {
    let store = Store::open(&path, StoreOptions::default()).map_err(|e| to_py_err(py, &e))?;
    let templates = (0..producers)
        .map(|i| {
            Event::new("tenant_123", format!("rule_{}", i % 16), Action::Blocked)
                .with_run_id(format!("run_{i}"))
                .with_details_json(details_json)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| to_py_err(py, &e.into()))?;
    let window = Duration::from_secs_f64(seconds.max(0.0));
    let run = || -> std::io::Result<f64> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()?;
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        runtime.block_on(async {
            let tasks: Vec<_> = templates
                .into_iter()
                .map(|template| {
                    let store = store.clone();
                    let done = Arc::clone(&done);
                    tokio::spawn(async move {
                        while started.elapsed() < window {
                            if store.record(template.clone()).await.is_ok() {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                let _ = task.await;
            }
        });
        Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
    };
    let rate = crate::gil::without_gil(py, run).map_err(|e| PyOSError::new_err(e.to_string()))?;
    crate::gil::without_gil(py, || store.close()).map_err(|e| to_py_err(py, &e))?;
    Ok(rate)
}
