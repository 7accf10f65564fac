//! What is on disk: snapshots of a directory tree, to show that a refused
//! call changed nothing, and mounts (a read-only bind mount, a tiny tmpfs)
//! that are taken down on drop.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// One path under a snapshot's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
}

impl Node {
    fn describe(&self) -> String {
        match self {
            Node::Dir => "a directory".into(),
            Node::File(bytes) => format!("a file of {} bytes", bytes.len()),
            Node::Symlink(to) => format!("a symlink to {}", to.display()),
        }
    }
}

pub type Snapshot = BTreeMap<PathBuf, Node>;

/// `root` and everything below it (without following symlinks): each path,
/// what it is, and a file's bytes (so also its length). A missing root gives
/// an empty snapshot.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let key = path.strip_prefix(root).expect("below root").to_path_buf();
        if meta.file_type().is_symlink() {
            let to = fs::read_link(&path).expect("read link");
            out.insert(key, Node::Symlink(to));
        } else if meta.is_dir() {
            out.insert(key, Node::Dir);
            for entry in fs::read_dir(&path).expect("list directory") {
                stack.push(entry.expect("directory entry").path());
            }
        } else {
            out.insert(key, Node::File(fs::read(&path).expect("read file")));
        }
    }
    out
}

/// Every path created, removed or changed between two snapshots, or `None`.
pub fn diff(before: &Snapshot, after: &Snapshot) -> Option<String> {
    if before == after {
        return None;
    }
    let mut diffs = Vec::new();
    for (path, node) in before {
        match after.get(path) {
            None => diffs.push(format!("removed {} ({})", path.display(), node.describe())),
            Some(now) if now != node => diffs.push(format!(
                "changed {} ({} -> {})",
                path.display(),
                node.describe(),
                now.describe()
            )),
            Some(_) => {}
        }
    }
    for (path, node) in after {
        if !before.contains_key(path) {
            diffs.push(format!("created {} ({})", path.display(), node.describe()));
        }
    }
    Some(diffs.join("; "))
}

/// Fails naming every path created, removed or changed.
#[track_caller]
pub fn assert_unchanged(before: &Snapshot, after: &Snapshot, what: &str) {
    if let Some(diffs) = diff(before, after) {
        panic!("{what}: the disk changed: {diffs}");
    }
}

/// A mount, taken down on drop (lazily if something still holds it). Made
/// only where `mount` is permitted (as root); otherwise the constructors
/// say why, for the test to print as the reason it skips.
pub struct Mount {
    target: PathBuf,
}

impl Mount {
    /// A read-only bind mount of `source` at `target` (an empty directory).
    /// Running as root, permissions do not stop writes, so this is the way
    /// to make a directory unwritable.
    pub fn read_only_bind(source: &Path, target: &Path) -> Result<Mount, String> {
        mount(&["--bind".as_ref(), source.as_os_str(), target.as_os_str()])?;
        let guard = Mount {
            target: target.to_path_buf(),
        };
        mount(&[
            "-o".as_ref(),
            "remount,ro,bind".as_ref(),
            target.as_os_str(),
        ])?;
        if fs::write(target.join(".probe"), b"x").is_ok() {
            let _ = fs::remove_file(target.join(".probe"));
            return Err("still writable after the read-only remount".into());
        }
        Ok(guard)
    }

    /// A tmpfs of `size` (as `mount -o size=` takes it) at `dir`, made if
    /// missing: a disk that really fills up.
    pub fn tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let options = format!("size={size}");
        mount(&[
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "-o".as_ref(),
            options.as_ref(),
            "tmpfs".as_ref(),
            dir.as_os_str(),
        ])?;
        Ok(Mount {
            target: dir.to_path_buf(),
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.target)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.target).status();
        }
    }
}

/// A scratch directory `source` holding an empty directory `empty` and a
/// store `store`, mounted read-only at `target`.
pub struct ReadOnlyStore {
    pub mount: Mount,
    pub source: PathBuf,
    pub target: PathBuf,
    /// Removed after the mount is taken down (fields drop in order).
    _tmp: TempDir,
}

impl ReadOnlyStore {
    /// `make_store` makes the store in the directory it is given. `None`
    /// where the mount cannot be made, with the reason printed as `test`'s
    /// reason to skip.
    pub fn new(test: &str, make_store: impl FnOnce(&Path)) -> Option<ReadOnlyStore> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let source = tmp.path().join("source");
        let target = tmp.path().join("mnt");
        fs::create_dir_all(source.join("empty")).unwrap();
        fs::create_dir(&target).unwrap();
        make_store(&source.join("store"));
        match Mount::read_only_bind(&source, &target) {
            Ok(mount) => Some(ReadOnlyStore {
                mount,
                source,
                target,
                _tmp: tmp,
            }),
            Err(why) => {
                eprintln!("SKIPPED {test}: {why}");
                None
            }
        }
    }
}

/// `mount <args>`, or why it failed.
fn mount(args: &[&OsStr]) -> Result<(), String> {
    let out = Command::new("mount")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
