//! The manifest of a multi-part AOF: which files make up the dataset, in which order.
//!
//! Redis 7.0 writes one line per file, `file <name> seq <n> type <b|h|i>`: the base
//! first, then history files (replaced by a rewrite, waiting to be deleted), then the
//! incr files in sequence order. Names that need quoting are written as Redis' `sdscatrepr`
//! writes them and read back as `sdssplitargs` reads them. Parsing is as strict as
//! Redis': a manifest it refuses is refused here too, with the same reason.

use std::fmt;

/// What a file is to the dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// The dataset as a rewrite left it (an RDB, or commands).
    Base,
    /// Replaced by a rewrite; deleted once the new manifest is on disk.
    History,
    /// Commands written since the base.
    Incr,
}

impl FileKind {
    fn letter(self) -> char {
        match self {
            FileKind::Base => 'b',
            FileKind::History => 'h',
            FileKind::Incr => 'i',
        }
    }
}

/// One line of the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AofFile {
    pub name: String,
    pub seq: u64,
    pub kind: FileKind,
}

/// A manifest in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    pub base: Option<AofFile>,
    pub history: Vec<AofFile>,
    pub incrs: Vec<AofFile>,
    /// The sequence number of the newest base (the next one gets one more).
    pub base_seq: u64,
    /// The sequence number of the newest incr file.
    pub incr_seq: u64,
}

/// Why a manifest was refused: Redis' reason, and the line it was found on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    pub text: String,
    pub reason: &'static str,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{} (line {}: '{}')", self.reason, self.line, self.text)
        }
    }
}

impl std::error::Error for ManifestError {}

/// Redis reads manifest lines into a 1024-byte buffer: a longer line is refused.
const MAX_LINE: usize = 1024;

/// A file's line as the manifest holds it, without its newline.
fn line_text(name: &str, seq: u64, kind: char) -> String {
    format!("file {} seq {seq} type {kind}", repr_if_needed(name))
}

/// The length of a file's line written back (its kind is one letter, whichever).
fn written_len(name: &str, seq: u64) -> usize {
    line_text(name, seq, 'b').len()
}

impl Manifest {
    /// Parses a manifest's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let mut m = Manifest::default();
        let mut max_incr_seq = 0u64;
        let mut rest = bytes;
        let mut line_no = 0usize;
        if bytes.is_empty() {
            return Err(ManifestError {
                line: 0,
                text: String::new(),
                reason: "Found an empty AOF manifest",
            });
        }
        while !rest.is_empty() {
            line_no += 1;
            let newline = rest.iter().position(|&b| b == b'\n');
            let (raw, next) = match newline {
                Some(i) if i < MAX_LINE => (&rest[..i], &rest[i + 1..]),
                _ => {
                    // A comment is skipped whatever its length, as Redis' reads skip it
                    // piece by piece.
                    if rest[0] == b'#' {
                        let end = newline.map_or(rest.len(), |i| i + 1);
                        rest = &rest[end..];
                        continue;
                    }
                    let shown = &rest[..rest.len().min(MAX_LINE)];
                    return Err(ManifestError {
                        line: line_no,
                        text: String::from_utf8_lossy(shown).into_owned(),
                        reason: "The AOF manifest file contains too long line",
                    });
                }
            };
            rest = next;
            if raw.first() == Some(&b'#') {
                continue;
            }
            let line = trim(raw);
            let fail = |reason| ManifestError {
                line: line_no,
                text: String::from_utf8_lossy(line).into_owned(),
                reason,
            };
            let invalid = "Invalid AOF manifest file format";
            if line.is_empty() {
                return Err(fail(invalid));
            }
            let argv = split_args(line).ok_or_else(|| fail(invalid))?;
            // Fewer than 6 words is refused; more (in pairs) is allowed for fields a later
            // version may add.
            if argv.len() < 6 || argv.len() % 2 != 0 {
                return Err(fail(invalid));
            }
            let (mut name, mut seq, mut kind) = (None, 0u64, 0u8);
            for pair in argv.chunks(2) {
                let (key, value) = (&pair[0], &pair[1]);
                if key.eq_ignore_ascii_case(b"file") {
                    if value.contains(&b'/') {
                        return Err(fail("File can't be a path, just a filename"));
                    }
                    // Names are kept as text: a name that is not UTF-8 would be
                    // written back as another name, and the files lost with it.
                    let text = String::from_utf8(value.clone()).map_err(|_| {
                        fail("File name is not UTF-8 (Carmine keeps AOF file names as text)")
                    })?;
                    name = Some(text);
                } else if key.eq_ignore_ascii_case(b"seq") {
                    seq = leading_number(value);
                } else if key.eq_ignore_ascii_case(b"type") {
                    kind = value.first().copied().unwrap_or(0);
                }
            }
            let (Some(name), true, true) = (name, seq != 0, kind != 0) else {
                return Err(fail(invalid));
            };
            // A line that fits read may not fit written back (quoting spells a byte as
            // four): refused now, rather than after the next rewrite wrote a manifest
            // that no restart can read.
            if written_len(&name, seq) >= MAX_LINE {
                return Err(fail("The AOF manifest file contains too long line"));
            }
            match kind {
                b'b' => {
                    if m.base.is_some() {
                        return Err(fail("Found duplicate base file information"));
                    }
                    m.base = Some(AofFile {
                        name,
                        seq,
                        kind: FileKind::Base,
                    });
                    m.base_seq = seq;
                }
                b'h' => m.history.push(AofFile {
                    name,
                    seq,
                    kind: FileKind::History,
                }),
                b'i' => {
                    if seq <= max_incr_seq {
                        return Err(fail("Found a non-monotonic sequence number"));
                    }
                    max_incr_seq = seq;
                    m.incr_seq = seq;
                    m.incrs.push(AofFile {
                        name,
                        seq,
                        kind: FileKind::Incr,
                    });
                }
                _ => return Err(fail("Unknown AOF file type")),
            }
        }
        if line_no == 0 {
            return Err(ManifestError {
                line: 0,
                text: String::new(),
                reason: "Found an empty AOF manifest",
            });
        }
        Ok(m)
    }

    /// The manifest's text: base, history, incr files, one line each.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for f in self
            .base
            .iter()
            .chain(self.history.iter())
            .chain(self.incrs.iter())
        {
            out.push_str(&line_text(&f.name, f.seq, f.kind.letter()));
            out.push('\n');
        }
        out
    }

    /// The files to load, in order: the base, then the incr files.
    pub fn load_order(&self) -> impl Iterator<Item = &AofFile> {
        self.base.iter().chain(self.incrs.iter())
    }

    /// True when the manifest names nothing to load.
    pub fn is_empty(&self) -> bool {
        self.base.is_none() && self.incrs.is_empty()
    }

    /// A rewrite's new base (`<appendfilename>.<seq>.base.rdb`, or `.aof` without an RDB
    /// preamble); the old base becomes history. Returns the new name.
    pub fn new_base(&mut self, appendfilename: &str, rdb: bool) -> String {
        if let Some(mut old) = self.base.take() {
            old.kind = FileKind::History;
            self.history.insert(0, old);
        }
        self.base_seq += 1;
        let name = format!(
            "{appendfilename}.{}.base.{}",
            self.base_seq,
            if rdb { "rdb" } else { "aof" }
        );
        self.base = Some(AofFile {
            name: name.clone(),
            seq: self.base_seq,
            kind: FileKind::Base,
        });
        name
    }

    /// A new incr file (`<appendfilename>.<seq>.incr.aof`) at the end. Returns its name.
    pub fn new_incr(&mut self, appendfilename: &str) -> String {
        self.incr_seq += 1;
        let name = format!("{appendfilename}.{}.incr.aof", self.incr_seq);
        self.incrs.push(AofFile {
            name: name.clone(),
            seq: self.incr_seq,
            kind: FileKind::Incr,
        });
        name
    }

    /// The incr file writes go to: the last one, or a new one if there is none.
    pub fn last_incr_or_new(&mut self, appendfilename: &str) -> String {
        match self.incrs.last() {
            Some(f) => f.name.clone(),
            None => self.new_incr(appendfilename),
        }
    }

    /// After a rewrite: the incr files its base covers become history. With
    /// `keep_last`, the newest stays (the file writes go to, opened when the rewrite
    /// began).
    pub fn retire_rewritten_incrs(&mut self, keep_last: bool) {
        let keep = usize::from(keep_last && !self.incrs.is_empty());
        let retired = self.incrs.len() - keep;
        for mut f in self.incrs.drain(..retired).rev() {
            f.kind = FileKind::History;
            self.history.insert(0, f);
        }
    }

    /// Takes the history files out (the caller deletes them).
    pub fn take_history(&mut self) -> Vec<AofFile> {
        std::mem::take(&mut self.history)
    }

    /// An old single-file `appendonly.aof` adopted as the base (Redis' upgrade from 6.x).
    pub fn adopt_single_file(&mut self, appendfilename: &str) {
        self.base = Some(AofFile {
            name: appendfilename.to_string(),
            seq: 1,
            kind: FileKind::Base,
        });
        self.base_seq = 1;
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    let strip = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    while s.first().is_some_and(strip) {
        s = &s[1..];
    }
    while s.last().is_some_and(strip) {
        s = &s[..s.len() - 1];
    }
    s
}

/// `atoll`: the leading decimal digits, 0 when there are none.
fn leading_number(s: &[u8]) -> u64 {
    let mut n = 0u64;
    for &b in s.iter().take_while(|b| b.is_ascii_digit()) {
        n = n.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    n
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Splits a line into words as Redis' `sdssplitargs` does (double quotes with `\xHH`,
/// `\n`, `\r`, `\t`, `\b`, `\a` escapes; single quotes with `\'`). None when a quote is
/// unbalanced or a closing quote is followed by something other than a space.
fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i >= line.len() {
            return Some(out);
        }
        let mut word = Vec::new();
        let (mut double, mut single) = (false, false);
        loop {
            let c = line.get(i).copied();
            if double {
                match c? {
                    b'\\'
                        if line.get(i + 1) == Some(&b'x')
                            && line.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
                            && line.get(i + 3).is_some_and(u8::is_ascii_hexdigit) =>
                    {
                        let hex = std::str::from_utf8(&line[i + 2..i + 4]).ok()?;
                        word.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 3;
                    }
                    b'\\' if i + 1 < line.len() => {
                        i += 1;
                        word.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    b'"' => {
                        // A closing quote must end the word.
                        if line.get(i + 1).is_some_and(|&b| !is_space(b)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    other => word.push(other),
                }
            } else if single {
                match c? {
                    b'\\' if line.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        word.push(b'\'');
                    }
                    b'\'' => {
                        if line.get(i + 1).is_some_and(|&b| !is_space(b)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    other => word.push(other),
                }
            } else {
                match c {
                    None => break,
                    Some(b) if is_space(b) => break,
                    Some(b'"') => double = true,
                    Some(b'\'') => single = true,
                    Some(other) => word.push(other),
                }
            }
            i += 1;
        }
        out.push(word);
    }
}

/// The name as written in the manifest: quoted and escaped (`sdscatrepr`) when it holds
/// spaces, quotes, backslashes or unprintable bytes, as is otherwise.
fn repr_if_needed(name: &str) -> String {
    // An empty name too: bare, it is no word at all (Redis writes it bare and then
    // cannot read its manifest back).
    let needs = name.is_empty()
        || name.bytes().any(|b| {
            // A single quote too, which Redis leaves bare and then cannot read back.
            matches!(b, b'\\' | b'"' | b'\'' | 0x07 | 0x08)
                || is_space(b)
                || !(0x20..=0x7e).contains(&b)
        });
    if !needs {
        return name.to_string();
    }
    let mut out = String::from("\"");
    for b in name.bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            0x20..=0x7e => out.push(b as char),
            other => out.push_str(&format!("\\x{other:02x}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_and_writes_redis_lines() {
        let text = "file appendonly.aof.1.base.rdb seq 1 type b\n\
                    file appendonly.aof.1.incr.aof seq 1 type i\n\
                    file appendonly.aof.2.incr.aof seq 2 type i\n";
        let m = Manifest::parse(text.as_bytes()).expect("valid");
        assert_eq!(m.base_seq, 1);
        assert_eq!(m.incr_seq, 2);
        assert_eq!(m.incrs.len(), 2);
        assert_eq!(m.to_text(), text);
        let order: Vec<&str> = m.load_order().map(|f| f.name.as_str()).collect();
        assert_eq!(
            order,
            [
                "appendonly.aof.1.base.rdb",
                "appendonly.aof.1.incr.aof",
                "appendonly.aof.2.incr.aof"
            ]
        );
    }

    #[test]
    fn refuses_what_redis_refuses() {
        let reason = |t: &str| Manifest::parse(t.as_bytes()).map_err(|e| e.reason);
        assert_eq!(reason(""), Err("Found an empty AOF manifest"));
        assert_eq!(
            reason("file a seq 1 type b\nfile b seq 2 type b\n"),
            Err("Found duplicate base file information")
        );
        assert_eq!(
            reason("file a seq 2 type i\nfile b seq 2 type i\n"),
            Err("Found a non-monotonic sequence number")
        );
        assert_eq!(
            reason("file a seq 1 type x\n"),
            Err("Unknown AOF file type")
        );
        assert_eq!(
            reason("file dir/a seq 1 type b\n"),
            Err("File can't be a path, just a filename")
        );
        assert_eq!(
            reason("file a seq 1\n"),
            Err("Invalid AOF manifest file format")
        );
        assert_eq!(
            reason("file a seq 0 type b\n"),
            Err("Invalid AOF manifest file format")
        );
        assert_eq!(reason("\n"), Err("Invalid AOF manifest file format"));
        assert_eq!(
            reason("file \"a seq 1 type b\n"),
            Err("Invalid AOF manifest file format")
        );
        // Redis reads with fgets: a last line without its newline is refused.
        assert_eq!(
            reason("file a seq 1 type b"),
            Err("The AOF manifest file contains too long line")
        );
        let long = format!("file {} seq 1 type b\n", "x".repeat(1100));
        assert_eq!(
            reason(&long),
            Err("The AOF manifest file contains too long line")
        );
        // Not UTF-8: it could not be written back as the same name.
        assert_eq!(
            Manifest::parse(b"file a\xff seq 1 type b\n").map_err(|e| e.reason),
            Err("File name is not UTF-8 (Carmine keeps AOF file names as text)")
        );
        // Fits as read (600 bytes), not as written back (each byte quoted as \xNN):
        // refused now rather than after a rewrite wrote it (found by the fuzz target).
        let wide = format!("file {} seq 1 type b\n", "\u{e9}".repeat(300));
        assert_eq!(
            reason(&wide),
            Err("The AOF manifest file contains too long line")
        );
        // The limit exactly: a written line of 1023 bytes is read back, 1024 is not.
        for (len, fits) in [(1023, true), (1024, false)] {
            let name = "n".repeat(len - "file  seq 1 type b".len());
            let text = format!("file {name} seq 1 type b\n");
            match Manifest::parse(text.as_bytes()) {
                Ok(m) => {
                    assert!(fits, "{len}");
                    assert_eq!(Manifest::parse(m.to_text().as_bytes()), Ok(m));
                }
                Err(e) => assert!(!fits, "{len}: {e}"),
            }
        }
        // An empty name, quoted, is written back quoted.
        let m = Manifest::parse(b"file \"\" seq 9 type h\n").expect("a quoted empty name");
        assert_eq!(m.to_text(), "file \"\" seq 9 type h\n");
        let fits = format!("file {} seq 1 type b\n", "\u{e9}".repeat(50));
        let m = Manifest::parse(fits.as_bytes()).expect("fits written back too");
        assert_eq!(Manifest::parse(m.to_text().as_bytes()), Ok(m));
        // Comments and extra pairs are fine.
        let m = Manifest::parse(b"# c\nfile a seq 1 type b future 1\n").expect("valid");
        assert_eq!(m.base.map(|b| b.name), Some("a".to_string()));
    }

    #[test]
    fn a_rewrite_moves_files_as_redis_does() {
        let mut m = Manifest::default();
        assert_eq!(
            m.last_incr_or_new("appendonly.aof"),
            "appendonly.aof.1.incr.aof"
        );
        // Rewrite 1: a new incr for new writes, then the new base.
        assert_eq!(m.new_incr("appendonly.aof"), "appendonly.aof.2.incr.aof");
        assert_eq!(
            m.new_base("appendonly.aof", true),
            "appendonly.aof.1.base.rdb"
        );
        m.retire_rewritten_incrs(true);
        assert_eq!(
            m.to_text(),
            "file appendonly.aof.1.base.rdb seq 1 type b\n\
             file appendonly.aof.1.incr.aof seq 1 type h\n\
             file appendonly.aof.2.incr.aof seq 2 type i\n"
        );
        let gone: Vec<String> = m.take_history().into_iter().map(|f| f.name).collect();
        assert_eq!(gone, ["appendonly.aof.1.incr.aof"]);
        assert_eq!(m.new_incr("appendonly.aof"), "appendonly.aof.3.incr.aof");
        assert_eq!(
            m.new_base("appendonly.aof", false),
            "appendonly.aof.2.base.aof"
        );
        m.retire_rewritten_incrs(true);
        assert_eq!(
            m.to_text(),
            "file appendonly.aof.2.base.aof seq 2 type b\n\
             file appendonly.aof.2.incr.aof seq 2 type h\n\
             file appendonly.aof.1.base.rdb seq 1 type h\n\
             file appendonly.aof.3.incr.aof seq 3 type i\n"
        );
    }

    #[test]
    fn quoted_names_round_trip() {
        let mut m = Manifest::default();
        m.adopt_single_file("my \"file\"\t.aof");
        let text = m.to_text();
        assert_eq!(text, "file \"my \\\"file\\\"\\t.aof\" seq 1 type b\n");
        assert_eq!(Manifest::parse(text.as_bytes()), Ok(m));
    }

    proptest! {
        #[test]
        fn any_manifest_round_trips(
            names in proptest::collection::vec("[ -~]{1,20}", 1..6),
            rdb in any::<bool>(),
        ) {
            let mut m = Manifest::default();
            for n in &names {
                if n.contains('/') {
                    continue;
                }
                m.adopt_single_file(n);
                m.new_incr(n);
            }
            m.new_base("appendonly.aof", rdb);
            let parsed = Manifest::parse(m.to_text().as_bytes());
            prop_assert_eq!(parsed, Ok(m));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Manifest::parse(&bytes);
        }
    }
}
