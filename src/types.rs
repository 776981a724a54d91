//! Leaf types that every subsystem shares: a device's MAC, a device's identity, and the program's one time type.
//! Nothing here depends on any other module of the program.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An Ethernet address. Text form `aa:bb:cc:dd:ee:ff`; parsed also with `-` separators and one-digit groups
/// (`/etc/ethers` allows `0:1:2:3:4:5`), any case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const fn new(b: [u8; 6]) -> Mac {
        Mac(b)
    }

    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// The text form, or `None` for anything that is not six hex groups of one or two digits.
    pub fn parse(s: &str) -> Option<Mac> {
        let sep = if s.contains(':') { ':' } else { '-' };
        let mut mac = [0u8; 6];
        let mut n = 0;
        for part in s.split(sep) {
            if n == 6 || part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            mac[n] = u8::from_str_radix(part, 16).ok()?;
            n += 1;
        }
        (n == 6).then_some(Mac(mac))
    }
}

impl From<[u8; 6]> for Mac {
    fn from(b: [u8; 6]) -> Mac {
        Mac(b)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address; expected six hex pairs like aa:bb:cc:dd:ee:ff")]
pub struct BadMac(pub String);

impl FromStr for Mac {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Mac, BadMac> {
        Mac::parse(s).ok_or_else(|| BadMac(s.to_owned()))
    }
}

/// In JSON (and TOML) a MAC is its text form.
impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Who a device is: its MAC when the hosts table (DHCP) knows one for its address, else the address itself. A
/// device keeps its identity (and its history) when its address changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    Mac(Mac),
    Ip(IpAddr),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Mac(m) => m.fmt(f),
            Device::Ip(ip) => ip.fmt(f),
        }
    }
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Device, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Device::Ip(ip));
        }
        Mac::parse(s).map(Device::Mac).ok_or_else(|| format!("{s:?} is not a device; expected a MAC or an IP address"))
    }
}

/// In JSON a device is its MAC (`aa:bb:..`) or its address, as text.
impl Serialize for Device {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Device, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The local domain: every device is `NAME.lan`. DHCP hands it out (option 15) and DNS answers for it.
pub const LOCAL_DOMAIN: &str = "lan";

/// The program's one time: milliseconds on the Unix epoch's scale. [`Time::now`] reads a clock that never goes
/// back (the monotonic clock, anchored once to the wall clock at the first reading), so timeouts are immune to the
/// wall clock being set, and times shown or stored (leases, query logs, traffic) are still Unix times. The cores
/// never read it: their shells pass it in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Time(u64);

fn anchor() -> &'static (Instant, u64) {
    static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();
    ANCHOR.get_or_init(|| {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        (Instant::now(), unix)
    })
}

impl Time {
    pub const ZERO: Time = Time(0);

    pub fn now() -> Time {
        let (at, unix) = *anchor();
        Time(unix + at.elapsed().as_millis() as u64)
    }

    /// The same clock in microseconds since the Unix epoch (packet capture's timestamps).
    pub fn now_us() -> u64 {
        let (at, unix) = *anchor();
        unix * 1000 + at.elapsed().as_micros() as u64
    }

    pub const fn from_unix_ms(ms: u64) -> Time {
        Time(ms)
    }

    pub const fn from_unix_secs(s: u64) -> Time {
        Time(s.saturating_mul(1000))
    }

    pub const fn unix_ms(self) -> u64 {
        self.0
    }

    pub const fn unix_secs(self) -> u64 {
        self.0 / 1000
    }

    /// Milliseconds from `earlier` to `self`, 0 if `earlier` is later.
    pub const fn ms_since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    pub const fn plus_ms(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms))
    }

    pub fn plus(self, d: Duration) -> Time {
        self.plus_ms(d.as_millis() as u64)
    }
}

impl Time {
    /// `2026-12-06 18:17:00.123 UTC`: for files people read (a capture's comment), not for parsing.
    pub fn utc(self) -> String {
        let (days, ms) = ((self.0 / 86_400_000) as i64, self.0 % 86_400_000);
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        let (h, min, sec) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
        format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02}:{sec:02}.{:03} UTC", ms % 1000)
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text() {
        assert_eq!(Time::from_unix_ms(0).utc(), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(Time::from_unix_ms(1_796_581_020_123).utc(), "2026-12-06 18:17:00.123 UTC");
        assert_eq!(Time::from_unix_ms(951_782_400_000).utc(), "2000-02-29 00:00:00.000 UTC");
    }

    #[test]
    fn mac_text_round_trips_and_rejects_junk() {
        let m: Mac = "AA-bb-cc-dd-ee-01".parse().unwrap();
        assert_eq!(m, Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01]));
        assert_eq!(m.to_string(), "aa:bb:cc:dd:ee:01");
        assert_eq!(Mac::parse("0:1:2:3:4:5"), Some(Mac([0, 1, 2, 3, 4, 5])));
        for bad in ["", "aa:bb", "aa:bb:cc:dd:ee:ff:00", "aaa:bb:cc:dd:ee:ff", "gg:bb:cc:dd:ee:ff", "aa::cc:dd:ee:ff"] {
            assert_eq!(Mac::parse(bad), None, "{bad}");
            assert!(bad.parse::<Mac>().unwrap_err().to_string().contains("expected"));
        }
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(j, r#""aa:bb:cc:dd:ee:01""#);
        assert_eq!(serde_json::from_str::<Mac>(&j).unwrap(), m);
        assert!(serde_json::from_str::<Mac>(r#""x""#).is_err());
    }

    #[test]
    fn device_is_a_mac_or_an_address_as_text() {
        let d: Device = "aa:bb:cc:dd:ee:01".parse().unwrap();
        assert_eq!(d, Device::Mac(Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 1])));
        let ip: Device = "10.0.0.5".parse().unwrap();
        assert_eq!(ip.to_string(), "10.0.0.5");
        assert_eq!(serde_json::to_string(&d).unwrap(), r#""aa:bb:cc:dd:ee:01""#);
        assert!("nope".parse::<Device>().is_err());
    }

    #[test]
    fn time_is_unix_ms_and_never_goes_back() {
        let a = Time::now();
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(a.unix_ms().abs_diff(wall) < 5_000, "{a:?} vs {wall}");
        let b = Time::now();
        assert!(b >= a);
        assert_eq!(Time::from_unix_secs(3).unix_ms(), 3000);
        assert_eq!(Time::from_unix_ms(3999).unix_secs(), 3);
        assert_eq!(Time::from_unix_ms(5).ms_since(Time::from_unix_ms(9)), 0);
    }
}
