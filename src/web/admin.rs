//! The admin's credentials in the state directory: `admin.hash` (the argon2id hash, owner-only) and, when the
//! program made the password itself, `admin-password` (owner-only, so that root can read it again, and
//! `gatekeeper lab` can show it). On the first start a password is generated and printed once.

use super::auth;
use anyhow::{Context, Result, bail};
use std::path::Path;

pub const HASH_FILE: &str = "admin.hash";
pub const PASSWORD_FILE: &str = "admin-password";

/// The admin's hash; on the first start (no hash yet), a new password's, with the password to show once.
pub fn load_or_create(state_dir: &Path) -> Result<(String, Option<String>)> {
    let path = state_dir.join(HASH_FILE);
    match std::fs::read_to_string(&path) {
        Ok(h) if argon2::password_hash::PasswordHash::new(h.trim()).is_ok() => return Ok((h.trim().to_owned(), None)),
        Ok(_) => bail!("{} is not a password hash; set a new password with `gatekeeper passwd`", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let password = auth::generate_password();
    let hash = set(state_dir, &password, true)?;
    Ok((hash, Some(password)))
}

/// Stores `password`'s hash (and the password itself when `keep_text`, else removes an old generated one).
pub fn set(state_dir: &Path, password: &str, keep_text: bool) -> Result<String> {
    std::fs::create_dir_all(state_dir).with_context(|| format!("cannot create {}", state_dir.display()))?;
    let hash = auth::hash_password(password)?;
    let text = state_dir.join(PASSWORD_FILE);
    if keep_text {
        crate::state::write_private(&text, format!("{password}\n").as_bytes())?;
    } else {
        let _ = std::fs::remove_file(&text);
    }
    crate::state::write_private(&state_dir.join(HASH_FILE), format!("{hash}\n").as_bytes())?;
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn first_start_generates_then_keeps_and_passwd_replaces() {
        let dir = std::env::temp_dir().join(format!("gk-admin-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (hash, shown) = load_or_create(&dir).unwrap();
        let password = shown.expect("a new password on the first start");
        assert!(auth::verify_password(&hash, &password));
        for f in [HASH_FILE, PASSWORD_FILE] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        assert_eq!(std::fs::read_to_string(dir.join(PASSWORD_FILE)).unwrap().trim(), password);
        let (again, none) = load_or_create(&dir).unwrap();
        assert_eq!((again.as_str(), none), (hash.as_str(), None), "shown once only");
        set(&dir, "chosen", false).unwrap();
        let (h, _) = load_or_create(&dir).unwrap();
        assert!(auth::verify_password(&h, "chosen"));
        assert!(!dir.join(PASSWORD_FILE).exists(), "a chosen password is not kept in clear");
        std::fs::write(dir.join(HASH_FILE), "junk").unwrap();
        assert!(load_or_create(&dir).unwrap_err().to_string().contains("gatekeeper passwd"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
