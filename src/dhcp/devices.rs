//! What the admin told us about devices in the UI: a name for a device, and a fixed address for it (a lease made
//! static). Kept in `STATE_DIR/devices.json`, written atomically and fsynced before the UI is told it is done.
//! Static leases from the config file and /etc/ethers stay there: they are read-only here.

use crate::types::Mac;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub const FILE: &str = "devices.json";
/// Longest name the admin may give (characters).
pub const MAX_NAME: usize = 64;
/// Devices the file may hold (a bound on what the UI can make us store).
pub const MAX_DEVICES: usize = 4096;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// The name shown for the device (any text; its DNS name is derived, see [`Notes::label`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A fixed address the admin gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notes {
    pub devices: BTreeMap<Mac, Note>,
}

/// An admin's change, as the UI asks it.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Name a device (`None` clears the name).
    Rename { mac: Mac, name: Option<String> },
    /// Give it a fixed address: `ip`, or (none) the one it has now; `name` renames it too when given.
    Pin { mac: Mac, ip: Option<Ipv4Addr>, name: Option<Option<String>> },
    /// End its lease and forget what the admin said about it.
    Forget { mac: Mac },
}

/// The outcome of an [`Edit`]: done, or why not (a sentence for the admin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditReply(pub Result<(), String>);

impl Default for EditReply {
    fn default() -> Self {
        EditReply(Err("the DHCP server is not running".into()))
    }
}

/// Checks a name typed by the admin: trimmed, at most [`MAX_NAME`] characters, no control characters; empty
/// clears it. Markup is fine here: it is text everywhere it is shown.
pub fn clean_name(raw: &str) -> Result<Option<String>, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Ok(None);
    }
    if name.chars().count() > MAX_NAME {
        return Err(format!("a name is at most {MAX_NAME} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("a name cannot contain control characters".into());
    }
    Ok(Some(name.to_owned()))
}

impl Notes {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE)
    }

    /// The saved notes; none when there is no file yet. A damaged file is an error that names it (the admin's
    /// static addresses are not silently dropped).
    pub fn load(state_dir: &Path) -> anyhow::Result<Notes> {
        let path = Self::path(state_dir);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                anyhow::anyhow!(
                    "{} is damaged ({e}); fix or remove it (it holds the names and addresses given in the UI)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Notes::default()),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        let data = serde_json::to_vec_pretty(self)?;
        crate::state::write_atomic(&Self::path(state_dir), &data)
    }

    pub fn name(&self, mac: &Mac) -> Option<&str> {
        self.devices.get(mac)?.name.as_deref()
    }

    /// The DNS label of the admin's name for `mac` (`Anna's Phone` -> `annas-phone`), if it makes one.
    pub fn label(&self, mac: &Mac) -> Option<String> {
        super::hostname::sanitize(self.name(mac)?.as_bytes())
    }

    pub fn statics(&self) -> impl Iterator<Item = (Mac, Ipv4Addr)> + '_ {
        self.devices.iter().filter_map(|(m, n)| Some((*m, n.ip?)))
    }

    /// Drops empty entries (a device whose name was cleared and that has no address).
    pub fn tidy(&mut self) {
        self.devices.retain(|_, n| n.name.is_some() || n.ip.is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_labels_derived() {
        assert_eq!(clean_name("  "), Ok(None));
        assert_eq!(clean_name(" Anna's Phone "), Ok(Some("Anna's Phone".into())));
        assert!(clean_name(&"x".repeat(65)).is_err());
        assert!(clean_name("a\u{7}b").is_err());
        let mac = Mac([2, 0, 0, 0, 0, 1]);
        let mut n = Notes::default();
        n.devices.insert(mac, Note { name: Some("Anna's Phone".into()), ip: None });
        assert_eq!(n.label(&mac).as_deref(), Some("annas-phone"));
        n.devices.insert(mac, Note { name: Some("<img src=x>".into()), ip: None });
        assert_eq!(n.label(&mac).as_deref(), Some("img-srcx"));
    }

    #[test]
    fn saves_and_loads_and_a_damaged_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("gk-notes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(Notes::load(&dir).unwrap(), Notes::default());
        let mut n = Notes::default();
        n.devices.insert(Mac([2, 0, 0, 0, 0, 1]), Note { name: Some("tv".into()), ip: Some([10, 0, 0, 9].into()) });
        n.save(&dir).unwrap();
        assert_eq!(Notes::load(&dir).unwrap(), n);
        assert_eq!(n.statics().collect::<Vec<_>>(), vec![(Mac([2, 0, 0, 0, 0, 1]), [10, 0, 0, 9].into())]);
        std::fs::write(Notes::path(&dir), b"{not json").unwrap();
        assert!(Notes::load(&dir).unwrap_err().to_string().contains("damaged"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
