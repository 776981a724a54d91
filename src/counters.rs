//! One shape for every subsystem's counters and gauges: a name, labels, a value. The NAT, DHCP and DNS each
//! describe their counters this way, so the JSON API, the UI and `/metrics` read them all alike.
//!
//! JSON: `[{"name":"dropped","labels":{"reason":"fragment"},"kind":"counter","value":3}, ...]`. Names are
//! short and subsystem-local (`dropped`, `mappings`); `/metrics` adds the `gatekeeper_<subsystem>_` prefix.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Only ever grows (until a restart).
    Counter,
    /// A level now: table sizes, free addresses.
    Gauge,
    /// One series of a histogram: `NAME_bucket{le}` (cumulative counts), `NAME_sum` (in milliseconds when the
    /// family is in seconds: written divided by 1000) and `NAME_count`.
    Histogram,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counter {
    pub name: &'static str,
    #[serde(serialize_with = "labels_as_map")]
    pub labels: Vec<(&'static str, String)>,
    pub kind: Kind,
    pub value: u64,
}

fn labels_as_map<S: Serializer>(labels: &[(&'static str, String)], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(labels.len()))?;
    for (k, v) in labels {
        m.serialize_entry(k, v)?;
    }
    m.end()
}

/// A subsystem's counters, in the order it lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Counters(pub Vec<Counter>);

impl Counters {
    pub fn new() -> Self {
        Counters(Vec::new())
    }

    pub fn counter(&mut self, name: &'static str, value: u64) -> &mut Self {
        self.push(name, &[], Kind::Counter, value)
    }

    pub fn gauge(&mut self, name: &'static str, value: u64) -> &mut Self {
        self.push(name, &[], Kind::Gauge, value)
    }

    /// A counter with one label, e.g. `("dropped", "reason", "fragment")`.
    pub fn labelled(&mut self, name: &'static str, key: &'static str, label: &str, value: u64) -> &mut Self {
        self.push(name, &[(key, label)], Kind::Counter, value)
    }

    pub fn push(&mut self, name: &'static str, labels: &[(&'static str, &str)], kind: Kind, value: u64) -> &mut Self {
        let labels = labels.iter().map(|&(k, v)| (k, v.to_owned())).collect();
        self.0.push(Counter { name, labels, kind, value });
        self
    }

    /// The value of the counter `name` whose labels include every one of `labels`, summed over the matches.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let mut found = None;
        for c in self.0.iter().filter(|c| c.name == name) {
            if labels.iter().all(|(k, v)| c.labels.iter().any(|(ck, cv)| ck == k && cv == v)) {
                *found.get_or_insert(0) += c.value;
            }
        }
        found
    }

    /// A histogram of millisecond values, as seconds: `names` its `X_seconds_bucket`, `X_seconds_sum` and
    /// `X_seconds_count`; `bounds_ms` the buckets' upper bounds, `counts` how many values fell into each (not
    /// cumulative; one more for above the last bound), `sum_ms` their sum.
    pub fn histogram_ms(
        &mut self,
        names: [&'static str; 3],
        bounds_ms: &[u64],
        counts: &[u64],
        sum_ms: u64,
    ) -> &mut Self {
        let [bucket, sum, count] = names;
        let mut total = 0;
        for (i, b) in bounds_ms.iter().enumerate() {
            total += counts.get(i).copied().unwrap_or(0);
            let le = format!("{}.{:03}", b / 1000, b % 1000);
            self.push(bucket, &[("le", &le)], Kind::Histogram, total);
        }
        total += counts.get(bounds_ms.len()).copied().unwrap_or(0);
        self.push(bucket, &[("le", "+Inf")], Kind::Histogram, total);
        self.push(sum, &[], Kind::Histogram, sum_ms);
        self.push(count, &[], Kind::Histogram, total)
    }

    pub fn extend(&mut self, other: Counters) -> &mut Self {
        self.0.extend(other.0);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_and_lookup() {
        let mut c = Counters::new();
        c.counter("translated", 5).gauge("mappings", 2).labelled("dropped", "reason", "fragment", 3);
        c.labelled("dropped", "reason", "martian", 4);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            json,
            r#"[{"name":"translated","labels":{},"kind":"counter","value":5},{"name":"mappings","labels":{},"kind":"gauge","value":2},{"name":"dropped","labels":{"reason":"fragment"},"kind":"counter","value":3},{"name":"dropped","labels":{"reason":"martian"},"kind":"counter","value":4}]"#
        );
        assert_eq!(c.get("dropped", &[("reason", "martian")]), Some(4));
        assert_eq!(c.get("dropped", &[]), Some(7));
        assert_eq!(c.get("nothing", &[]), None);
    }
}

/// Writes `counters` in the Prometheus text format (0.0.4) as `gatekeeper_<subsystem>_<name>`: counters get
/// `_total` (names in bytes end `_bytes_total`, after Prometheus' conventions), samples of one name are written
/// together under one HELP and TYPE, and label values are escaped (a device's name is hostile).
pub fn prometheus(out: &mut String, subsystem: &str, counters: &Counters) {
    use std::fmt::Write as _;
    let mut order: Vec<(String, Kind)> = Vec::new();
    let mut samples: std::collections::HashMap<String, Vec<&Counter>> = std::collections::HashMap::new();
    for c in &counters.0 {
        // Base units: milliseconds are written as seconds.
        let stem = c.name.strip_suffix("_ms").map_or_else(|| c.name.to_owned(), |s| format!("{s}_seconds"));
        let base = format!("gatekeeper_{subsystem}_{stem}");
        let name = match c.kind {
            Kind::Counter if !base.ends_with("_total") => format!("{base}_total"),
            // A histogram's series are one family, under its name without the suffix.
            Kind::Histogram => {
                ["_bucket", "_sum", "_count"].iter().find_map(|s| base.strip_suffix(s)).unwrap_or(&base).to_owned()
            }
            _ => base,
        };
        let list = samples.entry(name.clone()).or_default();
        if list.is_empty() {
            order.push((name, c.kind));
        }
        list.push(c);
    }
    for (name, kind) in order {
        let what = name.trim_start_matches("gatekeeper_").replace('_', " ");
        let _ = writeln!(out, "# HELP {name} {what}.");
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for c in &samples[&name] {
            let full = match c.kind {
                Kind::Histogram => format!("gatekeeper_{subsystem}_{}", c.name),
                _ => name.clone(),
            };
            out.push_str(&full);
            if !c.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in c.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            if c.name.ends_with("_ms") || (c.kind == Kind::Histogram && c.name.ends_with("_seconds_sum")) {
                let _ = writeln!(out, " {}.{:03}", c.value / 1000, c.value % 1000);
            } else {
                let _ = writeln!(out, " {}", c.value);
            }
        }
    }
}

/// A label value as the text format wants it: backslash, double quote and line feed escaped.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod prometheus_tests {
    use super::*;

    #[test]
    fn samples_of_one_name_are_grouped_and_labels_escaped() {
        let mut c = Counters::new();
        c.labelled("dropped", "reason", "a\"b\\c\nd", 1).gauge("mappings", 2).labelled("dropped", "reason", "x", 3);
        c.gauge("oldest_ms", 1_500);
        let names =
            ["upstream_latency_seconds_bucket", "upstream_latency_seconds_sum", "upstream_latency_seconds_count"];
        c.histogram_ms(names, &[10, 100], &[2, 1, 1], 2_345);
        let mut out = String::new();
        prometheus(&mut out, "nat", &c);
        assert_eq!(
            out,
            "# HELP gatekeeper_nat_dropped_total nat dropped total.\n# TYPE gatekeeper_nat_dropped_total counter\n\
             gatekeeper_nat_dropped_total{reason=\"a\\\"b\\\\c\\nd\"} 1\ngatekeeper_nat_dropped_total{reason=\"x\"} 3\n\
             # HELP gatekeeper_nat_mappings nat mappings.\n# TYPE gatekeeper_nat_mappings gauge\n\
             gatekeeper_nat_mappings 2\n\
             # HELP gatekeeper_nat_oldest_seconds nat oldest seconds.\n# TYPE gatekeeper_nat_oldest_seconds gauge\n\
             gatekeeper_nat_oldest_seconds 1.500\n\
             # HELP gatekeeper_nat_upstream_latency_seconds nat upstream latency seconds.\n\
             # TYPE gatekeeper_nat_upstream_latency_seconds histogram\n\
             gatekeeper_nat_upstream_latency_seconds_bucket{le=\"0.010\"} 2\n\
             gatekeeper_nat_upstream_latency_seconds_bucket{le=\"0.100\"} 3\n\
             gatekeeper_nat_upstream_latency_seconds_bucket{le=\"+Inf\"} 4\n\
             gatekeeper_nat_upstream_latency_seconds_sum 2.345\n\
             gatekeeper_nat_upstream_latency_seconds_count 4\n"
        );
    }
}
