//! The front end (`web/`, TypeScript), built by npm and embedded at compile time (`build.rs`). Page paths all
//! get `index.html` (the front end routes on the path, so every page can be bookmarked and reloaded).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

fn find(path: &str) -> Option<&'static [u8]> {
    ASSETS.iter().find(|(p, _)| *p == path).map(|(_, b)| *b)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("map") => "application/json",
        _ => "application/octet-stream",
    }
}

/// Shown when the binary was built before the front end was.
const NOT_BUILT: &str = "<!doctype html><html><head><meta charset=utf-8><title>Gatekeeper</title></head><body>\
<h1>Gatekeeper</h1><p>This binary was built without the web UI's assets. Build them and then the program:</p>\
<pre>scripts/web.sh        # npm ci &amp;&amp; npm run build in web/\ncargo build --release</pre>\
<p>(<code>./lab.sh</code> and <code>./test.sh</code> do both.) The JSON API under <code>/api/</code> works \
without them.</p></body></html>";

/// Every page: the front end's `index.html`, or how to build it.
pub async fn page() -> Response {
    match find("/index.html") {
        Some(b) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], b)
            .into_response(),
        None => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], NOT_BUILT).into_response(),
    }
}

/// `/assets/FILE`.
pub async fn asset(Path(file): Path<String>) -> Response {
    let path = format!("/assets/{file}");
    match find(&path) {
        Some(b) => {
            ([(header::CONTENT_TYPE, content_type(&path)), (header::CACHE_CONTROL, "no-cache")], b).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

pub fn built() -> bool {
    find("/index.html").is_some()
}
