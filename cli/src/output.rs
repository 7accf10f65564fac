//! Output: machine output on stdout (JSON with fields in a stable order,
//! aligned tables), progress bars on stderr only when it is a terminal.
//! Times in JSON are always UTC; tables print them with [`crate::clock`].

use std::io::{BufWriter, IsTerminal, StdoutLock, Write};
use std::time::Duration;

use enforcelog::timestamp::format_us;
use enforcelog::{GapMarker, LossSpan, StoredEvent};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use crate::failure::{from_stdout, Failure};

/// The one `--format` vocabulary of every command that prints data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns (or one line per entry) for people; times follow
    /// `--local`/`TZ`.
    #[value(alias = "text")]
    Table,
    /// One JSON document (an array, or an object for a report); times UTC.
    Json,
    /// One JSON object per line; times UTC.
    Jsonl,
}

/// Buffered stdout; a closed pipe ends the command quietly.
pub struct Out {
    inner: BufWriter<StdoutLock<'static>>,
}

impl Out {
    pub fn new() -> Self {
        Self {
            inner: BufWriter::new(std::io::stdout().lock()),
        }
    }

    /// Writes `text` and a newline.
    pub fn line(&mut self, text: &str) -> Result<(), Failure> {
        self.inner
            .write_all(text.as_bytes())
            .and_then(|()| self.inner.write_all(b"\n"))
            .map_err(from_stdout)
    }

    pub fn flush(&mut self) -> Result<(), Failure> {
        self.inner.flush().map_err(from_stdout)
    }
}

/// A JSON object whose fields keep the order they were added in.
pub struct JsonObject {
    text: String,
}

impl JsonObject {
    pub fn new() -> Self {
        Self {
            text: String::from("{"),
        }
    }

    pub fn field(mut self, key: &str, value: impl Serialize) -> Self {
        if self.text.len() > 1 {
            self.text.push(',');
        }
        self.text.push_str(&to_json(&key));
        self.text.push(':');
        self.text.push_str(&to_json(&value));
        self
    }

    pub fn finish(mut self) -> String {
        self.text.push('}');
        self.text
    }
}

fn to_json(value: &impl Serialize) -> String {
    // Strings, numbers and serde_json values always serialise.
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// Adds an event's fields in the import format: `tenant_id`, `rule_id`,
/// `action_taken`, `run_id` and `details` when present, `enforced_at`.
pub fn event_fields(object: JsonObject, event: &StoredEvent) -> JsonObject {
    let mut object = object
        .field("tenant_id", &event.tenant_id)
        .field("rule_id", &event.rule_id)
        .field("action_taken", event.action.as_str());
    if let Some(run_id) = &event.run_id {
        object = object.field("run_id", run_id);
    }
    if let Some(details) = &event.details {
        object = object.field("details", details);
    }
    object.field("enforced_at", format_us(event.enforced_at_us))
}

/// Adds a gap marker's fields.
pub fn gap_fields(object: JsonObject, gap: &GapMarker) -> JsonObject {
    let object = object
        .field("dropped", gap.dropped)
        .field("first_dropped_at", format_us(gap.first_dropped_at_us))
        .field("last_dropped_at", format_us(gap.last_dropped_at_us));
    // A marker that says who lost what (payload schema 2); an older one
    // attributes nothing, and printing its whole count again says nothing.
    let all_unattributed =
        gap.losses.is_empty() && gap.unattributed.is_none_or(|s| s.count == gap.dropped);
    if all_unattributed {
        return object;
    }
    let span = |s: &LossSpan| {
        serde_json::json!({
            "count": s.count,
            "first_enforced_at": format_us(s.first_at_us),
            "last_enforced_at": format_us(s.last_at_us),
        })
    };
    let losses: Vec<Value> = gap
        .losses
        .iter()
        .map(|l| {
            let mut v = span(&l.span);
            v["tenant_id"] = Value::String(l.tenant_id.clone());
            v["rule_id"] = Value::String(l.rule_id.clone());
            v
        })
        .collect();
    object
        .field("losses", losses)
        .field("unattributed", gap.unattributed.as_ref().map(span))
}

/// Details as compact JSON for a table cell, cut to `max_chars`.
pub fn details_cell(details: Option<&serde_json::Map<String, Value>>, max_chars: usize) -> String {
    let Some(details) = details else {
        return "-".into();
    };
    let text = to_json(details);
    if text.chars().count() <= max_chars {
        return text;
    }
    let cut: String = text.chars().take(max_chars.saturating_sub(3)).collect();
    format!("{cut}...")
}

/// How a table column is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A plain-text table with aligned columns.
pub struct Table {
    headers: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[(&str, Align)]) -> Self {
        Self {
            headers: headers.iter().map(|&(h, a)| (h.to_string(), a)).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.headers.len(), "one cell per column");
        self.rows.push(row);
    }

    /// The table's lines, each prefixed with `indent`.
    pub fn lines(&self, indent: &str) -> Vec<String> {
        let widths: Vec<usize> = self
            .headers
            .iter()
            .enumerate()
            .map(|(i, (h, _))| {
                let cells = self.rows.iter().map(|r| r[i].chars().count());
                cells.chain([h.len()]).max().unwrap_or(0)
            })
            .collect();
        let header: Vec<String> = self.headers.iter().map(|(h, _)| h.clone()).collect();
        std::iter::once(&header)
            .chain(&self.rows)
            .map(|row| format!("{indent}{}", self.render_row(row, &widths)))
            .collect()
    }

    fn render_row(&self, row: &[String], widths: &[usize]) -> String {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .zip(&self.headers)
            .map(|((cell, &width), (_, align))| {
                let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
                match align {
                    Align::Left => format!("{cell}{pad}"),
                    Align::Right => format!("{pad}{cell}"),
                }
            })
            .collect();
        cells.join("  ").trim_end().to_string()
    }

    pub fn print(&self, out: &mut Out) -> Result<(), Failure> {
        for line in self.lines("") {
            out.line(&line)?;
        }
        Ok(())
    }
}

/// A progress bar on stderr when stderr is a terminal; hidden otherwise.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let template = format!(
        "{what} [{{bar:30.cyan/blue}}] {{human_pos}}/{{human_len}} ({{percent}}%) eta {{eta}}"
    );
    let style = ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Prints a warning or note on stderr (never on stdout).
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}
