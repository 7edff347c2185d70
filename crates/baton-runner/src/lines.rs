//! Reads newline-delimited output with a bound on line length, so a runaway line cannot
//! exhaust memory. Cancel-safe: a partial line survives a cancelled `next_line`.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    Line(Vec<u8>),
    TooLong,
    Eof,
}

pub struct BoundedLines<R> {
    inner: R,
    line: Vec<u8>,
    max: usize,
}

impl<R: AsyncBufRead + Unpin> BoundedLines<R> {
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            line: Vec::new(),
            max,
        }
    }

    pub async fn next_line(&mut self) -> std::io::Result<LineRead> {
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                if self.line.is_empty() {
                    return Ok(LineRead::Eof);
                }
                return Ok(LineRead::Line(std::mem::take(&mut self.line)));
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            if self.line.len() + take > self.max {
                return Ok(LineRead::TooLong);
            }
            self.line.extend_from_slice(&buf[..take]);
            self.inner.consume(if done { take + 1 } else { take });
            if done {
                return Ok(LineRead::Line(std::mem::take(&mut self.line)));
            }
        }
    }
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
        assert_eq!(r.next_line().await.unwrap(), LineRead::TooLong);
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
