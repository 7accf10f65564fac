//! The operator's commands: `verify` (read-only, beside a running writer),
//! `repair` (the only command that changes a damaged store; it never
//! deletes) and `completions`.

use std::path::Path;

use clap::Args;
use clap_complete::Shell;
use enforcelog::log::{
    repair_dir_with, RepairAction, RepairOptions, RepairReport, MANIFEST_FILE, QUARANTINE_DIR,
};
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
Repair a damaged store: the only command that changes one. Every batch that
verifies is kept, before and after the damage. Each damaged byte range is
copied to DIR/quarantine/<timestamp>/ (durably, before anything changes) and
replaced in its segment by a hole: entries of kind \"lost\" covering exactly
the offsets the damage destroyed, so `dump`, `tail`, `stats` and `verify`
show the loss and its size. The segment is rewritten to a new file renamed
over it (never cut in place: readers may have it mapped). A segment header
that damage made unreadable is written again from the file name (the old one
saved in quarantine); a segment whose content cannot be trusted (another
store's, another offset or format) becomes a hole of the offsets it held.
Only the segments after a gap between segments are moved out whole. Each
change is printed on stdout. With --dry-run, prints
what would change and changes nothing. A torn tail is left for the next
writer open to cut (nothing acknowledged is lost). Refuses with exit code 3
while a writer holds the store's lock. `enforcelog quarantine` lists what
repairs moved out.";

pub const QUARANTINE_ABOUT: &str = "List what repairs moved to quarantine";
pub const QUARANTINE_LONG_ABOUT: &str = "\
Print the manifest of every repair's quarantine directory, oldest first: one
line per item, tab-separated, as in DIR/quarantine/<timestamp>/MANIFEST:
  damaged <file> <segment> <position> <bytes> <first_offset> <lost> <reason>
      (<file> holds the raw bytes position..position+bytes of <segment>, which
      held offsets first_offset..first_offset+lost)
  moved <file>
      (a whole segment or index file, moved out under its own name)
Each line is prefixed with the quarantine directory. Read-only.";

pub const COMPLETIONS_ABOUT: &str = "Print a shell completion script";
pub const COMPLETIONS_LONG_ABOUT: &str = "\
Print a completion script for SHELL on stdout, for example:
  enforcelog completions bash > ~/.local/share/bash-completion/completions/enforcelog
  enforcelog completions zsh > ~/.zfunc/_enforcelog";

#[derive(Debug, Args)]
pub struct VerifyArgs {}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Print what would move (and how many events) without changing anything.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
pub struct QuarantineArgs {}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, elvish, fish, powershell or zsh.
    #[arg(value_enum)]
    shell: Shell,
}

pub fn verify(global: &Global, _args: &VerifyArgs) -> Result<(), Failure> {
    let dir = &global.data_dir;
    require_store(dir)?;
    let mut out = Out::new();
    let mut damage: Vec<String> = Vec::new();
    let mut version_problem = false;
    let mut first_damaged_shard = None;
    let mut summaries = Vec::new();
    // The root store, then each shard other writers made (issue 16): each
    // is a log of its own, checked on its own.
    for (shard, shard_dir) in Store::shard_dirs(dir)? {
        let report = verify_dir(&shard_dir)?;
        let mut found: Vec<String> = Vec::new();
        for problem in &report.problems {
            if let Some(line) = report_problem(problem) {
                out.line(&line)?;
                found.push(line);
            }
        }
        if found.is_empty() {
            found = check_checkpoints(&shard_dir, &mut out)?;
        } else {
            note("warning: checkpoints not checked: the log itself is damaged");
        }
        version_problem |= report
            .problems
            .iter()
            .any(|p| p.path.file_name().is_some_and(|n| n == "VERSION"));
        if found.is_empty() {
            summaries.push(match shard {
                0 => summary(&report),
                n => format!("shards/{n}: {}", summary(&report)),
            });
        }
        if !found.is_empty() && first_damaged_shard.is_none() {
            first_damaged_shard = Some(shard);
        }
        damage.extend(found);
    }
    if let Some(first) = damage.first() {
        out.flush()?;
        // Repair refuses a store whose VERSION it does not read; say so.
        let tampered = damage.iter().any(|line| line.starts_with("tampering: "));
        let hint = if tampered {
            "a batch's checksums match but its chain does not: its history was rewritten, which \
             repair cannot undo; `enforcelog audit --head` with a head kept from before tells \
             what a trusted head still covers"
        } else if version_problem {
            "the store's VERSION is not one this build reads: use the enforcelog that wrote it \
             (repair cannot help)"
        } else {
            "`enforcelog repair` moves what cannot be trusted to quarantine"
        };
        let hint = match first_damaged_shard {
            Some(n) if n > 0 => format!(
                "{hint} (run it on the shard's own directory: --data-dir {}/shards/{n})",
                dir.display()
            ),
            _ => hint.to_string(),
        };
        return Err(Failure::corruption(format!(
            "{} problem(s) found, the first: {first}; {hint}",
            damage.len()
        )));
    }
    for line in &summaries {
        out.line(line)?;
    }
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
        ProblemKind::Tampering => return Some(format!("tampering: {line}")),
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
    let holes = if report.lost > 0 {
        format!(
            " ({} of them holes: events lost to damage and recorded by a repair)",
            units::thousands(report.lost)
        )
    } else {
        String::new()
    };
    format!(
        "ok: {} segment(s), {} batches, {} records verified{holes}; next offset {}",
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

pub fn repair(global: &Global, args: &RepairArgs) -> Result<(), Failure> {
    let dir = &global.data_dir;
    require_store(dir)?;
    let options = RepairOptions {
        dry_run: args.dry_run,
    };
    let report = repair_dir_with(dir, options)?;
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
    let would = if report.dry_run { "would be " } else { "" };
    let mut lines = Vec::new();
    if report.dry_run {
        lines.push("dry run: nothing was changed".to_string());
    }
    if let Some(reason) = &report.reason {
        lines.push(format!("damage: {reason}"));
    }
    for action in &report.actions {
        match action {
            RepairAction::Rewritten { segment, damaged } => {
                for d in damaged {
                    lines.push(format!(
                        "{}: bytes {}..{} ({}) {would}moved to {}; offsets {}..{} ({} event(s)) {would}lost, recorded as a hole",
                        segment.display(),
                        d.position,
                        d.position + d.bytes,
                        d.reason,
                        d.saved_as.display(),
                        d.first_offset,
                        d.first_offset + d.lost,
                        d.lost
                    ));
                }
                lines.push(format!(
                    "{} {would}rewritten: every batch that verifies kept",
                    segment.display()
                ));
            }
            RepairAction::HeaderRewritten {
                segment,
                reason,
                saved_as,
            } => {
                lines.push(format!(
                    "{}: header ({reason}) {would}rewritten from the file name and the \
                     store's tag; old header {would}saved as {}",
                    segment.display(),
                    saved_as.display()
                ));
            }
            RepairAction::Moved { from, to } => {
                lines.push(format!(
                    "{} {would}moved to {}",
                    from.display(),
                    to.display()
                ));
            }
        }
    }
    let quarantine = report
        .quarantine
        .as_ref()
        .map_or_else(|| "-".into(), |q| q.display().to_string());
    lines.push(format!(
        "{} event(s) {would}lost to holes, {} event(s) in segments {would}moved out whole; \
         next offset {}; nothing {would}deleted (quarantine: {quarantine})",
        report.lost, report.moved_records, report.next_offset
    ));
    lines
}

/// Prints every quarantine manifest, oldest first.
pub fn quarantine(global: &Global, _args: &QuarantineArgs) -> Result<(), Failure> {
    let dir = &global.data_dir;
    require_store(dir)?;
    let top = dir.join(QUARANTINE_DIR);
    let mut out = Out::new();
    let mut names: Vec<String> = match std::fs::read_dir(&top) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(enforcelog::Error::Io {
                op: "list",
                path: top,
                source: e,
            }
            .into())
        }
    };
    // Named by microseconds since the epoch: numeric order is time order.
    names.sort_by_key(|n| (n.parse::<u64>().unwrap_or(u64::MAX), n.clone()));
    if names.is_empty() {
        note("nothing in quarantine");
    }
    for name in names {
        let sub = top.join(&name);
        let manifest = sub.join(MANIFEST_FILE);
        match std::fs::read_to_string(&manifest) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.starts_with('#')) {
                    out.line(&format!("{}\t{line}", sub.display()))?;
                }
            }
            Err(e) => note(&format!(
                "warning: {}: no readable manifest ({e})",
                sub.display()
            )),
        }
    }
    out.flush()
}

pub fn completions(args: &CompletionsArgs, command: &mut clap::Command) -> Result<(), Failure> {
    // Generated into memory first: the generator panics on a write error.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, command, "enforcelog", &mut script);
    let mut out = Out::new();
    out.line(String::from_utf8_lossy(&script).trim_end())?;
    out.flush()
}
