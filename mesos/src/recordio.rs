//! RecordIO, the framing of Mesos event streams: each record is `<decimal length>\n<bytes>`,
//! with no separator after the bytes. Record boundaries are unrelated to HTTP chunk
//! boundaries, so the decoder is fed arbitrary slices and keeps partial records.

use crate::{Error, ErrorKind, Result};

/// Default cap on one record; a SUBSCRIBED event carries the whole cluster state.
pub const DEFAULT_MAX_RECORD: usize = 64 << 20;
/// A u64 has at most 20 decimal digits; a longer length line is garbage, not a record.
const MAX_LENGTH_DIGITS: usize = 20;

/// Frames one record.
pub fn encode(record: &[u8]) -> Vec<u8> {
    let mut out = format!("{}\n", record.len()).into_bytes();
    out.extend_from_slice(record);
    out
}

/// Incremental decoder: [`Decoder::feed`] bytes as they arrive, complete records come out.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max_record: usize,
    /// Length of the record being read, once its length line is complete.
    pending: Option<usize>,
    failed: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_RECORD)
    }
}

impl Decoder {
    /// A decoder that rejects records longer than `max_record` bytes.
    pub fn new(max_record: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            max_record,
            pending: None,
            failed: false,
        }
    }

    /// Adds bytes and returns every record they complete. After an error the stream is
    /// out of sync, so every later call fails too.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>> {
        if self.failed {
            return Err(bad("stream already failed to decode"));
        }
        self.buf.extend_from_slice(data);
        let mut records = Vec::new();
        loop {
            match self.pending {
                None => {
                    let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
                        if self.buf.len() > MAX_LENGTH_DIGITS {
                            return Err(self.fail(format!(
                                "length line longer than {MAX_LENGTH_DIGITS} bytes without a newline"
                            )));
                        }
                        break;
                    };
                    let len =
                        parse_length(&self.buf[..nl], self.max_record).map_err(|e| self.fail(e))?;
                    self.buf.drain(..=nl);
                    self.pending = Some(len);
                }
                Some(len) => {
                    if self.buf.len() < len {
                        break;
                    }
                    records.push(self.buf.drain(..len).collect());
                    self.pending = None;
                }
            }
        }
        Ok(records)
    }

    /// True if no partial record is buffered (a clean place for the stream to end).
    pub fn is_idle(&self) -> bool {
        self.pending.is_none() && self.buf.is_empty()
    }

    fn fail(&mut self, msg: String) -> Error {
        self.failed = true;
        bad(&msg)
    }
}

fn bad(msg: &str) -> Error {
    Error::new(ErrorKind::Decode, format!("decode recordio: {msg}"))
}

fn parse_length(line: &[u8], max_record: usize) -> std::result::Result<usize, String> {
    let shown = String::from_utf8_lossy(line);
    if line.is_empty() || !line.iter().all(u8::is_ascii_digit) {
        return Err(format!("bad record length {shown:?}"));
    }
    if line.len() > 1 && line[0] == b'0' {
        return Err(format!("bad record length {shown:?}: leading zero"));
    }
    let len: u64 = shown
        .parse()
        .map_err(|_| format!("bad record length {shown:?}: too large"))?;
    if len > max_record as u64 {
        return Err(format!(
            "record of {len} bytes is larger than the {max_record}-byte limit"
        ));
    }
    Ok(len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_matches_mesos_docs_example() {
        assert_eq!(
            encode(br#"{"type":"HEARTBEAT"}"#),
            b"20\n{\"type\":\"HEARTBEAT\"}".to_vec()
        );
        assert_eq!(encode(b""), b"0\n".to_vec());
    }

    #[test]
    fn decodes_several_records_in_one_feed() {
        let mut stream = encode(b"hello");
        stream.extend(encode(b""));
        stream.extend(encode(b"world!"));
        let mut d = Decoder::default();
        let got = d.feed(&stream).unwrap();
        assert_eq!(got, vec![b"hello".to_vec(), vec![], b"world!".to_vec()]);
        assert!(d.is_idle());
    }

    #[test]
    fn decodes_records_split_at_every_byte() {
        let mut stream = encode(b"first record");
        stream.extend(encode(&[0u8, 10, 13, 255]));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in &stream {
            got.extend(d.feed(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(got, vec![b"first record".to_vec(), vec![0u8, 10, 13, 255]]);
        assert!(d.is_idle());
    }

    #[test]
    fn partial_record_is_kept_until_complete() {
        let mut d = Decoder::default();
        assert!(d.feed(b"10\nabc").unwrap().is_empty());
        assert!(!d.is_idle());
        assert_eq!(d.feed(b"defghij5\n").unwrap(), vec![b"abcdefghij".to_vec()]);
        assert_eq!(d.feed(b"12345").unwrap(), vec![b"12345".to_vec()]);
    }

    #[test]
    fn bad_lengths_are_rejected() {
        for input in [
            &b"abc\n"[..],
            b"\n",
            b"-1\n",
            b"1 2\n",
            b"007\nxxxxxxx",
            b"99999999999999999999999\n",
        ] {
            let err = Decoder::default().feed(input).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Decode, "{input:?}");
            assert!(err.message().starts_with("decode recordio: "), "{err}");
        }
    }

    #[test]
    fn length_line_without_newline_is_bounded() {
        let err = Decoder::default().feed(&[b'1'; 25]).unwrap_err();
        assert!(err.message().contains("without a newline"), "{err}");
    }

    #[test]
    fn oversized_record_is_rejected_before_buffering() {
        let mut d = Decoder::new(16);
        let err = d.feed(b"17\n").unwrap_err();
        assert_eq!(
            err.message(),
            "decode recordio: record of 17 bytes is larger than the 16-byte limit"
        );
        assert!(d.feed(b"1\nx").is_err(), "a failed stream stays failed");
        assert_eq!(
            Decoder::new(16)
                .feed(b"16\n0123456789abcdef")
                .unwrap()
                .len(),
            1
        );
    }
}
