//! Redis 7.0's append-only file formats, usable alone: no keyspace, no sockets.
//!
//! A multi-part AOF is a directory (`appenddirname`) holding one base file (an RDB, or
//! commands), incr files with the commands written since, and a manifest naming them in
//! order ([`Manifest`]). [`CommandReader`] reads the command form one command at a time,
//! telling a file cut short by a crash (which may be truncated and loaded) from one that
//! is damaged in the middle (refused, with the offset and reason).

mod manifest;
mod reader;

pub use manifest::{AofFile, FileKind, Manifest, ManifestError};
pub use reader::{starts_with_rdb, CommandReader, ReadError};

/// Redis' manifest name: `<appendfilename>.manifest`.
pub fn manifest_name(appendfilename: &str) -> String {
    format!("{appendfilename}.manifest")
}

/// Where a manifest is written before it is renamed over the real one.
pub fn temp_manifest_name(appendfilename: &str) -> String {
    format!("temp-{appendfilename}.manifest")
}

/// The incr file that collects writes while `appendonly` is being switched on, renamed
/// into the manifest when the first rewrite ends.
pub fn temp_incr_name(appendfilename: &str) -> String {
    format!("temp-{appendfilename}.incr")
}

/// The temporary base a rewrite writes (Redis names it after the child's pid).
pub fn temp_rewrite_name(pid: u32) -> String {
    format!("temp-rewriteaof-bg-{pid}.aof")
}

/// `#TS:<unix seconds>\r\n`: the annotation `aof-timestamp-enabled` writes before the
/// first command of each new second.
pub fn timestamp_annotation(unix_secs: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b"#TS:");
    out.extend_from_slice(unix_secs.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}
