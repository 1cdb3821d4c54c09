//! Writer for the Prometheus text exposition format 0.0.4 (both services' `/metrics`): `# HELP` /
//! `# TYPE` lines, samples `name{label="value",…} value`, label-value and help-text escaping,
//! number formatting.

use std::fmt::Write as _;

/// The `Content-Type` of a scrape response in this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metric type named on a `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up (resets when the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative `_bucket{le=…}` counts with `_sum` and `_count`.
    Histogram,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// Accumulates one exposition (the body of a scrape).
#[derive(Debug, Default)]
pub struct TextWriter {
    out: String,
}

impl TextWriter {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a metric family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: MetricType, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample with a floating-point value.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.sample_text(name, labels, &format_value(value));
    }

    /// One sample with an integer value (counters, bucket counts).
    pub fn sample_u64(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.sample_text(name, labels, &value.to_string());
    }

    fn sample_text(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label_value(val));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(value);
        self.out.push('\n');
    }

    /// The finished exposition.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Escapes a label value: `\` → `\\`, `"` → `\"`, line feed → `\n`.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes `# HELP` text: `\` → `\\`, line feed → `\n`.
pub fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Formats a sample value as Prometheus parses it: `NaN`, `+Inf`, `-Inf`, plain decimals, and
/// exponent notation for very large or very small magnitudes.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v != 0.0 && (v.abs() >= 1e15 || v.abs() < 1e-6) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label_value("x\ny"), "x\\ny");
        assert_eq!(
            escape_label_value("variant=keep050,split=9"),
            "variant=keep050,split=9"
        );
    }

    #[test]
    fn help_is_escaped_but_quotes_are_kept() {
        assert_eq!(escape_help("a \"b\" \\ c\nd"), "a \"b\" \\\\ c\\nd");
    }

    #[test]
    fn values_are_formatted_for_prometheus() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.00025), "0.00025");
        assert_eq!(format_value(-2.5), "-2.5");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(1e-9), "1e-9");
        assert_eq!(format_value(2.5e20), "2.5e20");
        assert_eq!(format_value(0.0), "0");
    }

    #[test]
    fn writer_emits_help_type_and_labelled_samples() {
        let mut w = TextWriter::new();
        w.family("jmdc_edge_x_total", MetricType::Counter, "Things.\nMore.");
        w.sample_u64("jmdc_edge_x_total", &[("a", "1"), ("b", "q\"")], 7);
        w.family("jmdc_edge_y", MetricType::Gauge, "Y.");
        w.sample("jmdc_edge_y", &[], 0.5);
        assert_eq!(
            w.finish(),
            "# HELP jmdc_edge_x_total Things.\\nMore.\n\
             # TYPE jmdc_edge_x_total counter\n\
             jmdc_edge_x_total{a=\"1\",b=\"q\\\"\"} 7\n\
             # HELP jmdc_edge_y Y.\n\
             # TYPE jmdc_edge_y gauge\n\
             jmdc_edge_y 0.5\n"
        );
    }
}
