//! Prometheus text exposition (format 0.0.4) without a registry: each part of ragvault keeps its own series and
//! renders them into the `/metrics` body. Kept small on purpose: fixed-bucket histograms and labelled series
//! behind one mutex each, cheap enough for the request path (an update is a hash lookup and a few adds).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Latency buckets in seconds, from sub-millisecond hot paths to slow provider calls.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// Writes `# HELP` and `# TYPE` for a family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value escaped for the text format (backslash, double quote, newline).
pub fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// `{a="x",b="y"}` from names and values (empty when there are none).
pub fn labels(names: &[&str], values: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(name, value)| format!("{name}=\"{}\"", escape_label(value)))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

#[derive(Clone, Debug, Default)]
struct HistogramSeries {
    /// Per bucket (not cumulative); the last slot is +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A histogram family with labels, e.g. request duration by route, method and status.
#[derive(Debug)]
pub struct HistogramVec {
    label_names: &'static [&'static str],
    buckets: &'static [f64],
    series: Mutex<BTreeMap<Vec<String>, HistogramSeries>>,
}

impl HistogramVec {
    pub fn new(label_names: &'static [&'static str], buckets: &'static [f64]) -> HistogramVec {
        HistogramVec {
            label_names,
            buckets,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, label_values: &[&str], value: Duration) {
        let seconds = value.as_secs_f64();
        let slot = self
            .buckets
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.buckets.len());
        let key: Vec<String> = label_values.iter().map(|v| (*v).to_owned()).collect();
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let entry = series.entry(key).or_insert_with(|| HistogramSeries {
            counts: vec![0; self.buckets.len() + 1],
            ..HistogramSeries::default()
        });
        entry.counts[slot] += 1;
        entry.sum += seconds;
        entry.count += 1;
    }

    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        family(out, name, "histogram", help);
        let series = self
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (values, s) in &series {
            let base = labels(self.label_names, values);
            let with_le = |le: &str| {
                let inner = base.trim_start_matches('{').trim_end_matches('}');
                if inner.is_empty() {
                    format!("{{le=\"{le}\"}}")
                } else {
                    format!("{{{inner},le=\"{le}\"}}")
                }
            };
            let mut cumulative = 0;
            for (i, bound) in self.buckets.iter().enumerate() {
                cumulative += s.counts[i];
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {cumulative}",
                    with_le(&bound.to_string())
                );
            }
            let _ = writeln!(out, "{name}_bucket{} {}", with_le("+Inf"), s.count);
            let _ = writeln!(out, "{name}_sum{base} {}", s.sum);
            let _ = writeln!(out, "{name}_count{base} {}", s.count);
        }
    }
}

/// A family of counters with labels, several values per series (e.g. calls, tokens and cost of one
/// provider/model), rendered as one family per value.
#[derive(Debug)]
pub struct CounterVec<const N: usize> {
    label_names: &'static [&'static str],
    series: Mutex<BTreeMap<Vec<String>, [u64; N]>>,
}

impl<const N: usize> CounterVec<N> {
    pub fn new(label_names: &'static [&'static str]) -> CounterVec<N> {
        CounterVec {
            label_names,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn add(&self, label_values: &[&str], amounts: [u64; N]) {
        let key: Vec<String> = label_values.iter().map(|v| (*v).to_owned()).collect();
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let entry = series.entry(key).or_insert([0; N]);
        for (total, amount) in entry.iter_mut().zip(amounts) {
            *total = total.saturating_add(amount);
        }
    }

    /// Renders value `index` of every series as counter `name`.
    pub fn render(&self, out: &mut String, index: usize, name: &str, help: &str) {
        family(out, name, "counter", help);
        let series = self
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (values, totals) in &series {
            let _ = writeln!(
                out,
                "{name}{} {}",
                labels(self.label_names, values),
                totals[index]
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets() {
        static BUCKETS: [f64; 2] = [0.1, 1.0];
        let h = HistogramVec::new(&["route"], &BUCKETS);
        h.observe(&["/a"], Duration::from_millis(50));
        h.observe(&["/a"], Duration::from_millis(500));
        h.observe(&["/a"], Duration::from_secs(5));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "help");
        assert!(
            out.contains("x_seconds_bucket{route=\"/a\",le=\"0.1\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{route=\"/a\",le=\"1\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{route=\"/a\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{route=\"/a\"} 3\n"), "{out}");
    }

    #[test]
    fn counters_sum_per_series_and_escape_labels() {
        let c: CounterVec<2> = CounterVec::new(&["model"]);
        c.add(&["m\"1"], [1, 10]);
        c.add(&["m\"1"], [1, 5]);
        let mut out = String::new();
        c.render(&mut out, 1, "tokens_total", "help");
        assert!(out.contains("tokens_total{model=\"m\\\"1\"} 15\n"), "{out}");
    }
}
