//! Draws the benchmark charts of `docs/BENCHMARKS.md` from the benches'
//! JSON output.
//!
//! ```text
//! cargo bench --bench durable && cargo bench --bench reads
//! cargo run --example bench_charts
//! ```
//!
//! Reads `target/bench-results/durable.json` and `reads.json` (or
//! `$CARGO_TARGET_DIR/bench-results/`); where only a smoke run's
//! `<bench>-quick.json` exists it is drawn instead, and the chart title says
//! so. Writes SVG files into `docs/charts/`: throughput against producers
//! (enforcelog, SQLite batched and naive, the raw limit), replay rate against
//! the bare passes, query latency against SQLite, and cold open.
//!
//! Only plotters' SVG backend: text is written as SVG `<text>` and drawn by
//! the viewer, so no font is needed here.

use std::error::Error;
use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use serde_json::Value;

type Res<T> = Result<T, Box<dyn Error>>;

const ENFORCELOG: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const SQLITE_BATCHED: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const SQLITE_NAIVE: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const RAW_LIMIT: RGBColor = RGBColor(0x33, 0x33, 0x33);
const MACHINE: RGBColor = RGBColor(0x99, 0x99, 0x99);
const ENFORCELOG_GROWING: RGBColor = RGBColor(0x9e, 0xc5, 0xe8);

fn results_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench-results")
}

/// A bench's figures and whether they come from a smoke run.
fn load(dir: &Path, bench: &str) -> Res<Option<(Value, bool)>> {
    for (name, quick) in [
        (format!("{bench}.json"), false),
        (format!("{bench}-quick.json"), true),
    ] {
        let path = dir.join(name);
        if path.exists() {
            let value: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
            println!("read {}", path.display());
            return Ok(Some((value, quick)));
        }
    }
    println!(
        "no {bench} figures in {} (run `cargo bench --bench {bench}`)",
        dir.display()
    );
    Ok(None)
}

fn title(text: &str, quick: bool) -> String {
    if quick {
        format!("{text} (SMOKE RUN: tiny sizes, not figures)")
    } else {
        text.to_string()
    }
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

fn si(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.2} M", v / 1e6),
        v if v >= 1e3 => format!("{:.0} k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// A power-of-ten range around every value.
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (1.0, 10.0);
    }
    (
        10f64.powf(lo.log10().floor()),
        10f64.powf(hi.log10().ceil() + 0.3),
    )
}

// --------------------------------------------------------------- durable

struct Point {
    /// Producers x events per call.
    in_flight: f64,
    events_per_s: f64,
}

/// One system's points at one batch size (1: one event in flight per
/// producer; more: pipelined), by producers.
fn series(durable: &Value, system: &str, pipelined: bool) -> Vec<Point> {
    let mut points: Vec<Point> = durable["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["system"] == system && (f(r, "batch") > 1.0) == pipelined)
        .map(|r| Point {
            in_flight: f(r, "producers") * f(r, "batch"),
            events_per_s: f(r, "events_per_s"),
        })
        .collect();
    points.sort_by(|a, b| a.in_flight.total_cmp(&b.in_flight));
    points
}

const SYSTEMS: [(&str, &str, RGBColor); 6] = [
    ("enforcelog", "enforcelog", ENFORCELOG),
    (
        "enforcelog-growing",
        "enforcelog, zero fill off (growing file)",
        ENFORCELOG_GROWING,
    ),
    ("sqlite-batched", "SQLite, batched writer", SQLITE_BATCHED),
    ("sqlite-naive", "SQLite, one tx per event", SQLITE_NAIVE),
    ("raw-limit", "raw limit, growing file", RAW_LIMIT),
    ("raw-prezeroed", "raw limit, pre-zeroed file", MACHINE),
];

fn durable_panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    durable: &Value,
    pipelined: bool,
    y: (f64, f64),
) -> Res<()> {
    let (caption, x_desc, x) = if pipelined {
        (
            "pipelined: a batch of events per call",
            "events in flight (producers x events per call)",
            200f64..40_000.0,
        )
    } else {
        (
            "one event in flight per producer",
            "concurrent producers",
            0.7f64..400.0,
        )
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x.log_scale(), (y.0..y.1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("acknowledged events/s (fdatasync)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| si(*v))
        .draw()?;
    for (system, label, color) in SYSTEMS {
        let points = series(durable, system, pipelined);
        if points.is_empty() {
            continue;
        }
        let xy: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.in_flight, p.events_per_s))
            .collect();
        chart
            .draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(xy.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn durable_chart(out: &Path, durable: &Value, quick: bool) -> Res<PathBuf> {
    let path = out.join("durable_throughput.svg");
    draw_durable(&path, durable, quick)?;
    Ok(path)
}

fn draw_durable(path: &Path, durable: &Value, quick: bool) -> Res<()> {
    let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let all = durable["results"].as_array().into_iter().flatten();
    let y = log_bounds(all.map(|r| f(r, "events_per_s")));
    let root = root.titled(
        &title(
            "Durable appends (Durability::Fsync): throughput vs producers",
            quick,
        ),
        ("sans-serif", 20),
    )?;
    let (left, right) = root.split_horizontally(550);
    durable_panel(&left, durable, false, y)?;
    durable_panel(&right, durable, true, y)?;
    root.present()?;
    Ok(())
}

// ------------------------------------------------------------ bar charts

/// One horizontal bar: label, value, an optional second value drawn as a
/// tick (a p99 beside a p50), colour.
struct Bar {
    label: String,
    value: f64,
    tick: Option<f64>,
    color: RGBColor,
}

fn bar_chart(
    path: &Path,
    caption: &str,
    x_desc: &str,
    bars: &[Bar],
    format: &dyn Fn(f64) -> String,
) -> Res<()> {
    let height = 110 + 34 * bars.len() as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let values = bars.iter().flat_map(|b| [Some(b.value), b.tick]).flatten();
    let (lo, hi) = log_bounds(values);
    let n = bars.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(300)
        // An integer range includes its end: 0..n - 1 is n rows.
        .build_cartesian_2d(
            (lo..hi * 3.0).log_scale(),
            (0..n.saturating_sub(1)).into_segmented(),
        )?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .x_desc(x_desc)
        .x_label_formatter(&|v| format(*v))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => bars
                .get(n.saturating_sub(1 + *i))
                .map_or(String::new(), |b| b.label.clone()),
            SegmentValue::Last => String::new(),
        })
        .draw()?;
    // Drawn top-down: the first bar on top.
    for (i, bar) in bars.iter().enumerate() {
        let row = n - 1 - i;
        let mut rect = Rectangle::new(
            [
                (lo, SegmentValue::Exact(row)),
                (bar.value, SegmentValue::Exact(row + 1)),
            ],
            bar.color.filled(),
        );
        rect.set_margin(6, 6, 0, 0);
        chart.draw_series(std::iter::once(rect))?;
        let mut text = format(bar.value);
        if let Some(tick) = bar.tick {
            let tick_line = PathElement::new(
                vec![
                    (tick, SegmentValue::Exact(row)),
                    (tick, SegmentValue::Exact(row + 1)),
                ],
                BLACK.stroke_width(2),
            );
            chart.draw_series(std::iter::once(tick_line))?;
            text = format!("{text}  (p99 {})", format(tick));
        }
        let at = bar.tick.unwrap_or(bar.value).max(bar.value) * 1.08;
        chart.draw_series(std::iter::once(Text::new(
            text,
            (at, SegmentValue::CenterOf(row)),
            ("sans-serif", 13),
        )))?;
    }
    root.present()?;
    Ok(())
}

fn mega(events: f64) -> String {
    if events >= 1e6 {
        format!("{:.0}M", events / 1e6)
    } else {
        format!("{events:.0}")
    }
}

fn replay_chart(out: &Path, reads: &Value, quick: bool) -> Res<PathBuf> {
    let path = out.join("replay.svg");
    let mut bars = Vec::new();
    for size in reads["sizes"].as_array().into_iter().flatten() {
        let n = mega(f(size, "events"));
        let r = &size["replay"];
        let rows = [
            (
                "mmap read of the segments",
                "mmap_read_events_per_s",
                MACHINE,
            ),
            (
                "log read (frames + checksums)",
                "log_read_events_per_s",
                RAW_LIMIT,
            ),
            (
                "scan, 1 thread (frames + checksums in place)",
                "scan_1_thread_events_per_s",
                RAW_LIMIT,
            ),
            (
                "scan, 2 threads (frames + checksums in place)",
                "scan_2_threads_events_per_s",
                RAW_LIMIT,
            ),
            (
                "bare pass (checksums + decode)",
                "decode_events_per_s",
                SQLITE_NAIVE,
            ),
            (
                "replay into TriggerStats",
                "replay_events_per_s",
                ENFORCELOG,
            ),
            (
                "replay by keys, 1 thread (scan + view + apply_keys)",
                "replay_keys_1_thread_events_per_s",
                ENFORCELOG,
            ),
            (
                "replay by keys, 2 threads + merge",
                "replay_keys_2_threads_events_per_s",
                ENFORCELOG,
            ),
        ];
        let share = f(r, "replay_over_decode") * 100.0;
        for (label, key, color) in rows {
            // A results file from before the scan passes has no such figure.
            if r[key].is_null() {
                continue;
            }
            let label = if key == "replay_events_per_s" {
                format!("{n} events: {label} ({share:.0}% of bare)")
            } else {
                format!("{n} events: {label}")
            };
            bars.push(Bar {
                label,
                value: f(r, key),
                tick: None,
                color,
            });
        }
    }
    let caption = title(
        "Replay rate vs the bare passes (page cache, 1 thread unless said)",
        quick,
    );
    bar_chart(&path, &caption, "events/s (log scale)", &bars, &|v| {
        format!("{}/s", si(v))
    })?;
    Ok(path)
}

fn query_chart(out: &Path, reads: &Value, quick: bool) -> Res<PathBuf> {
    let path = out.join("queries.svg");
    let q = &reads["queries"];
    let rows = [
        (
            "enforcelog stats(tenant, rule)",
            "enforcelog_stats",
            ENFORCELOG,
        ),
        (
            "SQLite COUNT(*) in the window",
            "sqlite_count",
            SQLITE_BATCHED,
        ),
        ("SQLite MAX(enforced_at)", "sqlite_max", SQLITE_BATCHED),
        (
            "SQLite all of stats, one statement",
            "sqlite_stats",
            SQLITE_BATCHED,
        ),
        (
            "enforcelog query: 1 tenant, 1 day",
            "enforcelog_range",
            ENFORCELOG,
        ),
        ("SQLite: 1 tenant, 1 day", "sqlite_range", SQLITE_BATCHED),
        ("enforcelog query: 1 run_id", "enforcelog_run", ENFORCELOG),
        (
            "SQLite: 1 run_id (index on run_id)",
            "sqlite_run",
            SQLITE_BATCHED,
        ),
    ];
    let bars: Vec<Bar> = rows
        .iter()
        // A results file from before the run query has no such figure.
        .filter(|&&(_, key, _)| !q[key].is_null())
        .map(|&(label, key, color)| Bar {
            label: label.to_string(),
            value: f(&q[key], "p50_us"),
            tick: Some(f(&q[key], "p99_us")),
            color,
        })
        .collect();
    let caption = title(
        &format!(
            "Query latency, p50 bar and p99 tick ({} events, {} rules)",
            mega(f(q, "events")),
            f(q, "rules")
        ),
        quick,
    );
    bar_chart(&path, &caption, "µs (log scale)", &bars, &|v| {
        if v >= 1000.0 {
            format!("{:.1} ms", v / 1000.0)
        } else {
            format!("{v:.2} µs")
        }
    })?;
    Ok(path)
}

fn cold_open_chart(out: &Path, reads: &Value, quick: bool) -> Res<PathBuf> {
    let path = out.join("cold_open.svg");
    let mut bars = Vec::new();
    for size in reads["sizes"].as_array().into_iter().flatten() {
        let n = mega(f(size, "events"));
        let open = &size["cold_open"];
        let rows = [
            (
                "open + stats, fresh checkpoint",
                f(open, "fresh_s"),
                ENFORCELOG,
            ),
            (
                "open + stats, checkpoint 1% behind",
                f(open, "stale_s"),
                SQLITE_NAIVE,
            ),
            (
                "open + stats, no checkpoint",
                f(open, "none_s"),
                SQLITE_BATCHED,
            ),
            (
                "full replay, for scale",
                f(&size["replay"], "replay_s"),
                MACHINE,
            ),
        ];
        for (label, seconds, color) in rows {
            bars.push(Bar {
                label: format!("{n} events: {label}"),
                value: seconds * 1e3,
                tick: None,
                color,
            });
        }
    }
    let caption = title("Cold open: Store::open to the first stats answer", quick);
    bar_chart(&path, &caption, "ms (log scale)", &bars, &|v| {
        if v >= 1000.0 {
            format!("{:.2} s", v / 1000.0)
        } else {
            format!("{v:.1} ms")
        }
    })?;
    Ok(path)
}

fn main() -> Res<()> {
    let dir = results_dir();
    let out = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join("charts");
    std::fs::create_dir_all(&out)?;
    let mut written = Vec::new();
    if let Some((durable, quick)) = load(&dir, "durable")? {
        written.push(durable_chart(&out, &durable, quick)?);
    }
    if let Some((reads, quick)) = load(&dir, "reads")? {
        written.push(replay_chart(&out, &reads, quick)?);
        written.push(query_chart(&out, &reads, quick)?);
        written.push(cold_open_chart(&out, &reads, quick)?);
    }
    for path in &written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
