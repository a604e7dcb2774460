//! The full-sync payload a replica reads after `+FULLRESYNC`: `$<len>\r\n` and that many
//! bytes, or `$EOF:<40 bytes>\r\n`, the RDB, and the same 40 bytes (a diskless master
//! does not know the length ahead). Masters may send bare `\n`s before the header to
//! keep the link alive while they prepare the snapshot.

/// The payload's first line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayloadHeader {
    Length(u64),
    EofMarked([u8; 40]),
}

impl PayloadHeader {
    /// Parses the header line without its CRLF.
    pub fn parse(line: &[u8]) -> Result<PayloadHeader, String> {
        let text = String::from_utf8_lossy(line);
        let Some(rest) = line.strip_prefix(b"$") else {
            return Err(format!(
                "Bad protocol from MASTER, the first byte is not '$' ({text})"
            ));
        };
        if let Some(mark) = rest.strip_prefix(b"EOF:") {
            let mark: [u8; 40] = mark
                .try_into()
                .map_err(|_| format!("Bad EOF mark from MASTER ({text})"))?;
            return Ok(PayloadHeader::EofMarked(mark));
        }
        std::str::from_utf8(rest)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(PayloadHeader::Length)
            .ok_or_else(|| format!("Bad payload length from MASTER ({text})"))
    }
}

/// Collects the payload's bytes as they arrive.
#[derive(Debug)]
pub struct PayloadReader {
    header: PayloadHeader,
    data: Vec<u8>,
    /// Bytes handed over by [`PayloadReader::take_settled`] (before `data`).
    settled: usize,
    done: bool,
}

impl PayloadReader {
    pub fn new(header: PayloadHeader) -> PayloadReader {
        PayloadReader {
            header,
            data: Vec::new(),
            settled: 0,
            done: false,
        }
    }

    /// Takes `bytes`; returns how many belong to the payload (the rest are the stream
    /// that follows it). After the payload is complete it takes nothing.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        if self.done {
            return 0;
        }
        match &self.header {
            PayloadHeader::Length(len) => {
                let got = (self.settled + self.data.len()) as u64;
                let want = (*len - got).min(bytes.len() as u64) as usize;
                self.data.extend_from_slice(&bytes[..want]);
                self.done = got + want as u64 == *len;
                want
            }
            PayloadHeader::EofMarked(mark) => {
                // The mark may straddle two reads: search from 39 bytes back.
                let from = self.data.len().saturating_sub(mark.len() - 1);
                self.data.extend_from_slice(bytes);
                let found = self.data[from..]
                    .windows(mark.len())
                    .position(|w| w == mark)
                    .map(|p| from + p);
                match found {
                    Some(at) => {
                        let end = at + mark.len();
                        let taken = bytes.len() - (self.data.len() - end);
                        self.data.truncate(at);
                        self.done = true;
                        taken
                    }
                    None => bytes.len(),
                }
            }
        }
    }

    pub fn is_complete(&self) -> bool {
        self.done
    }

    /// Bytes received so far (INFO's `master_sync_read_bytes`).
    pub fn received(&self) -> usize {
        self.settled + self.data.len()
    }

    /// Hands over the bytes received so far that are surely payload (not the start of
    /// an EOF mark still to come), so that they can be written out as they arrive;
    /// [`PayloadReader::into_rdb`] then holds only the rest.
    pub fn take_settled(&mut self) -> Vec<u8> {
        let keep = match (&self.header, self.done) {
            (PayloadHeader::EofMarked(mark), false) => mark.len() - 1,
            _ => 0,
        };
        let n = self.data.len().saturating_sub(keep);
        self.settled += n;
        self.data.drain(..n).collect()
    }

    /// The length announced, when the header gave one.
    pub fn expected(&self) -> Option<u64> {
        match self.header {
            PayloadHeader::Length(n) => Some(n),
            PayloadHeader::EofMarked(_) => None,
        }
    }

    /// The RDB bytes, once complete.
    pub fn into_rdb(self) -> Option<Vec<u8>> {
        self.done.then_some(self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(PayloadHeader::parse(b"$42"), Ok(PayloadHeader::Length(42)));
        let mark = [b'a'; 40];
        let mut line = b"$EOF:".to_vec();
        line.extend_from_slice(&mark);
        assert_eq!(
            PayloadHeader::parse(&line),
            Ok(PayloadHeader::EofMarked(mark))
        );
        assert!(PayloadHeader::parse(b"+OK").is_err());
        assert!(PayloadHeader::parse(b"$EOF:short").is_err());
        assert!(PayloadHeader::parse(b"$-1").is_err());
    }

    #[test]
    fn length_payload_leaves_the_stream() {
        let mut r = PayloadReader::new(PayloadHeader::Length(5));
        assert_eq!(r.push(b"abc"), 3);
        assert_eq!(r.push(b"de*1\r\n"), 2);
        assert!(r.is_complete());
        assert_eq!(r.push(b"more"), 0);
        assert_eq!(r.into_rdb().as_deref(), Some(&b"abcde"[..]));
    }

    #[test]
    fn settled_bytes_and_the_rest_make_the_payload() {
        let mark = *b"0123456789abcdef0123456789abcdef01234567";
        let mut body = b"REDIS0010-a-longer-payload-than-the-mark-itself-is".to_vec();
        let rdb = body.clone();
        body.extend_from_slice(&mark);
        body.extend_from_slice(b"*1\r\n");
        for step in 1..body.len() {
            for header in [
                PayloadHeader::EofMarked(mark),
                PayloadHeader::Length(rdb.len() as u64),
            ] {
                let mut r = PayloadReader::new(header);
                let mut out = Vec::new();
                for chunk in body.chunks(step) {
                    r.push(chunk);
                    out.extend(r.take_settled());
                    assert!(r.received() <= body.len());
                }
                assert!(r.is_complete(), "step {step}");
                assert_eq!(r.received(), rdb.len());
                out.extend(r.into_rdb().expect("complete"));
                assert_eq!(out, rdb, "step {step}");
            }
        }
    }

    #[test]
    fn eof_mark_split_across_reads() {
        let mark = *b"0123456789abcdef0123456789abcdef01234567";
        let mut body = b"REDIS0010-payload".to_vec();
        body.extend_from_slice(&mark);
        body.extend_from_slice(b"*1\r\n");
        for split in 0..body.len() {
            let mut r = PayloadReader::new(PayloadHeader::EofMarked(mark));
            let a = r.push(&body[..split]);
            let b = r.push(&body[split..]);
            assert!(r.is_complete(), "split {split}");
            assert_eq!(a + b, body.len() - 4, "split {split}");
            assert_eq!(r.into_rdb().as_deref(), Some(&b"REDIS0010-payload"[..]));
        }
    }
}
