//! The Prometheus text exposition format (version 0.0.4): `# HELP` and
//! `# TYPE` lines, then one line per sample, label values escaped.
//!
//! The agent's counters already live where they are counted (store,
//! server, fetches, mount); a scrape renders a snapshot of them here, so
//! the format's rules (names, escaping, histogram series) are written
//! once and nothing else needs to know them.

use std::fmt::Write;

/// Labels of one sample: (name, value) pairs.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// A scrape's text, built family by family.
#[derive(Default)]
pub struct Exposition {
    out: String,
    /// The family samples go to.
    family: String,
}

/// The `Content-Type` of the text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's type.
#[derive(Debug, Clone, Copy)]
pub enum Type {
    /// Only goes up (its name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Exposition {
    /// Starts family `name`: its samples follow with [`Exposition::sample`].
    pub fn family(&mut self, name: &str, kind: Type, help: &str) {
        let kind = match kind {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
        };
        self.head(name, kind, help);
        name.clone_into(&mut self.family);
    }

    /// A sample of the family started last.
    pub fn sample(&mut self, labels: Labels<'_>, value: u64) {
        let name = std::mem::take(&mut self.family);
        self.line(&name, labels, &value.to_string());
        self.family = name;
    }

    /// A family of one sample without labels.
    pub fn single(&mut self, name: &str, kind: Type, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(&[], value);
    }

    /// A histogram without labels: `cumulative[i]` observations at most
    /// `bounds[i]`, the last (one past `bounds`) every observation.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        bounds: &[f64],
        cumulative: &[u64],
        sum: f64,
    ) {
        self.head(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (i, n) in cumulative.iter().enumerate() {
            let le = bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), f64::to_string);
            self.line(&bucket, &[("le", &le)], &n.to_string());
        }
        self.line(&format!("{name}_sum"), &[], &sum.to_string());
        let count = cumulative.last().copied().unwrap_or(0);
        self.line(&format!("{name}_count"), &[], &count.to_string());
    }

    /// The text so far.
    pub fn finish(self) -> String {
        self.out
    }

    fn head(&mut self, name: &str, kind: &str, help: &str) {
        debug_assert!(valid_name(name), "{name}");
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn line(&mut self, name: &str, labels: Labels<'_>, value: &str) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                debug_assert!(valid_name(k), "{k}");
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// A label value as the format quotes it: backslash, double quote and
/// line feed escaped.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A metric or label name: `[a-zA-Z_][a-zA-Z0-9_]*` (ours never use `:`).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_histograms_end_in_inf() {
        let mut e = Exposition::default();
        e.family("dot_x_total", Type::Counter, "A help\\line\nsecond");
        e.sample(&[("peer", "a\"b\\c\nd")], 7);
        e.histogram("dot_h_seconds", "H.", &[0.5, 1.0], &[1, 2, 3], 4.25);
        let text = e.finish();
        assert!(text.contains("# HELP dot_x_total A help\\\\line\\nsecond\n"));
        assert!(text.contains("dot_x_total{peer=\"a\\\"b\\\\c\\nd\"} 7\n"));
        assert!(text.contains("dot_h_seconds_bucket{le=\"0.5\"} 1\n"));
        assert!(text.contains("dot_h_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("dot_h_seconds_sum 4.25\ndot_h_seconds_count 3\n"));
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("dot_fetch_bytes_total"));
        assert!(!valid_name("9x"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
    }
}
