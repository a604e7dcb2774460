//! Inline commands: what a person types into telnet (`SET "a b" 'c'`).
//!
//! The quoting rules are those of redis-cli and Redis' inline protocol: double quotes with
//! backslash escapes (`\n \r \t \b \a \\ \" \xHH`), single quotes where only `\'` is an
//! escape, and a closing quote must be followed by a space or the end of the line.

use crate::ProtocolError;

/// Splits one inline line into arguments. `Err(UnbalancedQuotes)` on a quote left open or a
/// closing quote glued to the next word, as Redis does.
pub fn split_inline_args(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Ok(out);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= n {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && line[i + 2].is_ascii_hexdigit()
                    && line[i + 3].is_ascii_hexdigit()
                {
                    cur.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                    i += 4;
                    continue;
                }
                if c == b'\\' && i + 1 < n {
                    cur.push(match line[i + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                    i += 2;
                    continue;
                }
                if c == b'"' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                }
                cur.push(c);
                i += 1;
            } else if in_sq {
                if i >= n {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    cur.push(b'\'');
                    i += 2;
                    continue;
                }
                if c == b'\'' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                }
                cur.push(c);
                i += 1;
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        i += 1;
                        break;
                    }
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => cur.push(c),
                }
                i += 1;
            }
        }
        out.push(cur);
    }
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Result<Vec<String>, ProtocolError> {
        split_inline_args(s.as_bytes()).map(|v| {
            v.into_iter()
                .map(|a| String::from_utf8_lossy(&a).into_owned())
                .collect()
        })
    }

    #[test]
    fn plain_words() {
        assert_eq!(split("SET a b").unwrap(), ["SET", "a", "b"]);
        assert_eq!(split("  PING  ").unwrap(), ["PING"]);
        assert!(split("   ").unwrap().is_empty());
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(split(r#"SET "a b" 'c d'"#).unwrap(), ["SET", "a b", "c d"]);
        assert_eq!(split(r#"SET k "\x41\n""#).unwrap(), ["SET", "k", "A\n"]);
        assert_eq!(split(r"SET k 'it\'s'").unwrap(), ["SET", "k", "it's"]);
        assert_eq!(split(r#"SET k """#).unwrap(), ["SET", "k", ""]);
    }

    #[test]
    fn unbalanced() {
        assert_eq!(split(r#"SET "a b"#), Err(ProtocolError::UnbalancedQuotes));
        assert_eq!(split(r#"SET "a"b"#), Err(ProtocolError::UnbalancedQuotes));
        assert_eq!(split("SET 'a"), Err(ProtocolError::UnbalancedQuotes));
    }
}
