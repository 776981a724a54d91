//! The traffic API's parameters, parsed and bounded before any work is done: a bad one is an error that names it
//! (the web answers 400 with it); a good one can never make a query allocate without bound (points and 100 ms
//! ranges are capped).
//!
//! `device` is a MAC, an IP (a device without a lease) or `all`; `remote` an IPv4 address or `all`; `from`/`to`
//! are Unix ms (defaults: the last hour, ending now); `step` a multiple of 100 ms (default: what fits 2,000 points).

use super::core::{BUCKET_MS, HISTORY_MS, LONG_MS, Select};
use crate::types::Device;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Points one series answer holds at most (a day at 1 s steps is 86,400).
pub const MAX_POINTS: usize = 100_000;
/// Points when no `step` is given.
pub const DEFAULT_POINTS: u64 = 2_000;
/// The longest range of 100 ms buckets that `stats` sums (the history is 24 h; an hour of slack for clocks).
pub const MAX_STATS_MS: u64 = HISTORY_MS + 3_600_000;
/// Rows of a top list by default, and at most.
pub const TOP_DEFAULT: usize = 20;
pub const TOP_MAX: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad parameter `{param}`: {message}")]
pub struct BadParam {
    pub param: &'static str,
    pub message: String,
}

fn bad(param: &'static str, message: impl Into<String>) -> BadParam {
    BadParam { param, message: message.into() }
}

pub type Params = HashMap<String, String>;

fn get<'a>(p: &'a Params, name: &str) -> Option<&'a str> {
    p.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// `device`: a MAC, an IP, or `all` (`None`); required unless `default_all`.
pub fn device(p: &Params, default_all: bool) -> Result<Option<Device>, BadParam> {
    match get(p, "device") {
        None if default_all => Ok(None),
        None => Err(bad("device", "missing; give a MAC (aa:bb:cc:dd:ee:ff), an IP, or all")),
        Some(s) if s.eq_ignore_ascii_case("all") => Ok(None),
        Some(s) => s.parse::<Device>().map(Some).map_err(|e| bad("device", e)),
    }
}

pub fn remote(p: &Params) -> Result<Option<Ipv4Addr>, BadParam> {
    match get(p, "remote") {
        None => Ok(None),
        Some(s) if s.eq_ignore_ascii_case("all") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| bad("remote", format!("{s:?} is not an IPv4 address or all"))),
    }
}

fn ms(p: &Params, name: &'static str) -> Result<Option<u64>, BadParam> {
    get(p, name)
        .map(|s| s.parse::<u64>().map_err(|_| bad(name, format!("{s:?} is not a time in Unix milliseconds"))))
        .transpose()
}

/// `from` and `to` (default: `default_span` ms ending `now_ms`), `from < to`, at most `max_span` apart.
pub fn range(p: &Params, now_ms: u64, default_span: u64, max_span: u64) -> Result<(u64, u64), BadParam> {
    let to = ms(p, "to")?.unwrap_or(now_ms);
    let from = ms(p, "from")?.unwrap_or(to.saturating_sub(default_span));
    if from >= to {
        return Err(bad("from", format!("must be before `to` ({from} >= {to})")));
    }
    if to - from > max_span {
        return Err(bad("to", format!("the range is at most {max_span} ms (from {from} to {to} is {})", to - from)));
    }
    Ok((from, to))
}

/// A series query, ready to run: `points` steps of `step_ms` from `from_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesQuery {
    pub select: Select,
    pub from_ms: u64,
    pub to_ms: u64,
    pub step_ms: u64,
    pub points: usize,
    pub csv: bool,
}

pub fn series(p: &Params, now_ms: u64) -> Result<SeriesQuery, BadParam> {
    let select = Select { device: device(p, true)?, remote: remote(p)? };
    let (from, to) = range(p, now_ms, 3_600_000, LONG_MS)?;
    // Steps start on a bucket boundary.
    let from = from / BUCKET_MS * BUCKET_MS;
    let span = to - from;
    let step = match get(p, "step") {
        Some(s) => {
            let step: u64 = s.parse().map_err(|_| bad("step", format!("{s:?} is not a number of milliseconds")))?;
            if step == 0 || !step.is_multiple_of(BUCKET_MS) {
                return Err(bad("step", format!("must be a positive multiple of {BUCKET_MS} ms, not {step}")));
            }
            step
        }
        None => span.div_ceil(DEFAULT_POINTS).div_ceil(BUCKET_MS).max(1) * BUCKET_MS,
    };
    let points = span.div_ceil(step);
    if points > MAX_POINTS as u64 {
        let least = span.div_ceil(MAX_POINTS as u64).div_ceil(BUCKET_MS) * BUCKET_MS;
        return Err(bad(
            "step",
            format!("{points} points is too many (at most {MAX_POINTS}: a step of {least} ms or more)"),
        ));
    }
    let csv = match get(p, "format") {
        None => false,
        Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(bad("format", format!("{other:?} is not json or csv"))),
    };
    Ok(SeriesQuery { select, from_ms: from, to_ms: to, step_ms: step, points: points as usize, csv })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsQuery {
    pub select: Select,
    pub from_ms: u64,
    pub to_ms: u64,
}

pub fn stats(p: &Params, now_ms: u64) -> Result<StatsQuery, BadParam> {
    let select = Select { device: device(p, true)?, remote: remote(p)? };
    let (from_ms, to_ms) = range(p, now_ms, 3_600_000, MAX_STATS_MS)?;
    Ok(StatsQuery { select, from_ms, to_ms })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopQuery {
    pub device: Option<Device>,
    pub from_ms: u64,
    pub to_ms: u64,
    pub limit: usize,
    /// With `device=all`: the remotes of all devices together instead of the devices (`remotes=1`).
    pub remotes: bool,
}

pub fn top(p: &Params, now_ms: u64) -> Result<TopQuery, BadParam> {
    let device = device(p, true)?;
    let (from_ms, to_ms) = range(p, now_ms, 3_600_000, MAX_STATS_MS)?;
    let limit = match get(p, "limit") {
        None => TOP_DEFAULT,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=TOP_MAX).contains(&n) => n,
            _ => return Err(bad("limit", format!("must be 1 to {TOP_MAX}, not {s:?}"))),
        },
    };
    let remotes = match get(p, "remotes") {
        None | Some("0") => false,
        Some("1") => true,
        Some(other) => return Err(bad("remotes", format!("must be 0 or 1, not {other:?}"))),
    };
    Ok(TopQuery { device, from_ms, to_ms, limit, remotes })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageQuery {
    pub device: Option<Device>,
    pub from_ms: u64,
    pub to_ms: u64,
    pub step_ms: u64,
}

/// `step=hour|day`, over up to 90 days (default: the last 30 days).
pub fn usage(p: &Params, now_ms: u64) -> Result<UsageQuery, BadParam> {
    let device = device(p, true)?;
    let (from_ms, to_ms) = range(p, now_ms, 30 * 86_400_000, LONG_MS + 86_400_000)?;
    let step_ms = match get(p, "step") {
        None | Some("day") => 86_400_000,
        Some("hour") => 3_600_000,
        Some(other) => return Err(bad("step", format!("{other:?} is not hour or day"))),
    };
    Ok(UsageQuery { device, from_ms, to_ms, step_ms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(kv: &[(&str, &str)]) -> Params {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }
    const NOW: u64 = 1_800_000_000_050;

    #[test]
    fn defaults_and_steps() {
        let q = series(&params(&[]), NOW).unwrap();
        assert_eq!(q.select, Select { device: None, remote: None });
        assert_eq!(q.to_ms, NOW);
        assert_eq!(q.from_ms % 100, 0);
        assert!(q.points <= 2000 && q.points > 1000, "{q:?}");
        assert_eq!(q.step_ms % 100, 0);
        let q = series(
            &params(&[
                ("device", "AA:bb:cc:dd:ee:01"),
                ("remote", "203.0.113.1"),
                ("from", "0"),
                ("to", "1000"),
                ("step", "100"),
                ("format", "csv"),
            ]),
            NOW,
        )
        .unwrap();
        assert_eq!((q.points, q.step_ms, q.csv), (10, 100, true));
        assert_eq!(q.select.device.unwrap().to_string(), "aa:bb:cc:dd:ee:01");
    }

    #[test]
    fn bad_parameters_are_named() {
        for (kv, param) in [
            (vec![("device", "nope")], "device"),
            (vec![("remote", "x")], "remote"),
            (vec![("from", "-1")], "from"),
            (vec![("from", "5"), ("to", "5")], "from"),
            (vec![("step", "150")], "step"),
            (vec![("step", "0")], "step"),
            (vec![("from", "0"), ("to", "86400000"), ("step", "100")], "step"),
            (vec![("format", "xml")], "format"),
            (vec![("from", "0"), ("to", "99999999999")], "to"),
        ] {
            let e = series(&params(&kv), NOW).unwrap_err();
            assert_eq!(e.param, param, "{kv:?}: {e}");
            assert!(e.to_string().contains(param));
        }
        assert_eq!(top(&params(&[("limit", "0")]), NOW).unwrap_err().param, "limit");
        assert_eq!(stats(&params(&[("from", "0")]), NOW).unwrap_err().param, "to");
        assert_eq!(usage(&params(&[("step", "week")]), NOW).unwrap_err().param, "step");
    }

    proptest! {
        #[test]
        fn any_parameters_give_an_answer_within_bounds_or_a_named_error(
            device in "(all|[0-9a-f:]{0,20}|10\\.0\\.0\\.[0-9]{1,3}|.{0,8})",
            from in proptest::option::of(any::<u64>().prop_map(|v| v.to_string())),
            to in proptest::option::of(any::<u64>().prop_map(|v| v.to_string())),
            step in proptest::option::of("[0-9]{0,12}|.{0,5}"),
        ) {
            let mut p = params(&[("device", &device)]);
            if let Some(f) = from { p.insert("from".into(), f); }
            if let Some(t) = to { p.insert("to".into(), t); }
            if let Some(s) = step { p.insert("step".into(), s); }
            match series(&p, NOW) {
                Ok(q) => {
                    prop_assert!(q.points <= MAX_POINTS);
                    prop_assert!(q.step_ms % 100 == 0 && q.step_ms > 0);
                    prop_assert!(q.to_ms - q.from_ms <= LONG_MS + 100);
                }
                Err(e) => prop_assert!(["device", "from", "to", "step"].contains(&e.param)),
            }
            if let Ok(q) = stats(&p, NOW) {
                prop_assert!(q.to_ms - q.from_ms <= MAX_STATS_MS);
            }
        }
    }
}
