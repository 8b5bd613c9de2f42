//! Bytes in a file's own encoding as UTF-8 text, decoded as they are read, and
//! which encoding a file without a label looks like.

use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::Path;

use encoding_rs::{DecoderResult, Encoding};

/// Where a file stops being text in the encoding it is read as.
#[derive(Debug, Clone, Copy)]
pub(super) struct BadBytes {
    /// The line, from 1, of the first byte that is not text.
    pub(super) line: u64,
}

impl std::fmt::Display for BadBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: not text in this encoding", self.line)
    }
}

impl std::error::Error for BadBytes {}

/// A file's bytes as UTF-8, decoded from its encoding as they are read (memory
/// stays flat in the file's size), up to the first byte that is not text in it.
pub(super) struct Decoded<R> {
    inner: R,
    decoder: encoding_rs::Decoder,
    /// Decoded text; `out[start..end]` is not read yet.
    out: Box<[u8]>,
    start: usize,
    end: usize,
    /// Newlines in the input decoded so far.
    newlines: u64,
    /// Set once the input stops being text: every later read fails with it.
    bad: Option<BadBytes>,
    done: bool,
}

impl<R: BufRead> Decoded<R> {
    /// Reads `inner` as `encoding`, dropping a byte order mark.
    pub(super) fn new(inner: R, encoding: &'static Encoding) -> Self {
        Self {
            inner,
            // A UTF-8 BOM (Excel's "CSV UTF-8") would otherwise stick to the first
            // header and hide the `openid` column.
            decoder: encoding.new_decoder_with_bom_removal(),
            out: vec![0; 8 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            newlines: 0,
            bad: None,
            done: false,
        }
    }

    /// Decodes the next chunk of input into `out`.
    fn decode(&mut self) -> io::Result<()> {
        let src = self.inner.fill_buf()?;
        let last = src.is_empty();
        let (result, read, written) =
            self.decoder
                .decode_to_utf8_without_replacement(src, &mut self.out, last);
        let newlines = |bytes: &[u8]| bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        match result {
            DecoderResult::Malformed(_, after) => {
                // The sequence is known bad at its last byte; its line is the
                // newlines before that byte, plus one.
                let last_bad = read - usize::from(after);
                let before = newlines(&src[..last_bad.saturating_sub(1)]);
                self.bad = Some(BadBytes {
                    line: self.newlines + before + 1,
                });
            }
            DecoderResult::InputEmpty if last => self.done = true,
            DecoderResult::InputEmpty | DecoderResult::OutputFull => {}
        }
        self.newlines += newlines(&src[..read]);
        self.inner.consume(read);
        self.start = 0;
        self.end = written;
        Ok(())
    }
}

impl<R: BufRead> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The text before a bad byte is handed out first, so rows read up to it.
        while self.start == self.end {
            if let Some(bad) = self.bad {
                return Err(io::Error::new(io::ErrorKind::InvalidData, bad));
            }
            if self.done {
                return Ok(0);
            }
            self.decode()?;
        }
        let n = buf.len().min(self.end - self.start);
        buf[..n].copy_from_slice(&self.out[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

/// The encoding the start of the file (up to 1 MiB) most looks like, by
/// chardetng (Firefox's detector for legacy text without a label).
pub(super) fn guess_encoding(path: &Path) -> &'static Encoding {
    let mut head = Vec::new();
    let _ = File::open(path).and_then(|f| f.take(1 << 20).read_to_end(&mut head));
    let mut detector = chardetng::EncodingDetector::new();
    detector.feed(&head, true);
    // No top-level domain to hint with; UTF-8 is allowed as a guess, but
    // this is only asked once UTF-8 has failed.
    detector.guess(None, true)
}

/// Whether the file begins with the UTF-8 byte order mark.
pub(super) fn starts_with_utf8_bom(path: &Path) -> bool {
    let mut head = Vec::with_capacity(3);
    File::open(path)
        .and_then(|f| f.take(3).read_to_end(&mut head))
        .is_ok()
        && head == b"\xEF\xBB\xBF"
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use encoding_rs::{GB18030, UTF_8};

    use super::*;

    /// Everything `bytes` decode to as `encoding`, read through a buffer of `chunk`
    /// bytes so characters straddle the reads.
    fn decode_all(bytes: &[u8], encoding: &'static Encoding, chunk: usize) -> io::Result<String> {
        let mut text = String::new();
        Decoded::new(BufReader::with_capacity(chunk, bytes), encoding).read_to_string(&mut text)?;
        Ok(text)
    }

    /// The line `BadBytes` names when `bytes` are read as `encoding`.
    fn bad_line(bytes: &[u8], encoding: &'static Encoding, chunk: usize) -> u64 {
        let e = decode_all(bytes, encoding, chunk).unwrap_err();
        e.get_ref()
            .unwrap()
            .downcast_ref::<BadBytes>()
            .unwrap()
            .line
    }

    #[test]
    fn gbk_decodes_whole_across_reads_of_any_size() {
        let text = "openid,name\n一,张三丰\n".repeat(2_000);
        let (gbk, _, _) = encoding_rs::GBK.encode(&text);
        for chunk in [1, 3, 8 * 1024] {
            assert_eq!(decode_all(&gbk, GB18030, chunk).unwrap(), text, "{chunk}");
        }
    }

    #[test]
    fn a_utf8_bom_is_dropped() {
        let text = decode_all(b"\xEF\xBB\xBFopenid\n", UTF_8, 2).unwrap();
        assert_eq!(text, "openid\n");
    }

    #[test]
    fn a_bad_byte_is_placed_on_its_line_whatever_the_reads() {
        for chunk in [1, 2, 64] {
            assert_eq!(bad_line(b"a\nb\nc\xFF\nd\n", UTF_8, chunk), 3, "{chunk}");
            assert_eq!(bad_line(b"a\nb\nc\xFF\nd\n", GB18030, chunk), 3, "{chunk}");
            // A character cut short by the end of its line.
            assert_eq!(bad_line(b"a\n\xE5\xBC\n", UTF_8, chunk), 2, "{chunk}");
            assert_eq!(bad_line(b"a\n\x81\n", GB18030, chunk), 2, "{chunk}");
            // And by the end of the file.
            assert_eq!(bad_line(b"a\nb\xE5", UTF_8, chunk), 2, "{chunk}");
        }
    }
}
