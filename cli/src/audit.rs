//! `keygen`, `head`, `prove` and `audit`: the tamper-evident trail from the
//! command line (docs/AUDIT.md). All but `keygen` are read-only: they open
//! the store without its writer's lock and change no file.
//!
//! A tree covers one log: a directory several writers share (shards) has
//! one tree per shard. `--shard N` picks one; a head names its shard (and
//! its store id), so `audit` and `prove --head` find it by themselves.
//! Without either, a sharded directory is refused with exit 2 rather than
//! spoken for by one of its parts.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use enforcelog::audit::head::{self, generate_key, hex, unhex, SignedHead, TreeHead};
use enforcelog::audit::merkle;
use enforcelog::Store;

use crate::failure::Failure;
use crate::output::Out;
use crate::store_dir::open_reader;
use crate::Global;

pub const KEYGEN_ABOUT: &str = "Write a new Ed25519 key pair for signing tree heads";
pub const KEYGEN_LONG_ABOUT: &str = "\
Write a new Ed25519 key pair for `head --sign`: the secret key to PATH
(readable by its owner only) and the public key to PATH.pub (give it to
auditors, who pass it to `audit --key`). Each file is two lines: its kind
(`enforcelog ed25519 secret key` or `... public key`, so one is never taken
for the other) and the key in 64 hex digits. Refuses to
overwrite either file. The store directory is not used.";

pub const HEAD_ABOUT: &str = "Print the log's tree head {size, root, time} (read-only)";
pub const HEAD_LONG_ABOUT: &str = "\
Print the tree head of the log as JSON: store_id and shard (which log it
is), size (the records committed), root (the root of the Merkle tree of
those records, SHA-256, hex) and time (when it was taken). A directory of
several shards has a tree per shard: pick one with --shard N. With --sign KEY (a key from `keygen`), the head carries an
Ed25519 signature and the public key. Keep the head somewhere the machine
that holds the log cannot rewrite: `audit --head` later checks that the log
still extends it. The first head of a store reads every record once.

Read-only. Exit 1 if a record cannot be read (damage: see `verify`), 2 for a
directory of several shards without --shard, or a shard it does not have.";

pub const PROVE_ABOUT: &str = "Print an inclusion proof of one record (read-only)";
pub const PROVE_LONG_ABOUT: &str = "\
Print, as JSON, the proof that the record at --offset is part of the log's
tree: {leaf_index, tree_size, leaf_hash, path, root}. Without --head the
tree is the log as it is now; with --head FILE it is the tree of the
head's size, and the command first checks that the log still has that
head's root (exit 1 if not). In a directory of several shards, the shard
is the head's, or --shard N. python/enforcelog/verify.py checks the proof
without enforcelog.";

pub const AUDIT_ABOUT: &str =
    "Check that the log extends a tree head published earlier (read-only)";
pub const AUDIT_LONG_ABOUT: &str = "\
Check that the log as it is now extends the tree head in FILE (from an
earlier `head`): its first `size` records are the ones that head covered,
unchanged. A signed head's signature is checked first; with --key PUB (a
file from `keygen`, or 64 hex digits) it must also be that key's. Prints
the consistency proof and both heads as JSON. The log audited is the one
the head names (its shard, whose store id must be the head's), or
--shard N for a head of an earlier release, which names none.

Exit 0 when the log extends the head; 1 when it does not (a record was
changed, removed or reordered, or the log is shorter than the head), the
head is of another store, or the signature does not check; 2 for a
malformed head or key. The output's `signed_by` is the key whose signature
was checked and `key_checked` says whether it was compared with --key:
without --key, only that the head's own key signed it.";

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (the public key goes to PATH.pub).
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub struct HeadArgs {
    /// Sign the head with this secret key (from `keygen`).
    #[arg(long, value_name = "KEY")]
    sign: Option<PathBuf>,
    /// The shard whose head to print (a directory of several shards).
    #[arg(long, value_name = "N")]
    shard: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ProveArgs {
    /// The record's offset.
    #[arg(long)]
    offset: u64,
    /// Prove against the tree of this head's size (checked first).
    #[arg(long, value_name = "FILE")]
    head: Option<PathBuf>,
    /// The shard of the record (a directory of several shards).
    #[arg(long, value_name = "N")]
    shard: Option<u32>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The earlier head (JSON, from `head`).
    #[arg(long, value_name = "FILE")]
    head: PathBuf,
    /// The public key the head must be signed with: a file from `keygen`
    /// (PATH.pub) or 64 hex digits.
    #[arg(long, value_name = "PUB")]
    key: Option<String>,
    /// The shard to audit, for a head that names none (a directory of
    /// several shards).
    #[arg(long, value_name = "N")]
    shard: Option<u32>,
}

pub fn keygen(args: &KeygenArgs) -> Result<(), Failure> {
    let public = public_path(&args.out);
    for path in [&args.out, &public] {
        if path.exists() {
            return Err(Failure::usage(format!(
                "{} exists: keygen never overwrites a key",
                path.display()
            )));
        }
    }
    let key = generate_key().map_err(|e| Failure::other(format!("no random key: {e}")))?;
    write_new(
        &args.out,
        &format!("{SECRET_KEY_LINE}\n{}\n", hex(&key.to_bytes())),
        true,
    )?;
    write_new(
        &public,
        &format!(
            "{PUBLIC_KEY_LINE}\n{}\n",
            hex(&key.verifying_key().to_bytes())
        ),
        false,
    )
    .inspect_err(|_| {
        let _ = std::fs::remove_file(&args.out);
    })?;
    sync_parent(&args.out)?;
    let mut out = Out::new();
    out.line(&format!(
        "wrote the secret key to {} and the public key to {}",
        args.out.display(),
        public.display()
    ))
}

pub fn head(global: &Global, args: &HeadArgs) -> Result<(), Failure> {
    let key = args.sign.as_deref().map(read_secret_key).transpose()?;
    let store = open_reader(global)?;
    let shard = pick_shard(global, args.shard, None)?;
    let head = store.shard_head(shard).map_err(Failure::from)?;
    let signed = key.map(|k| head.clone().sign(&k));
    Out::new().line(&head::to_json(&head, signed.as_ref()))
}

pub fn prove(global: &Global, args: &ProveArgs) -> Result<(), Failure> {
    let claimed = args.head.as_deref().map(read_head).transpose()?;
    let store = open_reader(global)?;
    let named = claimed.as_ref().and_then(|(h, _)| h.log);
    let shard = pick_shard(global, args.shard, named)?;
    let size = match &claimed {
        Some((head, _)) => {
            check_extends(&store, shard, head)?;
            head.size
        }
        None => store.shard_head(shard).map_err(Failure::from)?.size,
    };
    if args.offset >= size {
        return Err(Failure::usage(format!(
            "--offset {} is not in a tree of {size} records",
            args.offset
        )));
    }
    let proof = store
        .prove_inclusion_in_shard(shard, args.offset, size)
        .map_err(Failure::from)?;
    Out::new().line(&proof.to_json())
}

pub fn audit(global: &Global, args: &AuditArgs) -> Result<(), Failure> {
    let (old, signed) = read_head(&args.head)?;
    let trusted = args.key.as_deref().map(read_public_key).transpose()?;
    match (&signed, trusted) {
        (Some(s), trusted) => {
            s.verify()
                .map_err(|e| Failure::corruption(format!("{}: {e}", args.head.display())))?;
            if let Some(key) = trusted {
                if key != s.public_key {
                    return Err(Failure::corruption(format!(
                        "{}: signed by {}, not by the key given",
                        args.head.display(),
                        hex(&s.public_key)
                    )));
                }
            }
        }
        (None, Some(_)) => {
            return Err(Failure::corruption(format!(
                "{}: the head is not signed, and --key asks for a signature",
                args.head.display()
            )))
        }
        (None, None) => {}
    }
    let store = open_reader(global)?;
    let shard = pick_shard(global, args.shard, old.log)?;
    let (now, proof) = check_extends(&store, shard, &old)?;
    let json = |h: &TreeHead| -> serde_json::Value {
        serde_json::from_str(&head::to_json(h, None)).unwrap_or_default()
    };
    let mut out = Out::new();
    out.line(&serde_json::json!({
        "extends": true,
        // Whose signature was checked: with no --key, the key the head
        // carries, which the auditor must still compare with one it trusts.
        "signed_by": signed.as_ref().map(|s| hex(&s.public_key)),
        "key_checked": args.key.is_some(),
        "old_head": json(&old),
        "new_head": json(&now),
        "proof": serde_json::from_str::<serde_json::Value>(&proof.to_json()).unwrap_or_default(),
    })
    .to_string())
}

/// Checks that the log of `shard` extends `old`: the same log (store id),
/// and a consistency proof from `old`'s size to the log's head now,
/// verified against both roots; exit 1 otherwise. Returns the head now and
/// the proof (one computation of the tree for both).
fn check_extends(
    store: &Store,
    shard: u32,
    old: &TreeHead,
) -> Result<(TreeHead, enforcelog::audit::proof::ConsistencyProof), Failure> {
    let (now, proof) = match store.head_with_consistency(shard, Some(old.size)) {
        Ok((now, Some(proof))) => (now, proof),
        Ok((_, None)) => unreachable!("a proof is asked for"),
        Err(enforcelog::Error::OffsetOutOfRange { next_offset, .. }) => {
            // Shorter than the head: whose log is it? Another store's head
            // is a wrong directory, not history removed.
            let now = store.shard_head(shard).map_err(Failure::from)?;
            check_same_log(shard, old, &now)?;
            return Err(Failure::corruption(format!(
                "the log holds {next_offset} records, fewer than the {} of the head: records \
                 were removed",
                old.size
            )));
        }
        Err(e @ enforcelog::Error::Tampering { first_offset, .. }) => {
            // The chain names where: the batch whose link does not fit, or
            // (its link recomputed too) the batch before it.
            let place = if first_offset < old.size {
                "among the records the head covers"
            } else {
                "after the records the head covers"
            };
            return Err(Failure::corruption(format!(
                "the log diverges at offset {first_offset} at the latest, {place}: {e}"
            )));
        }
        Err(e) => return Err(Failure::from(e)),
    };
    check_same_log(shard, old, &now)?;
    let extends = proof.new_root == now.root
        && merkle::verify_consistency(old.size, now.size, &old.root, &now.root, &proof.path)
            .is_ok();
    if !extends {
        return Err(Failure::corruption(format!(
            "the log does not extend the head: its first {} records are not the ones the \
             head covered (a record was changed, removed or reordered)",
            old.size
        )));
    }
    Ok((now, proof))
}

/// Exit 1 unless `old` names no log or the log whose head is `now`.
fn check_same_log(shard: u32, old: &TreeHead, now: &TreeHead) -> Result<(), Failure> {
    let Some(named) = old.log else {
        return Ok(());
    };
    let here = now.log.map(|l| l.store_id);
    if here == Some(named.store_id) {
        return Ok(());
    }
    Err(Failure::corruption(format!(
        "the head is of store {} (shard {}); shard {shard} here is {}",
        named.store_id,
        named.shard,
        here.map_or("a log without a store id".to_string(), |id| format!(
            "store {id}"
        ))
    )))
}

/// The shard a command speaks of: `given` (`--shard`), else the one the
/// head names, else the only one; a directory of several shards with
/// neither is a usage error (exit 2), and so is a `--shard` the head
/// contradicts or the directory does not have.
fn pick_shard(
    global: &Global,
    given: Option<u32>,
    named: Option<head::LogName>,
) -> Result<u32, Failure> {
    let shards: Vec<u32> = Store::shard_dirs(&global.data_dir)
        .map_err(Failure::from)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let listed = || {
        shards
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let shard = match (given, named) {
        (Some(given), Some(named)) if given != named.shard => {
            return Err(Failure::usage(format!(
                "--shard {given}, but the head is of shard {}",
                named.shard
            )))
        }
        (Some(shard), _) => shard,
        (None, Some(named)) => named.shard,
        (None, None) if shards.len() > 1 => {
            return Err(Failure::usage(format!(
                "{} has shards {} (one per writer that ran beside another), each with a tree \
                 of its own: pass --shard N",
                global.data_dir.display(),
                listed()
            )))
        }
        (None, None) => 0,
    };
    if !shards.contains(&shard) {
        if let Some(named) = named.filter(|n| n.shard == shard) {
            // The log the head covers is gone from the directory: that is
            // history removed, not a bad argument.
            return Err(Failure::corruption(format!(
                "the head is of shard {shard} (store {}), which {} no longer has (its shards: {})",
                named.store_id,
                global.data_dir.display(),
                listed()
            )));
        }
        return Err(Failure::usage(format!(
            "{} has no shard {shard} (its shards: {})",
            global.data_dir.display(),
            listed()
        )));
    }
    Ok(shard)
}

fn public_path(secret: &Path) -> PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Writes a new file (never an existing one); the secret key readable by
/// its owner only.
fn write_new(path: &Path, text: &str, secret: bool) -> Result<(), Failure> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = secret;
    let mut file = options
        .open(path)
        .map_err(|e| Failure::other(format!("{}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| {
            // A key half written is no key: leave no file that a later
            // keygen would refuse to replace.
            let _ = std::fs::remove_file(path);
            Failure::other(format!("{}: {e}", path.display()))
        })
}

/// Makes the names of files just created in `path`'s directory durable.
fn sync_parent(path: &Path) -> Result<(), Failure> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| Failure::other(format!("{}: {e}", parent.display())))
}

fn read_text(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}

/// The first line of a secret key file: a public key file (or anything
/// else) given to `--sign` is refused instead of used as a seed.
const SECRET_KEY_LINE: &str = "enforcelog ed25519 secret key";
/// The first line of a public key file.
const PUBLIC_KEY_LINE: &str = "enforcelog ed25519 public key";

/// The hex of a key file whose first line is `kind`.
fn key_file_hex(path: &Path, kind: &str) -> Result<String, Failure> {
    let text = read_text(path)?;
    let mut lines = text.lines();
    if lines.next() != Some(kind) {
        return Err(Failure::usage(format!(
            "{}: not a file of `keygen`'s kind ({kind:?} on its first line)",
            path.display()
        )));
    }
    Ok(lines.next().unwrap_or_default().trim().to_string())
}

fn read_secret_key(path: &Path) -> Result<head::SigningKey, Failure> {
    let seed = unhex::<32>(&key_file_hex(path, SECRET_KEY_LINE)?, "the secret key")
        .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    Ok(head::SigningKey::from_bytes(&seed))
}

/// `--key`: 64 hex digits, or a public key file of `keygen`.
fn read_public_key(given: &str) -> Result<[u8; 32], Failure> {
    let text = if given.len() == 64 && given.bytes().all(|b| b.is_ascii_hexdigit()) {
        given.to_string()
    } else {
        key_file_hex(Path::new(given), PUBLIC_KEY_LINE)?
    };
    unhex::<32>(&text, "the public key").map_err(|e| Failure::usage(format!("--key: {e}")))
}

fn read_head(path: &Path) -> Result<(TreeHead, Option<SignedHead>), Failure> {
    let text = read_text(path)?;
    head::from_json(&text).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}
