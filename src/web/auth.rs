//! The admin's credentials and sessions, sans IO: the password as an argon2id hash, sessions as random tokens
//! with a CSRF token each and an idle and an absolute expiry, and a login limiter (5 failures from one address
//! block it for 15 minutes, as AdGuard Home does). The shell keeps the hash and the sessions in the state
//! directory (so sessions survive a restart) and passes the time in.

use crate::state::bytes::ByteReader;
use crate::types::Time;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngExt;
use std::collections::HashMap;
use std::net::IpAddr;

/// A session ends after this long without use ...
pub const IDLE_MS: u64 = 7 * 24 * 3600 * 1000;
/// ... and after this long in any case.
pub const MAX_AGE_MS: u64 = 30 * 24 * 3600 * 1000;
/// Failed logins from one address before it is blocked, and for how long.
pub const MAX_FAILURES: u32 = 5;
pub const BLOCK_MS: u64 = 15 * 60 * 1000;
/// Sessions held at most (the oldest go first): a bound on what a flood of logins can make us store.
pub const MAX_SESSIONS: usize = 64;
/// Passwords longer than this are refused before hashing (argon2 of a megabyte is a cheap denial of service).
pub const MAX_PASSWORD: usize = 256;

/// argon2id with OWASP's second recommended setting (19 MiB, 2 passes, 1 lane): ~50 ms here per login.
fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(19 * 1024, 2, 1, None).expect("valid params"))
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A new password for the admin: 4 groups of 5 letters and digits (about 103 bits), easy to type from a terminal.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..4)
        .map(|_| (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is empty")]
    Empty,
    #[error("the password is longer than {MAX_PASSWORD} bytes")]
    TooLong,
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// The PHC string (`$argon2id$v=19$m=...`) of `password`, with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.len() > MAX_PASSWORD {
        return Err(PasswordError::TooLong);
    }
    let mut salt = [0u8; 16];
    rand::rng().fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(hasher().hash_password(password.as_bytes(), &salt).map_err(|e| PasswordError::Hash(e.to_string()))?.to_string())
}

/// Whether `password` matches the PHC string `hash` (a malformed hash matches nothing).
pub fn verify_password(hash: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD {
        return false;
    }
    PasswordHash::new(hash).is_ok_and(|h| hasher().verify_password(password.as_bytes(), &h).is_ok())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The cookie's value.
    pub token: String,
    /// What every change must carry (`X-CSRF-Token`).
    pub csrf: String,
    pub created: Time,
    pub last_used: Time,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("wrong password")]
    Wrong,
    #[error("too many failed logins from this address; try again in {0} s")]
    Blocked(u64),
}

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    blocked_until: Time,
}

/// The admin's hash, the live sessions and the login limiter.
pub struct Auth {
    hash: String,
    sessions: HashMap<String, Session>,
    failures: HashMap<IpAddr, Failures>,
}

impl Auth {
    pub fn new(hash: String) -> Auth {
        Auth { hash, sessions: HashMap::new(), failures: HashMap::new() }
    }

    /// A new password (the hash only is kept): every session ends.
    pub fn set_hash(&mut self, hash: String) {
        self.hash = hash;
        self.sessions.clear();
    }

    /// Checks the password of a login from `from`: a session, or why not. A blocked address is refused without
    /// looking at the password (no hashing work for a flood).
    pub fn login(&mut self, from: IpAddr, password: &str, now: Time) -> Result<Session, LoginError> {
        let f = self.failures.entry(from).or_default();
        if now < f.blocked_until {
            return Err(LoginError::Blocked(f.blocked_until.ms_since(now).div_ceil(1000)));
        }
        if !verify_password(&self.hash, password) {
            f.count += 1;
            if f.count >= MAX_FAILURES {
                f.count = 0;
                f.blocked_until = now.plus_ms(BLOCK_MS);
                return Err(LoginError::Blocked(BLOCK_MS / 1000));
            }
            return Err(LoginError::Wrong);
        }
        self.failures.remove(&from);
        self.expire(now);
        if self.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = self.sessions.values().min_by_key(|s| s.last_used).map(|s| s.token.clone())
        {
            self.sessions.remove(&oldest);
        }
        let s = Session { token: random_token(), csrf: random_token(), created: now, last_used: now };
        self.sessions.insert(s.token.clone(), s.clone());
        Ok(s)
    }

    /// The session of a cookie, if it is live (and marks it used).
    pub fn session(&mut self, token: &str, now: Time) -> Option<&Session> {
        let live = self.sessions.get(token).is_some_and(|s| Self::live(s, now));
        if !live {
            self.sessions.remove(token);
            return None;
        }
        let s = self.sessions.get_mut(token)?;
        s.last_used = now;
        Some(s)
    }

    /// Whether a change may go ahead: a live session and its CSRF token, compared in constant time.
    pub fn may_change(&mut self, token: &str, csrf: &str, now: Time) -> bool {
        self.session(token, now).is_some_and(|s| constant_time_eq(s.csrf.as_bytes(), csrf.as_bytes()))
    }

    pub fn logout(&mut self, token: &str) {
        self.sessions.remove(token);
    }

    fn live(s: &Session, now: Time) -> bool {
        now.ms_since(s.last_used) < IDLE_MS && now.ms_since(s.created) < MAX_AGE_MS
    }

    /// Forgets ended sessions and lapsed blocks.
    pub fn expire(&mut self, now: Time) {
        self.sessions.retain(|_, s| Self::live(s, now));
        self.failures.retain(|_, f| f.count > 0 || now < f.blocked_until);
    }

    /// The sessions as bytes for the state directory (one per line: token, csrf, created, last used).
    pub fn save_sessions(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for s in self.sessions.values() {
            for part in [s.token.as_bytes(), s.csrf.as_bytes()] {
                out.extend_from_slice(&(part.len() as u16).to_le_bytes());
                out.extend_from_slice(part);
            }
            out.extend_from_slice(&s.created.unix_ms().to_le_bytes());
            out.extend_from_slice(&s.last_used.unix_ms().to_le_bytes());
        }
        out
    }

    /// Loads saved sessions (the live ones); a damaged file gives what it held before the damage.
    pub fn load_sessions(&mut self, data: &[u8], now: Time) -> usize {
        let mut r = ByteReader::new(data);
        let text = |r: &mut ByteReader<'_>| -> Option<String> {
            let n = r.u16()? as usize;
            String::from_utf8(r.take(n)?.to_vec()).ok()
        };
        while !r.rest().is_empty() && self.sessions.len() < MAX_SESSIONS {
            let (Some(token), Some(csrf)) = (text(&mut r), text(&mut r)) else { break };
            let (Some(created), Some(last)) = (r.u64(), r.u64()) else { break };
            let s = Session { token, csrf, created: Time::from_unix_ms(created), last_used: Time::from_unix_ms(last) };
            if s.token.len() == 64 && Self::live(&s, now) {
                self.sessions.insert(s.token.clone(), s);
            }
        }
        self.sessions.len()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Time = Time::from_unix_ms(1_800_000_000_000);

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn passwords_hash_as_argon2id_and_verify() {
        let p = generate_password();
        assert_eq!(p.len(), 23);
        let h = hash_password(&p).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password(&h, &p));
        assert!(!verify_password(&h, "wrong"));
        assert!(!verify_password("not a hash", &p));
        assert_ne!(hash_password(&p).unwrap(), h, "a fresh salt each time");
        assert_eq!(hash_password(""), Err(PasswordError::Empty));
        assert_eq!(hash_password(&"x".repeat(MAX_PASSWORD + 1)), Err(PasswordError::TooLong));
    }

    #[test]
    fn sessions_csrf_expiry_and_the_login_limiter() {
        let mut a = Auth::new(hash_password("secret").unwrap());
        let s = a.login(ip(5), "secret", T).unwrap();
        assert_eq!((s.token.len(), s.csrf.len()), (64, 64));
        assert!(a.session(&s.token, T.plus_ms(1000)).is_some());
        assert!(a.may_change(&s.token, &s.csrf, T.plus_ms(1000)));
        assert!(!a.may_change(&s.token, "", T), "no CSRF token, no change");
        assert!(!a.may_change(&s.token, &s.token, T), "the cookie is not the CSRF token");
        assert!(!a.may_change("nope", &s.csrf, T));
        // Idle for a week: gone.
        assert!(a.session(&s.token, T.plus_ms(1000 + IDLE_MS)).is_none());
        // Four failures are just wrong; the fifth blocks the address for 15 min, even with the right password.
        for _ in 0..4 {
            assert_eq!(a.login(ip(6), "guess", T), Err(LoginError::Wrong));
        }
        assert_eq!(a.login(ip(6), "guess", T), Err(LoginError::Blocked(900)));
        assert!(matches!(a.login(ip(6), "secret", T.plus_ms(60_000)), Err(LoginError::Blocked(840))));
        assert!(a.login(ip(7), "secret", T).is_ok(), "other addresses are not blocked");
        assert!(a.login(ip(6), "secret", T.plus_ms(BLOCK_MS)).is_ok());
        // A new password ends every session.
        let s2 = a.login(ip(5), "secret", T).unwrap();
        a.set_hash(hash_password("other").unwrap());
        assert!(a.session(&s2.token, T).is_none());
    }

    #[test]
    fn sessions_survive_a_restart_and_junk_is_harmless() {
        let mut a = Auth::new(hash_password("pw").unwrap());
        let s = a.login(ip(5), "pw", T).unwrap();
        let saved = a.save_sessions();
        let mut b = Auth::new(hash_password("pw").unwrap());
        assert_eq!(b.load_sessions(&saved, T.plus_ms(5000)), 1);
        assert!(b.may_change(&s.token, &s.csrf, T.plus_ms(5000)));
        for cut in 0..saved.len() {
            let mut c = Auth::new(String::new());
            assert_eq!(c.load_sessions(&saved[..cut], T), 0, "cut at {cut}");
        }
        let mut d = Auth::new(String::new());
        assert_eq!(d.load_sessions(&[0xff; 100], T), 0);
        // Expired ones are not loaded.
        let mut e = Auth::new(String::new());
        assert_eq!(e.load_sessions(&saved, T.plus_ms(MAX_AGE_MS)), 0);
    }
}
