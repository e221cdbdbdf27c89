//! Server-sent events, incrementally: bytes in (split anywhere, even inside a UTF-8
//! character or a CRLF), complete events' `data` out. Lines end with LF, CRLF or CR; a
//! blank line ends an event; `data:` lines join with LF; comments (`:`) and other fields
//! (`event:`, `id:`, `retry:`) are skipped, as the SSE specification says.

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of an unfinished line.
    line: Vec<u8>,
    /// The event being assembled.
    data: Option<String>,
    /// The previous byte was a CR (a following LF belongs to it).
    after_cr: bool,
}

impl SseParser {
    /// Feed bytes; returns the data of every event they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line, &mut events);
                }
                _ => self.line.push(b),
            }
        }
        events
    }

    fn line_done(&mut self, line: &[u8], events: &mut Vec<String>) {
        if line.is_empty() {
            events.extend(self.data.take());
            return;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = line.split_once(':').unwrap_or((&line, ""));
        if field == "data" {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let text = "data: {\"a\":\"é\"}\n\n: keep-alive\n\nevent: x\ndata: one\ndata: two\r\n\r\ndata:[DONE]\r\r";
        let bytes = text.as_bytes();
        let whole = SseParser::default().push(bytes);
        assert_eq!(whole, vec!["{\"a\":\"é\"}", "one\ntwo", "[DONE]"]);
        for split in 0..bytes.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&bytes[..split]);
            got.extend(p.push(&bytes[split..]));
            assert_eq!(got, whole, "split at {split}");
        }
        let mut p = SseParser::default();
        let byte_by_byte: Vec<String> = bytes.iter().flat_map(|b| p.push(&[*b])).collect();
        assert_eq!(byte_by_byte, whole);
    }

    #[test]
    fn an_unterminated_event_is_not_emitted() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: partial\n").is_empty());
        assert_eq!(p.push(b"\n"), vec!["partial"]);
    }
}
