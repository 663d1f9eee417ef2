//! Prometheus' text exposition format, version 0.0.4: each family once,
//! its `# HELP` and `# TYPE` first, then its samples. Label values are user
//! input (volume names), so they are escaped as the format requires.

use std::fmt::Write;

use super::histogram::HistogramSnapshot;

/// The content type of the exposition, as Prometheus asks for it.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The text of one scrape, written family by family.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family: every sample written until the next family is one
    /// of it (a histogram's `_bucket`, `_sum` and `_count` included).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
    }

    /// One sample of a counter or gauge.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A histogram's samples: its buckets cumulative and ending with
    /// `+Inf` (which equals the count), then `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let mut cumulative = 0;
        for (le, n) in h.bounds.iter().zip(&h.counts) {
            cumulative += n;
            let _ = write!(self.out, "{name}_bucket");
            write_labels(&mut self.out, labels, Some(&number(*le)));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_bucket");
        write_labels(&mut self.out, labels, Some("+Inf"));
        let _ = writeln!(self.out, " {}", h.count);
        let _ = write!(self.out, "{name}_sum");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", number(h.sum_seconds));
        let _ = write!(self.out, "{name}_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", h.count);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
    }
    out.push('}');
}

/// A label value as the format writes it: `\`, `"` and newline escaped.
pub fn escape_label_value(v: &str) -> String {
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

/// A value as Go's strconv writes it, which Prometheus parses: whole
/// numbers without a fraction, the infinities as `+Inf`/`-Inf`.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_has_its_help_and_type_before_its_samples() {
        let mut e = Exposition::default();
        e.family("rbdvol_takeovers_total", Kind::Counter, "volumes this host took over");
        e.sample("rbdvol_takeovers_total", &[], 3.0);
        e.family("rbdvol_volumes_mounted", Kind::Gauge, "volumes mounted here, by mapper");
        e.sample("rbdvol_volumes_mounted", &[("mapper", "krbd")], 0.0);
        e.sample("rbdvol_volumes_mounted", &[("mapper", "userspace")], 2.0);
        assert_eq!(
            e.finish(),
            "# HELP rbdvol_takeovers_total volumes this host took over\n# TYPE rbdvol_takeovers_total counter\nrbdvol_takeovers_total 3\n\
             # HELP rbdvol_volumes_mounted volumes mounted here, by mapper\n# TYPE rbdvol_volumes_mounted gauge\n\
             rbdvol_volumes_mounted{mapper=\"krbd\"} 0\nrbdvol_volumes_mounted{mapper=\"userspace\"} 2\n"
        );
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("two\nlines"), "two\\nlines");
        assert_eq!(escape_label_value("vol-1_ok.é"), "vol-1_ok.é");
        let mut e = Exposition::default();
        e.sample("x", &[("volume", "a\"b\\\n")], 1.0);
        assert_eq!(e.finish(), "x{volume=\"a\\\"b\\\\\\n\"} 1\n");
    }

    #[test]
    fn help_text_escapes_backslash_and_newline() {
        let mut e = Exposition::default();
        e.family("x", Kind::Gauge, "a\\b\nc");
        assert_eq!(e.finish(), "# HELP x a\\\\b\\nc\n# TYPE x gauge\n");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf_equal_to_the_count() {
        let h = HistogramSnapshot { bounds: vec![0.005, 0.1, 1.0], counts: vec![2, 0, 3], count: 6, sum_seconds: 7.25 };
        let mut e = Exposition::default();
        e.histogram("d_seconds", &[("endpoint", "/VolumeDriver.Mount")], &h);
        assert_eq!(
            e.finish(),
            "d_seconds_bucket{endpoint=\"/VolumeDriver.Mount\",le=\"0.005\"} 2\n\
             d_seconds_bucket{endpoint=\"/VolumeDriver.Mount\",le=\"0.1\"} 2\n\
             d_seconds_bucket{endpoint=\"/VolumeDriver.Mount\",le=\"1\"} 5\n\
             d_seconds_bucket{endpoint=\"/VolumeDriver.Mount\",le=\"+Inf\"} 6\n\
             d_seconds_sum{endpoint=\"/VolumeDriver.Mount\"} 7.25\n\
             d_seconds_count{endpoint=\"/VolumeDriver.Mount\"} 6\n"
        );
    }

    #[test]
    fn numbers_are_written_as_prometheus_parses_them() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(1.5), "1.5");
        assert_eq!(number(1e20), "100000000000000000000");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(0.00025), "0.00025");
    }
}
