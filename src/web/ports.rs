//! The ports of the WAN address and the admin's forwards: the HTTP face of `ports`. Changes are behind the
//! admin's session and CSRF token (`session::guard`); they are saved (fsynced) before the answer.

use super::Web;
use crate::ports::Protocols;
use crate::ports::core::{ForwardInput, Refusal};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;

pub fn routes() -> Router<Web> {
    Router::new()
        .route("/api/ports", get(ports))
        .route("/api/forwards", get(forwards).post(add))
        .route("/api/forwards/{id}", put(update).delete(remove))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn stopped() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "the ports subsystem is not running")
}

fn refused(r: Refusal) -> Response {
    let status = match r {
        Refusal::Invalid(_) => StatusCode::BAD_REQUEST,
        Refusal::Clash(_) => StatusCode::CONFLICT,
        Refusal::NotFound(_) => StatusCode::NOT_FOUND,
    };
    error(status, r.to_string())
}

async fn ports(State(web): State<Web>) -> Response {
    match web.handles.ports.view().await {
        Some(v) => Json(v).into_response(),
        None => stopped(),
    }
}

async fn forwards(State(web): State<Web>) -> Response {
    match web.handles.ports.forwards().await {
        Some(v) => Json(v).into_response(),
        None => stopped(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    mac: String,
    protocol: Protocols,
    external_first: u16,
    external_last: Option<u16>,
    internal_port: Option<u16>,
    #[serde(default)]
    description: String,
}

const FORM: &str = "expected JSON {\"mac\": \"aa:bb:cc:dd:ee:ff\", \"protocol\": \"tcp\"|\"udp\"|\"both\", \
                    \"external_first\": 1-65535, \"external_last\": (optional), \"internal_port\": (optional, \
                    default the external), \"description\": (optional)}";

fn input(body: Result<Json<Body>, JsonRejection>) -> Result<ForwardInput, Box<Response>> {
    let Json(b) = body.map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("{}; {FORM}", e.body_text()))))?;
    let mac = super::devices::mac_of(&b.mac)?;
    Ok(ForwardInput {
        mac,
        protocols: b.protocol,
        external_first: b.external_first,
        external_last: b.external_last.unwrap_or(b.external_first),
        internal_port: b.internal_port.unwrap_or(b.external_first),
        description: b.description,
    })
}

/// The id of an admin's forward; the config's (`config-N`) cannot be changed here.
fn id_of(raw: &str) -> Result<u32, Box<Response>> {
    if raw.starts_with("config-") {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "this forward is from the config file (or PORT_FORWARDING): change it there",
        )));
    }
    raw.parse().map_err(|_| Box::new(error(StatusCode::NOT_FOUND, "no such forward")))
}

async fn add(State(web): State<Web>, body: Result<Json<Body>, JsonRejection>) -> Response {
    let f = match input(body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    match web.handles.ports.add(f).await {
        Some(Ok(v)) => (StatusCode::CREATED, Json(v)).into_response(),
        Some(Err(r)) => refused(r),
        None => stopped(),
    }
}

async fn update(State(web): State<Web>, Path(id): Path<String>, body: Result<Json<Body>, JsonRejection>) -> Response {
    let (id, f) = match (id_of(&id), input(body)) {
        (Ok(id), Ok(f)) => (id, f),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    match web.handles.ports.update(id, f).await {
        Some(Ok(v)) => Json(v).into_response(),
        Some(Err(r)) => refused(r),
        None => stopped(),
    }
}

async fn remove(State(web): State<Web>, Path(id): Path<String>) -> Response {
    let id = match id_of(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match web.handles.ports.remove(id).await {
        Some(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Some(Err(r)) => refused(r),
        None => stopped(),
    }
}
