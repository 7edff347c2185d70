//! Reads newline-delimited output with a bound on line length, so a runaway line cannot
//! exhaust memory. Cancel-safe: a partial line survives a cancelled `next_line`.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    Line(Vec<u8>),
    /// A line longer than the bound, read to its end but not kept: its first bytes (up
    /// to [`HEAD_BYTES`]) and its whole length.
    TooLong {
        head: Vec<u8>,
        len: usize,
    },
    Eof,
}

/// How much of an over-long line is kept, enough to tell what it was.
pub const HEAD_BYTES: usize = 4096;

pub struct BoundedLines<R> {
    inner: R,
    line: Vec<u8>,
    max: usize,
    /// Inside an over-long line: its head, and how many bytes it had so far.
    skipping: Option<(Vec<u8>, usize)>,
}

impl<R: AsyncBufRead + Unpin> BoundedLines<R> {
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            line: Vec::new(),
            max,
            skipping: None,
        }
    }

    pub async fn next_line(&mut self) -> std::io::Result<LineRead> {
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                if let Some((head, len)) = self.skipping.take() {
                    return Ok(LineRead::TooLong { head, len });
                }
                if self.line.is_empty() {
                    return Ok(LineRead::Eof);
                }
                return Ok(LineRead::Line(std::mem::take(&mut self.line)));
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            if self.skipping.is_none() && self.line.len() + take > self.max {
                // Too long: keep the head, drop the rest as it comes.
                let mut head = std::mem::take(&mut self.line);
                let so_far = head.len();
                head.truncate(HEAD_BYTES);
                self.skipping = Some((head, so_far));
            }
            match &mut self.skipping {
                Some((head, len)) => {
                    let room = HEAD_BYTES.saturating_sub(head.len());
                    head.extend_from_slice(&buf[..take.min(room)]);
                    *len += take;
                }
                None => self.line.extend_from_slice(&buf[..take]),
            }
            self.inner.consume(if done { take + 1 } else { take });
            if done {
                if let Some((head, len)) = self.skipping.take() {
                    return Ok(LineRead::TooLong { head, len });
                }
                return Ok(LineRead::Line(std::mem::take(&mut self.line)));
            }
        }
    }
}

/// The top-level `"type"` of a JSON object from its first bytes, when they hold it: the
/// CLI writes most events with `type` first, but 2.1.3xx writes the result's last. Keys
/// of nested objects are skipped; a `type` past the head is not found.
pub fn head_type(head: &[u8]) -> Option<&str> {
    let mut depth = 0usize;
    let mut i = 0;
    // The top-level key whose value comes next, and whether the next string is a key.
    let mut key: Option<&[u8]> = None;
    let mut expect_key = false;
    while i < head.len() {
        match head[i] {
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < head.len() && head[j] != b'"' {
                    j += if head[j] == b'\\' { 2 } else { 1 };
                }
                if j >= head.len() {
                    return None;
                }
                let text = &head[start..j];
                if depth == 1 {
                    if expect_key {
                        key = Some(text);
                        expect_key = false;
                    } else if key == Some(b"type".as_slice()) {
                        return std::str::from_utf8(text).ok();
                    }
                }
                i = j + 1;
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth == 1 {
                    expect_key = true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => {
                expect_key = true;
                key = None;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_and_bounds_lines() {
        let data: &[u8] = b"one\ntwo\nthree-is-long\nlast";
        let mut r = BoundedLines::new(tokio::io::BufReader::with_capacity(2, data), 8);
        assert_eq!(
            r.next_line().await.unwrap(),
            LineRead::Line(b"one".to_vec())
        );
        assert_eq!(
            r.next_line().await.unwrap(),
            LineRead::Line(b"two".to_vec())
        );
        assert_eq!(
            r.next_line().await.unwrap(),
            LineRead::TooLong {
                head: b"three-is-long".to_vec(),
                len: 13
            }
        );
        // The reading goes on after it.
        assert_eq!(
            r.next_line().await.unwrap(),
            LineRead::Line(b"last".to_vec())
        );
        assert_eq!(r.next_line().await.unwrap(), LineRead::Eof);
    }

    #[test]
    fn the_top_level_type_is_found_wherever_it_is_in_the_head() {
        assert_eq!(head_type(br#"{"type":"user","message":{"x"#), Some("user"));
        // 2.1.3xx's result: `type` after nested objects whose own `type`s do not count.
        let late = br#"{"usage":{"type":"nested","a":[{"type":"deep"}]},"result":"a \"type\": x","type":"result"}"#;
        assert_eq!(head_type(late), Some("result"));
        assert_eq!(
            head_type(br#"{"usage":{"type":"nested"},"result":"cut sho"#),
            None
        );
        assert_eq!(head_type(b"not json"), None);
    }

    #[tokio::test]
    async fn an_over_long_line_keeps_only_its_head() {
        let long = vec![b'x'; 3 * HEAD_BYTES];
        let data = [b"{\"type\":\"user\"".as_slice(), &long, b"\nnext\n"].concat();
        let mut r = BoundedLines::new(tokio::io::BufReader::with_capacity(100, &data[..]), 1000);
        match r.next_line().await.unwrap() {
            LineRead::TooLong { head, len } => {
                assert_eq!(len, 14 + 3 * HEAD_BYTES);
                assert_eq!(head.len(), HEAD_BYTES);
                assert!(head.starts_with(b"{\"type\":\"user\""));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.next_line().await.unwrap(),
            LineRead::Line(b"next".to_vec())
        );
    }

    #[tokio::test]
    async fn last_line_without_newline_is_kept() {
        let data: &[u8] = b"a\nlast";
        let mut r = BoundedLines::new(tokio::io::BufReader::new(data), 8);
        assert_eq!(r.next_line().await.unwrap(), LineRead::Line(b"a".to_vec()));
        assert_eq!(
            r.next_line().await.unwrap(),
            LineRead::Line(b"last".to_vec())
        );
        assert_eq!(r.next_line().await.unwrap(), LineRead::Eof);
    }
}
