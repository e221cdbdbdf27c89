//! Streaming text with stop strings: emit text as it is decoded, but hold back any tail
//! that could still become a stop string, and cut the output where one appears.

/// Accumulates generated text and decides what is safe to stream.
#[derive(Debug, Default)]
pub struct StopText {
    text: String,
    emitted: usize,
    stops: Vec<String>,
    hold: usize,
}

impl StopText {
    pub fn new(stops: &[String]) -> Self {
        let hold = stops
            .iter()
            .map(|s| s.len().saturating_sub(1))
            .max()
            .unwrap_or(0);
        Self {
            stops: stops.to_vec(),
            hold,
            ..Self::default()
        }
    }

    /// Append a decoded delta. Returns the text now safe to emit and whether a stop
    /// string was found (the output then ends just before it).
    pub fn push(&mut self, delta: &str) -> (String, bool) {
        let search_from = self.emitted;
        self.text.push_str(delta);
        let hit = self
            .stops
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|i| search_from + i)
            })
            .min();
        if let Some(end) = hit {
            self.text.truncate(end);
            return (self.take(end), true);
        }
        let mut safe = self.text.len().saturating_sub(self.hold).max(self.emitted);
        while !self.text.is_char_boundary(safe) {
            safe -= 1;
        }
        (self.take(safe), false)
    }

    /// Everything not yet emitted (call when generation ends).
    pub fn flush(&mut self) -> String {
        self.take(self.text.len())
    }

    /// The whole output text so far (stop string excluded).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn take(&mut self, upto: usize) -> String {
        let upto = upto.max(self.emitted);
        let out = self.text[self.emitted..upto].to_string();
        self.emitted = upto;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_a_possible_stop_prefix_then_cuts_at_the_stop() {
        let mut s = StopText::new(&["\n\n".to_string(), "END".to_string()]);
        let mut out = String::new();
        for d in ["Hello", " wor", "ld E", "N", "D more"] {
            let (emit, stopped) = s.push(d);
            out.push_str(&emit);
            if stopped {
                break;
            }
        }
        assert_eq!(out, "Hello world ");
        assert_eq!(s.text(), "Hello world ");
    }

    #[test]
    fn without_stops_everything_streams_and_multibyte_is_kept_whole() {
        let mut s = StopText::new(&[]);
        assert_eq!(s.push("né").0, "né");
        let mut s = StopText::new(&["xx".to_string()]);
        let (emit, _) = s.push("aé");
        assert_eq!(emit, "a");
        assert_eq!(s.flush(), "é");
    }
}
