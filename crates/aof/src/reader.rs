//! The command form of an AOF: `*<argc>\r\n` then `$<len>\r\n<bytes>\r\n` per argument,
//! with `#...` annotation lines (`#TS:<unix>` from `aof-timestamp-enabled`) between
//! commands.
//!
//! A crash can cut the last command short; that is [`ReadError::Truncated`], with the
//! offset just past the last whole command, so a loader may cut the file there
//! (`aof-load-truncated yes`). A transaction whose EXEC is missing is treated the same
//! way, from its MULTI. Anything else that is not the format is [`ReadError::Format`]:
//! refused, never guessed at.

use std::fmt;

/// Annotation and length lines are read by Redis into a 1024-byte buffer.
const MAX_LINE: usize = 1024;

/// Why reading stopped before the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The data ends inside a command (or inside a MULTI without its EXEC).
    /// `valid_up_to` is where the last whole command (outside a transaction) ends.
    Truncated { valid_up_to: usize, offset: usize },
    /// Not the AOF format at `offset`.
    Format { offset: usize, reason: String },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Truncated {
                valid_up_to,
                offset,
            } => write!(
                f,
                "unexpected end of file at offset {offset} (last whole command ends at {valid_up_to})"
            ),
            ReadError::Format { offset, reason } => {
                write!(f, "bad format at offset {offset}: {reason}")
            }
        }
    }
}

impl std::error::Error for ReadError {}

/// True when the bytes begin as an RDB (a base file, or an old AOF's RDB preamble).
pub fn starts_with_rdb(data: &[u8]) -> bool {
    data.starts_with(b"REDIS")
}

/// Reads commands one by one from the bytes of an AOF (from `start`: past an RDB
/// preamble, for instance).
pub struct CommandReader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Where the MULTI of an open transaction starts.
    multi_at: Option<usize>,
    /// The end of the last whole command outside a transaction.
    valid_up_to: usize,
}

enum Line<'a> {
    Whole(&'a [u8]),
    /// The data ended before the line's newline.
    Cut,
}

impl<'a> CommandReader<'a> {
    pub fn new(data: &'a [u8], start: usize) -> CommandReader<'a> {
        let start = start.min(data.len());
        CommandReader {
            data,
            pos: start,
            multi_at: None,
            valid_up_to: start,
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Reads the next command into `argv` (cleared first). Ok(false) at a clean end.
    pub fn next_command(&mut self, argv: &mut Vec<&'a [u8]>) -> Result<bool, ReadError> {
        argv.clear();
        loop {
            if self.pos >= self.data.len() {
                return match self.multi_at {
                    // A transaction cut short: its commands never ran; drop it whole.
                    Some(_) => Err(self.truncated()),
                    None => Ok(false),
                };
            }
            if self.data[self.pos] != b'#' {
                break;
            }
            match self.line()? {
                Line::Whole(_) => {}
                Line::Cut => return Err(self.truncated()),
            }
        }
        let start = self.pos;
        let head = match self.line()? {
            Line::Whole(l) => l,
            Line::Cut => return Err(self.truncated()),
        };
        if head.first() != Some(&b'*') {
            return Err(self.format(start, "expected '*' at the start of a command"));
        }
        let argc = parse_count(&head[1..])
            .filter(|&n| n >= 1)
            .ok_or_else(|| self.format(start, "invalid argument count"))?;
        for _ in 0..argc {
            let at = self.pos;
            if at >= self.data.len() {
                return Err(self.truncated());
            }
            let len_line = match self.line()? {
                Line::Whole(l) => l,
                Line::Cut => return Err(self.truncated()),
            };
            if len_line.first() != Some(&b'$') {
                return Err(self.format(at, "expected '$' before an argument"));
            }
            let len = parse_count(&len_line[1..])
                .ok_or_else(|| self.format(at, "invalid argument length"))?;
            let body = self.pos;
            let Some(end) = body.checked_add(len).filter(|&e| e <= self.data.len()) else {
                return Err(self.truncated());
            };
            let after = end + 2;
            if after > self.data.len() {
                return Err(self.truncated());
            }
            if &self.data[end..after] != b"\r\n" {
                return Err(self.format(end, "an argument is not followed by CRLF"));
            }
            argv.push(&self.data[body..end]);
            self.pos = after;
        }
        let name = argv.first().copied().unwrap_or_default();
        if name.eq_ignore_ascii_case(b"multi") {
            self.multi_at = Some(start);
        } else if name.eq_ignore_ascii_case(b"exec") {
            self.multi_at = None;
        }
        if self.multi_at.is_none() {
            self.valid_up_to = self.pos;
        }
        Ok(true)
    }

    /// The next line without its `\r\n` (or `\n`), consumed.
    fn line(&mut self) -> Result<Line<'a>, ReadError> {
        let rest = &self.data[self.pos..];
        match rest.iter().take(MAX_LINE).position(|&b| b == b'\n') {
            Some(i) => {
                let line = &rest[..i];
                self.pos += i + 1;
                Ok(Line::Whole(line.strip_suffix(b"\r").unwrap_or(line)))
            }
            None if rest.len() < MAX_LINE => Ok(Line::Cut),
            None => Err(self.format(self.pos, "line too long")),
        }
    }

    fn truncated(&self) -> ReadError {
        ReadError::Truncated {
            valid_up_to: self.valid_up_to,
            offset: self.data.len(),
        }
    }

    fn format(&self, offset: usize, reason: &str) -> ReadError {
        ReadError::Format {
            offset,
            reason: reason.to_string(),
        }
    }
}

/// A non-negative decimal count, at most what fits the file (anything larger cannot be
/// real data and must not size an allocation).
fn parse_count(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(cmds: &[Vec<Vec<u8>>]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in cmds {
            out.extend_from_slice(format!("*{}\r\n", c.len()).as_bytes());
            for a in c {
                out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(a);
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    fn words(s: &[&str]) -> Vec<Vec<u8>> {
        s.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn read_all(data: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ReadError> {
        let mut r = CommandReader::new(data, 0);
        let mut argv = Vec::new();
        let mut out = Vec::new();
        while r.next_command(&mut argv)? {
            out.push(argv.iter().map(|a| a.to_vec()).collect());
        }
        Ok(out)
    }

    #[test]
    fn reads_commands_and_skips_annotations() {
        let mut data = b"#TS:1700000000\r\n".to_vec();
        data.extend(encode(&[
            words(&["SELECT", "0"]),
            words(&["SET", "k", "v\r\n"]),
        ]));
        let got = read_all(&data).expect("valid");
        assert_eq!(
            got,
            vec![words(&["SELECT", "0"]), words(&["SET", "k", "v\r\n"])]
        );
    }

    #[test]
    fn a_cut_tail_is_truncated_at_the_last_whole_command() {
        let whole = encode(&[words(&["SET", "a", "1"])]);
        let mut data = whole.clone();
        data.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$1\r\nb");
        match read_all(&data) {
            Err(ReadError::Truncated { valid_up_to, .. }) => assert_eq!(valid_up_to, whole.len()),
            other => panic!("expected truncated, got {other:?}"),
        }
    }

    #[test]
    fn a_transaction_without_exec_is_dropped_whole() {
        let before = encode(&[words(&["SET", "a", "1"])]);
        let mut data = before.clone();
        data.extend(encode(&[words(&["MULTI"]), words(&["INCR", "x"])]));
        match read_all(&data) {
            Err(ReadError::Truncated { valid_up_to, .. }) => assert_eq!(valid_up_to, before.len()),
            other => panic!("expected truncated, got {other:?}"),
        }
        data.extend(encode(&[words(&["EXEC"])]));
        assert_eq!(read_all(&data).map(|c| c.len()), Ok(4));
    }

    #[test]
    fn garbage_in_the_middle_is_a_format_error_with_its_offset() {
        let mut data = encode(&[words(&["SET", "a", "1"])]);
        let at = data.len();
        data.extend_from_slice(b"!!!\r\n");
        data.extend(encode(&[words(&["SET", "b", "2"])]));
        match read_all(&data) {
            Err(ReadError::Format { offset, .. }) => assert_eq!(offset, at),
            other => panic!("expected a format error, got {other:?}"),
        }
        assert!(matches!(
            read_all(b"*0\r\n"),
            Err(ReadError::Format { offset: 0, .. })
        ));
        assert!(matches!(
            read_all(b"*1\r\n$3\r\nSETxx"),
            Err(ReadError::Format { offset: 11, .. })
        ));
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        assert!(matches!(
            read_all(b"*99999999999999999999\r\n"),
            Err(ReadError::Format { .. })
        ));
        assert!(matches!(
            read_all(b"*999999999999\r\n$1\r\na\r\n"),
            Err(ReadError::Truncated { valid_up_to: 0, .. })
        ));
    }

    proptest! {
        #[test]
        fn encoded_commands_read_back(
            cmds in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..5),
                0..10,
            ),
        ) {
            // MULTI/EXEC change what a cut means; keep the model to plain commands.
            let cmds: Vec<Vec<Vec<u8>>> = cmds
                .into_iter()
                .filter(|c| !c[0].eq_ignore_ascii_case(b"multi") && !c[0].eq_ignore_ascii_case(b"exec"))
                .collect();
            let data = encode(&cmds);
            prop_assert_eq!(read_all(&data), Ok(cmds.clone()));
            // Every cut reads as truncated at the last whole command before it.
            let mut ends = vec![0];
            for c in &cmds {
                let last = ends.last().copied().unwrap_or(0);
                ends.push(last + encode(std::slice::from_ref(c)).len());
            }
            for cut in 0..data.len() {
                let expect_valid = ends.iter().copied().filter(|&e| e <= cut).max().unwrap_or(0);
                match read_all(&data[..cut]) {
                    Ok(got) => prop_assert_eq!(ends.contains(&cut), true, "clean end only at a boundary: {:?}", got),
                    Err(ReadError::Truncated { valid_up_to, .. }) => prop_assert_eq!(valid_up_to, expect_valid),
                    Err(e) => prop_assert!(false, "cut at {} gave {}", cut, e),
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = read_all(&bytes);
        }
    }
}
