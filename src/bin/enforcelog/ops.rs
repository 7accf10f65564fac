//! The operator's commands: `verify` (read-only, beside a running writer),
//! `repair` (the only command that changes a damaged store; it never
//! deletes) and `completions`.

use std::path::Path;

use clap::Args;
use clap_complete::Shell;
use enforcelog::log::{repair_dir, RepairAction, RepairReport};
use enforcelog::{verify_dir, Problem, ProblemKind, Store, TriggerStats, VerifyReport};

use crate::failure::Failure;
use crate::output::{note, Out};
use crate::store_dir::require_store;
use crate::{units, Global};

pub const VERIFY_ABOUT: &str = "Check every frame, index and checkpoint (read-only)";
pub const VERIFY_LONG_ABOUT: &str = "\
Check every frame of every segment, the segment indexes and the projection
checkpoints, without changing anything and without taking the writer's lock
(it works beside a running writer).

Each problem is one line, `<file>: byte <position>: <what>`:
  - damaged data (corruption, a missing or misplaced segment, a bad VERSION
    file) is printed on stdout and the exit code is 1;
  - a checkpoint that opens but differs from a rebuild from the log counts as
    corruption too (it would give wrong statistics);
  - a torn tail (a write that never finished, so was never acknowledged; the
    next writer open cuts it), a missing or stale index, and a checkpoint
    that is unreadable or stale (all rebuilt from the log on the next open)
    are warnings on stderr, with exit code 0.
Beside a running writer, a batch being written may show as a torn tail.
When the log is clean, a summary is printed on stdout. `enforcelog repair`
moves damaged data to quarantine.";

pub const REPAIR_ABOUT: &str = "Move what cannot be trusted to quarantine (never deletes)";
pub const REPAIR_LONG_ABOUT: &str = "\
Repair a damaged store: the only command that changes one. Every valid record
before the first damage is kept; since offsets stay dense, everything after
it (the damaged segment's tail and every later segment, even records that
still verify) is moved to DIR/quarantine/<timestamp>/, never deleted. Each
move is printed on stdout. A torn tail is left for the next writer open to
cut (nothing acknowledged is lost). Refuses with exit code 3 while a writer
holds the store's lock. Statistics checkpoints made stale by a repair are
rebuilt from the log on the next open.";

pub const COMPLETIONS_ABOUT: &str = "Print a shell completion script";
pub const COMPLETIONS_LONG_ABOUT: &str = "\
Print a completion script for SHELL on stdout, for example:
  enforcelog completions bash > ~/.local/share/bash-completion/completions/enforcelog
  enforcelog completions zsh > ~/.zfunc/_enforcelog";

#[derive(Debug, Args)]
pub struct VerifyArgs {}

#[derive(Debug, Args)]
pub struct RepairArgs {}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, elvish, fish, powershell or zsh.
    #[arg(value_enum)]
    shell: Shell,
}

pub fn verify(global: &Global, _args: &VerifyArgs) -> Result<(), Failure> {
    let dir = &global.data_dir;
    require_store(dir)?;
    let report = verify_dir(dir)?;
    let mut out = Out::new();
    let mut damage: Vec<String> = Vec::new();
    for problem in &report.problems {
        if let Some(line) = report_problem(problem) {
            out.line(&line)?;
            damage.push(line);
        }
    }
    if damage.is_empty() {
        damage = check_checkpoints(dir, &mut out)?;
    } else {
        note("warning: checkpoints not checked: the log itself is damaged");
    }
    if let Some(first) = damage.first() {
        out.flush()?;
        // Repair refuses a store whose VERSION it does not read; say so.
        let version_problem = report
            .problems
            .iter()
            .any(|p| p.path.file_name().is_some_and(|n| n == "VERSION"));
        let hint = if version_problem {
            "the store's VERSION is not one this build reads: use the enforcelog that wrote it \
             (repair cannot help)"
        } else {
            "`enforcelog repair` moves what cannot be trusted to quarantine"
        };
        return Err(Failure::corruption(format!(
            "{} problem(s) found, the first: {first}; {hint}",
            damage.len()
        )));
    }
    out.line(&summary(&report))?;
    out.flush()
}

/// A damage line for stdout, or `None` after printing a warning.
fn report_problem(problem: &Problem) -> Option<String> {
    let line = format!(
        "{}: byte {}: {}",
        problem.path.display(),
        problem.position,
        problem.reason
    );
    let why = match problem.kind {
        ProblemKind::Corruption | ProblemKind::Layout => return Some(line),
        ProblemKind::TornTail => {
            "torn tail: a write that never finished; the next writer open cuts it, \
             nothing acknowledged is lost"
        }
        ProblemKind::Index => "derived data: rebuilt on the next open",
    };
    note(&format!("warning: {line} ({why})"));
    None
}

fn summary(report: &VerifyReport) -> String {
    format!(
        "ok: {} segment(s), {} batches, {} records verified; next offset {}",
        report.segments,
        units::thousands(report.batches),
        units::thousands(report.records),
        report.next_offset
    )
}

/// Compares each projection checkpoint with a rebuild from the log; returns
/// the damage lines (also printed on stdout).
fn check_checkpoints(dir: &Path, out: &mut Out) -> Result<Vec<String>, Failure> {
    let store = match Store::open_read_only(dir) {
        Ok(store) => store,
        Err(e) => {
            note(&format!("warning: checkpoints not checked: {e}"));
            return Ok(Vec::new());
        }
    };
    // Narrows the window in which a running writer's newer checkpoint looks
    // stale to this reader.
    store.refresh()?;
    let mut damage = Vec::new();
    for check in store.verify_projections()? {
        let Some(problem) = check.problem else {
            continue;
        };
        let path = dir.join("projections").join(format!("{}.ckpt", check.name));
        let line = format!("{}: byte 0: {problem}", path.display());
        if check.checkpoint_offset.is_some() {
            out.line(&line)?;
            damage.push(line);
        } else {
            note(&format!(
                "warning: {line} (ignored; rebuilt from the log on the next open)"
            ));
        }
    }
    // Records appended around the store (not event payloads): not damage
    // of the log, but stats and queries skip them, so say how many.
    let undecodable = store
        .with_projection::<TriggerStats, _>(|p, _| p.undecodable())?
        .unwrap_or(0);
    if undecodable > 0 {
        note(&format!(
            "warning: {undecodable} log entries are not store payloads (written around the \
             store); stats and queries skip them"
        ));
    }
    Ok(damage)
}

pub fn repair(global: &Global, _args: &RepairArgs) -> Result<(), Failure> {
    let dir = &global.data_dir;
    require_store(dir)?;
    let report = repair_dir(dir)?;
    let mut out = Out::new();
    for line in repair_lines(&report) {
        out.line(&line)?;
    }
    out.flush()
}

fn repair_lines(report: &RepairReport) -> Vec<String> {
    if report.actions.is_empty() {
        return vec![format!(
            "nothing to repair: every record verifies (next offset {})",
            report.next_offset
        )];
    }
    let mut lines = Vec::new();
    if let Some(reason) = &report.reason {
        lines.push(format!("damage: {reason}"));
    }
    for action in &report.actions {
        lines.push(match action {
            RepairAction::Truncated {
                segment,
                at,
                bytes_moved,
                saved_as,
            } => format!(
                "truncated {} at byte {at}: moved the {bytes_moved} bytes after it to {}",
                segment.display(),
                saved_as.display()
            ),
            RepairAction::Moved { from, to } => {
                format!("moved {} to {}", from.display(), to.display())
            }
        });
    }
    let quarantine = report
        .quarantine
        .as_ref()
        .map_or_else(|| "-".into(), |q| q.display().to_string());
    lines.push(format!(
        "kept every record below offset {}; nothing was deleted (quarantine: {quarantine})",
        report.next_offset
    ));
    lines
}

pub fn completions(args: &CompletionsArgs, command: &mut clap::Command) -> Result<(), Failure> {
    // Generated into memory first: the generator panics on a write error.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, command, "enforcelog", &mut script);
    let mut out = Out::new();
    out.line(String::from_utf8_lossy(&script).trim_end())?;
    out.flush()
}
