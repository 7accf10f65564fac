//! How a command fails: an exit code, one line for the user, and detail
//! shown with `-v`.

use std::error::Error as _;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use enforcelog::Error;

/// Corruption found (by `verify`, or met while reading).
pub const EXIT_CORRUPTION: u8 = 1;
/// Bad input or usage.
pub const EXIT_USAGE: u8 = 2;
/// The store is locked by another writer.
pub const EXIT_LOCKED: u8 = 3;
/// Any other failure.
pub const EXIT_OTHER: u8 = 4;

/// A failed command.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// One line; empty for a failure already reported (or a closed pipe).
    pub message: String,
    /// More, shown with `-v`.
    pub detail: Option<String>,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// Bad input or usage (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(EXIT_USAGE, message)
    }

    /// Corruption found (exit 1).
    pub fn corruption(message: impl Into<String>) -> Self {
        Self::new(EXIT_CORRUPTION, message)
    }

    /// Any other failure (exit 4).
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(EXIT_OTHER, message)
    }

    /// Ends the command with `code` and nothing more to say.
    pub fn quiet(code: u8) -> Self {
        Self::new(code, "")
    }

    /// Prints the failure on stderr and returns its exit code.
    pub fn report(&self, verbose: u8) -> ExitCode {
        let mut stderr = std::io::stderr().lock();
        if !self.message.is_empty() {
            let _ = writeln!(stderr, "error: {}", one_line(&self.message));
            if verbose > 0 {
                if let Some(detail) = &self.detail {
                    let _ = writeln!(stderr, "{detail}");
                }
            }
        }
        ExitCode::from(self.code)
    }
}

/// The exit code a store error stands for.
pub fn exit_code_of(error: &Error) -> u8 {
    match error {
        Error::Corruption { .. } | Error::BadPayload { .. } | Error::Tampering { .. } => {
            EXIT_CORRUPTION
        }
        Error::InvalidEvent(_)
        | Error::InvalidFilter(_)
        | Error::InvalidOptions { .. }
        | Error::OffsetOutOfRange { .. }
        | Error::BadPosition { .. }
        | Error::NotALogDirectory { .. }
        | Error::RecordTooLarge { .. }
        | Error::BatchTooLarge { .. }
        | Error::EmptyBatch => EXIT_USAGE,
        Error::Locked { .. } => EXIT_LOCKED,
        _ => EXIT_OTHER,
    }
}

/// The one line for a store another writer holds: who holds it, and what
/// still works meanwhile.
fn locked_message(dir: &Path) -> String {
    let holder = lock_holder(dir).map_or_else(
        || "a process that did not record its id".to_string(),
        |pid| format!("process {pid}"),
    );
    format!(
        "the store at {} is locked by another writer ({holder}); read-only commands work \
         meanwhile: query, stats, dump, tail, info, verify",
        dir.display()
    )
}

/// The process id a writer recorded in `dir/LOCK`, if any. Only the lock
/// says whether a writer holds the store; this only names it.
pub fn lock_holder(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("LOCK")).ok()?;
    text.trim().parse().ok()
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let message = match &error {
            Error::Locked { path } => locked_message(path),
            _ => error.to_string(),
        };
        let mut detail = format!("  detail: {error:?}");
        let mut source = error.source();
        while let Some(cause) = source {
            detail.push_str(&format!("\n  caused by: {cause}"));
            source = cause.source();
        }
        Self {
            code: exit_code_of(&error),
            message,
            detail: Some(detail),
        }
    }
}

impl From<enforcelog::EventError> for Failure {
    fn from(error: enforcelog::EventError) -> Self {
        Failure::from(Error::InvalidEvent(error))
    }
}

/// Writing machine output failed: a closed pipe (`| head`) ends the command
/// quietly; anything else is an I/O failure.
pub fn from_stdout(error: std::io::Error) -> Failure {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::quiet(0)
    } else {
        Failure::other(format!("writing to stdout: {error}"))
    }
}

/// Folds a message onto one line.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
