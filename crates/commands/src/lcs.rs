//! Longest common subsequence for the LCS command: the classic dynamic programme, then a
//! walk back from the end collecting the matched runs (IDX reports them last to first).

/// One run of consecutive matching bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct MatchRange {
    pub a_start: usize,
    pub b_start: usize,
    pub len: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub struct LcsResult {
    pub len: usize,
    pub text: Vec<u8>,
    /// Runs in the order Redis reports them: from the end of the strings backwards.
    pub ranges: Vec<MatchRange>,
}

pub fn lcs(a: &[u8], b: &[u8]) -> LcsResult {
    let (n, m) = (a.len(), b.len());
    let w = m + 1;
    let mut dp = vec![0u32; (n + 1) * w];
    for i in 1..=n {
        for j in 1..=m {
            dp[i * w + j] = if a[i - 1] == b[j - 1] {
                dp[(i - 1) * w + j - 1] + 1
            } else {
                dp[(i - 1) * w + j].max(dp[i * w + j - 1])
            };
        }
    }
    let len = dp[n * w + m] as usize;
    let mut text = vec![0u8; len];
    let mut ranges: Vec<MatchRange> = Vec::new();
    let (mut i, mut j, mut k) = (n, m, len);
    while i > 0 && j > 0 {
        if a[i - 1] == b[j - 1] {
            k -= 1;
            text[k] = a[i - 1];
            // Extend the current run if it continues right before the last one found.
            match ranges.last_mut() {
                Some(r) if r.a_start == i && r.b_start == j => {
                    r.a_start -= 1;
                    r.b_start -= 1;
                    r.len += 1;
                }
                _ => ranges.push(MatchRange {
                    a_start: i - 1,
                    b_start: j - 1,
                    len: 1,
                }),
            }
            i -= 1;
            j -= 1;
        } else if dp[(i - 1) * w + j] > dp[i * w + j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    LcsResult { len, text, ranges }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_doc_example() {
        let r = lcs(b"ohmytext", b"mynewtext");
        assert_eq!(r.text, b"mytext");
        assert_eq!(r.len, 6);
        assert_eq!(
            r.ranges,
            vec![
                MatchRange {
                    a_start: 4,
                    b_start: 5,
                    len: 4
                },
                MatchRange {
                    a_start: 2,
                    b_start: 0,
                    len: 2
                },
            ]
        );
        assert_eq!(lcs(b"", b"abc").len, 0);
    }
}
