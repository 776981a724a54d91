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
