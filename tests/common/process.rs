//! Running a child process (the `enforcelog` binary, mostly) to its end
//! under a deadline, with its output read while it runs (so a full pipe
//! cannot stall it), failing the test on any sign of a panic.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// `program` with a clean environment: no inherited store directory or log
/// filter, and backtraces on, so that a panic could not hide.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("ENFORCELOG_DIR")
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1");
    cmd
}

/// `cmd` for messages: the program's file name and the arguments, each
/// longer than 80 characters cut to its first 60.
pub fn describe(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program()).file_name().unwrap_or_default();
    let mut words = vec![program.to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.chars().count() > 80 {
            format!("{}...", a.chars().take(60).collect::<String>())
        } else {
            a.into_owned()
        }
    }));
    words.join(" ")
}

/// What one finished run did.
#[derive(Debug)]
pub struct Out {
    /// The command (and its context), for messages.
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// The exit code; `None` when a signal ended the process.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The command, how it ended and the first few KiB of its output.
    pub fn show(&self) -> String {
        format!(
            "{}: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what,
            self.status,
            clip(&self.stdout),
            clip(&self.stderr)
        )
    }
}

/// Each non-blank line of `text` (a command's output) as JSON.
#[track_caller]
pub fn jsonl(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

/// The first few KiB of a long output.
pub fn clip(text: &str) -> &str {
    let mut end = text.len().min(4000);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// How a test file runs its children: how long one run may take, and what
/// on stderr shows that the child panicked (or worse).
pub struct Watchdog {
    pub limit: Duration,
    pub panic_signs: &'static [&'static str],
}

impl Watchdog {
    /// Runs `cmd` to completion (stdin closed, or fed `stdin` and then
    /// closed), failing the test if it takes longer than the limit, shows a
    /// panic sign on stderr or dies of a signal.
    pub fn run(&self, mut cmd: Command, what: String, stdin: Option<&[u8]>) -> Out {
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: spawn: {e}"));
        let feeder = stdin.map(|bytes| {
            let mut pipe = child.stdin.take().expect("piped stdin");
            let bytes = bytes.to_vec();
            // The command may refuse its input before reading all of it.
            thread::spawn(move || drop(pipe.write_all(&bytes)))
        });
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let status = self.wait(&mut child, &what);
        if let Some(feeder) = feeder {
            feeder.join().expect("stdin feeder");
        }
        let out = Out {
            what,
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        };
        for sign in self.panic_signs {
            assert!(
                !out.stderr.contains(sign),
                "{sign:?} on stderr: {}",
                out.show()
            );
        }
        assert!(out.code().is_some(), "killed by a signal: {}", out.show());
        out
    }

    /// Waits for `child`, killing it (and failing) after the limit. The
    /// short sleep is a watchdog's poll, not synchronisation.
    pub fn wait(&self, child: &mut Child, what: &str) -> ExitStatus {
        let deadline = Instant::now() + self.limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what}: still running after {:?}", self.limit);
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Reads `pipe` to its end in a thread, as text.
pub fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
