//! The shell around `auth`: the session cookie, the guard in front of every route, and login/logout.
//!
//! Reads (GET) need a live session unless `[web] public_read` is on; every change (any other method) needs a
//! session and its CSRF token in `X-CSRF-Token`, always. Without a session the API answers 401 and pages redirect
//! to `/login`. The cookie is HttpOnly and SameSite=Strict, so another site can neither read it nor send it
//! (which also keeps other sites' pages off the WebSocket). Sessions are saved in the state directory on every
//! login and logout and at shutdown, so they survive a restart.

use super::Web;
use super::auth::{Auth, LoginError, MAX_AGE_MS, MAX_PASSWORD};
use crate::types::Time;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Json, Router, routing::get, routing::post};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

pub const COOKIE: &str = "gk_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
const SESSIONS_FILE: &str = "web-sessions";

/// The admin's sessions, shared by the handlers (held only briefly: no lock across an await).
#[derive(Clone)]
pub struct Sessions {
    auth: Arc<Mutex<Auth>>,
    file: Option<PathBuf>,
    pub public_read: bool,
}

impl Sessions {
    /// `state_dir` keeps the sessions across restarts (none: in memory only, for tests).
    pub fn new(hash: String, state_dir: Option<&std::path::Path>, public_read: bool) -> Sessions {
        let mut auth = Auth::new(hash);
        let file = state_dir.map(|d| d.join(SESSIONS_FILE));
        if let Some(f) = &file
            && let Ok(data) = std::fs::read(f)
        {
            let n = auth.load_sessions(&data, Time::now());
            info!("restored {n} web session(s)");
        }
        Sessions { auth: Arc::new(Mutex::new(auth)), file, public_read }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Auth> {
        self.auth.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the live sessions to the state directory (owner-only).
    pub fn save(&self) {
        let Some(f) = &self.file else { return };
        let data = {
            let mut a = self.lock();
            a.expire(Time::now());
            a.save_sessions()
        };
        if let Err(e) = crate::state::write_private(f, &data) {
            warn!("cannot save the web sessions to {}: {e:#}", f.display());
        }
    }

    /// Whether the request carries a live session.
    pub(super) fn has_session(&self, headers: &HeaderMap) -> bool {
        token(headers).is_some_and(|t| self.lock().session(t, Time::now()).is_some())
    }

    fn csrf_of(&self, headers: &HeaderMap) -> Option<String> {
        let t = token(headers)?;
        self.lock().session(t, Time::now()).map(|s| s.csrf.clone())
    }
}

/// The session cookie's value, if the request has one.
fn token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Paths anyone may load: the login page and what it needs.
fn open(path: &str) -> bool {
    // `/metrics` checks its own access (a bearer token for scrapers, see `metrics`).
    path == "/metrics"
        || path == "/login"
        || path.starts_with("/assets/")
        || path == "/api/session"
        || path == "/api/login"
}

/// Reads that need the admin even when the UI is readable without logging in: a device's captured packets
/// (their contents, not just their counts) and its live packet view.
fn private(path: &str) -> bool {
    path.starts_with("/api/devices/") && (path.contains("/capture") || path.ends_with("/packets"))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// In front of every route: sessions for reads (unless public), sessions and CSRF tokens for changes.
pub(super) async fn guard(State(web): State<Web>, req: Request, next: Next) -> Response {
    let s = &web.sessions;
    let path = req.uri().path();
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    if read {
        if open(path) || (s.public_read && !private(path)) || s.has_session(req.headers()) {
            return next.run(req).await;
        }
        if path.starts_with("/api/") {
            return error(StatusCode::UNAUTHORIZED, "log in first (POST /api/login)");
        }
        let here = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let next_param: String = url_encode(here);
        return Redirect::to(&format!("/login?next={next_param}")).into_response();
    }
    if path == "/api/login" {
        return next.run(req).await;
    }
    let Some(t) = token(req.headers()) else { return error(StatusCode::UNAUTHORIZED, "log in first") };
    let csrf = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (live, ok) = {
        let mut a = s.lock();
        let live = a.session(t, Time::now()).is_some();
        (live, live && a.may_change(t, csrf, Time::now()))
    };
    if !live {
        return error(StatusCode::UNAUTHORIZED, "the session has ended; log in again");
    }
    if !ok {
        return error(StatusCode::FORBIDDEN, "missing or wrong X-CSRF-Token header");
    }
    next.run(req).await
}

/// Percent-encodes everything but unreserved characters and '/'.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/api/session", get(session))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
}

/// `GET /api/session`: whether this browser is logged in, its CSRF token, and whether reading is public.
async fn session(State(web): State<Web>, headers: HeaderMap) -> impl IntoResponse {
    let csrf = web.sessions.csrf_of(&headers);
    Json(serde_json::json!({
        "authenticated": csrf.is_some(),
        "csrf": csrf,
        "public_read": web.sessions.public_read,
    }))
}

#[derive(serde::Deserialize)]
struct Login {
    password: String,
}

/// `POST /api/login {"password"}`: a session cookie and the CSRF token; 401 wrong, 429 blocked (5 failures from an
/// address block it for 15 min).
async fn login(
    State(web): State<Web>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else { return error(StatusCode::BAD_REQUEST, "expected JSON {\"password\": \"...\"}") };
    if body.password.len() > MAX_PASSWORD {
        return error(StatusCode::BAD_REQUEST, "password too long");
    }
    let sessions = web.sessions.clone();
    // argon2 takes ~50 ms of CPU: off the event loop.
    let result = tokio::task::spawn_blocking(move || {
        let r = sessions.lock().login(from.ip(), &body.password, Time::now());
        if r.is_ok() {
            sessions.save();
        }
        r
    })
    .await;
    match result {
        Ok(Ok(s)) => {
            info!(from = %from.ip(), "admin logged in");
            let cookie =
                format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}", s.token, MAX_AGE_MS / 1000);
            ([(header::SET_COOKIE, cookie)], Json(serde_json::json!({ "csrf": s.csrf }))).into_response()
        }
        Ok(Err(LoginError::Wrong)) => {
            warn!(from = %from.ip(), "failed admin login");
            error(StatusCode::UNAUTHORIZED, "wrong password")
        }
        Ok(Err(e @ LoginError::Blocked(secs))) => {
            warn!(from = %from.ip(), "admin login blocked");
            let body = serde_json::json!({ "error": e.to_string(), "retry_after_s": secs });
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, secs.to_string())], Json(body)).into_response()
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "login failed"),
    }
}

/// `POST /api/logout` (with the CSRF token, as every change): ends the session and clears the cookie.
async fn logout(State(web): State<Web>, headers: HeaderMap) -> Response {
    if let Some(t) = token(&headers) {
        web.sessions.lock().logout(t);
        web.sessions.save();
    }
    let clear = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, clear)], Json(serde_json::json!({ "ok": true }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_redirects() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; gk_session=abc; b=2".parse().unwrap());
        assert_eq!(token(&h), Some("abc"));
        assert_eq!(token(&HeaderMap::new()), None);
        assert_eq!(url_encode("/devices/aa:bb?x=1&y=<"), "/devices/aa%3Abb%3Fx%3D1%26y%3D%3C");
        assert!(open("/login") && open("/assets/app.js") && !open("/api/devices") && !open("/"));
    }
}
