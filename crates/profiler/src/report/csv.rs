//! summary.csv: one row per configuration, every column of [`super::columns::present`].

use super::columns;
use crate::result::BenchResults;

pub(crate) fn escape(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV text.
pub fn render(r: &BenchResults) -> String {
    let cols = columns::present(r);
    let mut out = cols.iter().map(|c| c.name).collect::<Vec<_>>().join(",");
    out.push('\n');
    for cfg in &r.configs {
        let row: Vec<String> = cols
            .iter()
            .map(|c| escape(&(c.value)(cfg).unwrap_or_default()))
            .collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_quotes_and_commas() {
        assert_eq!(escape("a,b"), "\"a,b\"");
        assert_eq!(escape("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn one_row_per_config() {
        let r = crate::report::tests::sample_results();
        let csv = render(&r);
        assert_eq!(csv.lines().count(), 1 + r.configs.len());
        let header = csv.lines().next().unwrap_or_default();
        assert!(header.starts_with("mode,load,input_len"));
        assert!(csv.contains("does not fit"));
    }
}
