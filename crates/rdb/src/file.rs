//! A dump on disk, read in place.
//!
//! Start-up loads map the file rather than reading it into the heap: a heap copy costs
//! the file's size in memory on top of the dataset being built from it, and a copy pass
//! before the first key is parsed.

use std::io;
use std::ops::Deref;
use std::path::Path;

/// A dump file mapped read-only; derefs to its bytes.
pub struct DumpFile {
    map: memmap2::Mmap,
}

impl DumpFile {
    /// Maps the file at `path` (an empty file maps to no bytes).
    #[allow(unsafe_code)]
    pub fn open(path: &Path) -> io::Result<DumpFile> {
        let file = std::fs::File::open(path)?;
        // SAFETY: a mapping stays valid only while nobody truncates or rewrites the file.
        // Carmine never writes a dump in place: every save writes a temp file and renames
        // it over the dump, which replaces the directory entry and leaves the mapped inode
        // untouched. Only another process editing the file in place could change it
        // under the load, as it could change a file being read.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        // The reader goes front to back once: read ahead, drop pages behind.
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(DumpFile { map })
    }
}

impl Deref for DumpFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_a_dump_and_an_empty_file() {
        let dir = std::env::temp_dir().join(format!("carmine-dumpfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ks = carmine_keyspace::Keyspace::new();
        ks.db(0).set(b"k", b"v");
        let snap =
            crate::Snapshot::begin(&ks, crate::WriteOptions::default(), true).expect("begin");
        let mut bytes = Vec::new();
        snap.write_to(&ks, &mut bytes, &[]).expect("written");
        let path = dir.join("dump.rdb");
        std::fs::write(&path, &bytes).expect("write");
        let mapped = DumpFile::open(&path).expect("maps");
        assert_eq!(&mapped[..], &bytes[..]);
        let loaded = carmine_keyspace::Keyspace::new();
        crate::load_into(&loaded, &mapped).expect("loads");
        assert_eq!(loaded.db(0).get(b"k").expect("str"), Some(b"v".to_vec()));

        let empty = dir.join("empty.rdb");
        std::fs::write(&empty, b"").expect("write");
        assert!(DumpFile::open(&empty).expect("maps").is_empty());
        let missing = DumpFile::open(&dir.join("missing.rdb")).err();
        assert_eq!(missing.map(|e| e.kind()), Some(io::ErrorKind::NotFound));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
