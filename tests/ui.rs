//! The web UI in a real browser: headless Debian Chromium, driven by Playwright (`web/test/driver.mjs`), inside a
//! LAN namespace of a lab, against the real gateway. Logging in, the device list, live and 24 h graphs, renaming
//! and static leases across a restart, hostile names shown as text, CSRF, the UI closed to the WAN; the pages'
//! screenshots (light and dark); and the time per frame with 50 devices streaming.
//!
//! `GK_SCREENSHOTS=DIR` keeps the screenshots there (the README's are made with `GK_SCREENSHOTS=docs/screenshots`).

mod common;

use common::{config_file, start_ready, state_dir};
use gatekeeper::lab::{DhcpClient, Lab, Proc, WAN_ADDR, field, test_zone};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const UI: &str = "http://10.0.0.1:1337";
/// A DNS name a device asks for: markup, if anything ever treated it as such.
const HOSTILE_QUERY: &str = "<img/src/onerror=document.title=1>.test";
/// A name that resolves (to the lab's internet host): the device's remote then carries it.
const HOSTILE_REMOTE: &str = "<img/src/onerror=document.title=3>.test";
/// What the admin types as a device's name.
const HOSTILE_NAME: &str = "<img src=x onerror=document.title=2>";

/// The browser, in a namespace: one command, one answer.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    fn start(lab: &Lab, ns: &str) -> Browser {
        let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/test/driver.mjs");
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("web/node_modules/playwright-core").exists(),
            "web/node_modules is missing: run scripts/web.sh (test.sh does)"
        );
        let mut c = lab.cmd(ns, "node");
        c.arg(driver).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = c.spawn().expect("node");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Browser { child, stdin, stdout }
    }

    fn send(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("driver said {line:?}: {e}"));
        assert_eq!(v["ok"], true, "{cmd} failed: {}", v["error"]);
        v
    }

    fn goto(&mut self, url: &str) -> String {
        self.send(json!({"op": "goto", "url": url}))["url"].as_str().unwrap().to_owned()
    }

    fn eval(&mut self, js: &str) -> Value {
        self.send(json!({"op": "eval", "js": js}))["value"].clone()
    }

    /// Waits (up to `secs`) until `js` returns something truthy, and returns it.
    fn wait(&mut self, js: &str, secs: u64) -> Value {
        self.send(json!({"op": "wait", "js": js, "timeout_ms": secs * 1000}))["value"].clone()
    }

    fn fill(&mut self, selector: &str, text: &str) {
        self.send(json!({"op": "fill", "selector": selector, "text": text}));
    }

    fn click(&mut self, selector: &str) {
        self.send(json!({"op": "click", "selector": selector}));
    }

    /// Errors the page reported (uncaught exceptions, console errors) since the last call.
    fn problems(&mut self) -> Vec<String> {
        serde_json::from_value(self.send(json!({"op": "problems"}))["value"].clone()).unwrap()
    }

    /// Loads `path` and waits until the page says its first data is in.
    fn open(&mut self, path: &str) {
        self.goto(&format!("{UI}{path}"));
        self.wait("() => document.body.dataset.ready === '1'", 15);
    }

    fn screenshots(&mut self, dir: &Path, name: &str) {
        for dark in [false, true] {
            self.send(json!({"op": "theme", "dark": dark}));
            std::thread::sleep(Duration::from_millis(400)); // charts repaint in the theme's colours
            let file = dir.join(format!("{name}-{}.png", if dark { "dark" } else { "light" }));
            self.send(json!({"op": "screenshot", "path": file.to_str().unwrap(), "full": true}));
        }
        self.send(json!({"op": "theme", "dark": false}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "close"}));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lease(lab: &Lab, i: usize, name: &str) -> gatekeeper::lab::ClientRun {
    let mut c = lab.dhcp_client(i, DhcpClient::Udhcpc, Some(name)).unwrap();
    field(&c.wait_event(0, &["bound"], Duration::from_secs(30)).unwrap(), "ip").unwrap();
    c
}

fn screenshot_dir(lab: &Lab) -> PathBuf {
    let dir = match std::env::var_os("GK_SCREENSHOTS") {
        Some(d) => Path::new(env!("CARGO_MANIFEST_DIR")).join(d),
        None => lab.dir().join("screenshots"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start_gateway(lab: &Lab, log: &str, extra: &str) -> Proc {
    let cfg = config_file(lab, "gatekeeper.toml", &format!("[dns]\nupstreams = [\"{WAN_ADDR}:53\"]\n{extra}"));
    let state = state_dir(lab, "state");
    start_ready(lab, &["--state-dir", state.to_str().unwrap(), "--config", cfg.to_str().unwrap()], log)
}

/// Datagrams from a device to the lab's internet host, every 50 ms until `stop`.
fn sender(lab: &Lab, i: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    common::spawn_in(&lab.client(i), move || {
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        while !stop.load(Ordering::Relaxed) {
            let _ = u.send_to(&[0u8; 1000], (WAN_ADDR, 5683));
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// `curl` from `ns`: the HTTP status code (000 when nothing answered).
fn status_of(lab: &Lab, ns: &str, args: &[&str]) -> String {
    let mut all = vec!["curl", "-s", "-m3", "-o", "/dev/null", "-w", "%{http_code}"];
    all.extend_from_slice(args);
    let mut c = lab.cmd(ns, all[0]);
    c.args(&all[1..]);
    String::from_utf8_lossy(&c.output().unwrap().stdout).trim().to_owned()
}

/// No element was made from hostile text, no script of it ran, and the text is there as text.
fn assert_text_not_markup(b: &mut Browser, scope: &str, text: &str) {
    let js = format!(
        "() => {{ const el = document.querySelector({scope:?}); return el && el.textContent.includes({text:?}) }}"
    );
    b.wait(&js, 15);
    let imgs = b.eval(&format!("() => document.querySelectorAll('{scope} img').length"));
    assert_eq!(imgs, 0, "an <img> was made from text in {scope}");
    let title = b.eval("() => document.title");
    assert!(!["1", "2", "3"].contains(&title.as_str().unwrap()), "a script ran: title {title}");
}

#[test]
fn the_web_ui_in_a_browser_logs_in_shows_devices_live_and_history_keeps_changes_and_shows_names_as_text() {
    let lab = common::lab(3);
    // Zone-file syntax: every character but letters, digits and the dots between labels as \DDD.
    let owner: String = HOSTILE_REMOTE
        .trim_end_matches(".test")
        .bytes()
        .map(|c| if c.is_ascii_alphanumeric() || c == b'.' { (c as char).to_string() } else { format!("\\{c:03}") })
        .collect();
    let zone = format!("{}\n{owner} IN A {WAN_ADDR}\n", test_zone());
    let _knot = lab.start_knot(WAN_ADDR, &zone).unwrap();
    let mut gw = start_gateway(&lab, "gw.log", "");
    let _c1 = lease(&lab, 1, "laptop");
    let _c2 = lease(&lab, 2, "annas-phone");
    let _c3 = lease(&lab, 3, "sensor");
    let (mac2, mac3) = (lab.client_mac(2).unwrap(), lab.client_mac(3).unwrap());
    let shots = screenshot_dir(&lab);
    let mut b = Browser::start(&lab, &lab.client(1));

    // Without a session every page goes to the login page, and the API answers 401.
    let url = b.goto(&format!("{UI}/devices/{mac2}"));
    assert!(url.starts_with(&format!("{UI}/login?next=")), "{url}");
    assert_eq!(status_of(&lab, &lab.client(2), &[&format!("{UI}/api/devices")]), "401");
    b.wait("() => document.querySelector('#password')", 10);
    b.screenshots(&shots, "login");
    b.fill("#password", "wrong");
    b.click("#login");
    b.wait("() => document.querySelector('#login-error')?.textContent.length > 0", 10);
    let password = std::fs::read_to_string(state_dir(&lab, "state").join("admin-password")).unwrap();
    b.fill("#password", password.trim());
    b.click("#login");
    b.wait(&format!("() => location.pathname === '/devices/{mac2}'"), 10);

    // The device list: the lab's devices with their host names and vendors (the lab's MACs carry real OUIs).
    b.open("/");
    for (name, vendor) in [("laptop", "Raspberry Pi"), ("annas-phone", "Apple"), ("sensor", "Sonos")] {
        let js = format!(
            "() => [...document.querySelectorAll('table#devices tbody tr')].some(r => \
             r.querySelector('.name')?.textContent.includes({name:?}) && \
             r.querySelector('.vendor')?.textContent.includes({vendor:?}))"
        );
        b.wait(&js, 15);
    }

    // The live graph's data changes within 1 s of traffic starting.
    b.open(&format!("/devices/{mac2}"));
    b.wait("() => document.querySelector('#live-chart')?.dataset.sum !== undefined", 10);
    let before: u64 =
        b.eval("() => document.querySelector('#live-chart').dataset.sum").as_str().unwrap().parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let send = sender(&lab, 2, stop.clone());
    b.wait(&format!("() => Number(document.querySelector('#live-chart').dataset.sum) > {before}"), 5);
    let took = started.elapsed();
    println!("live graph: data changed {took:?} after the traffic started");
    assert!(took < Duration::from_secs(1), "the live graph took {took:?}");

    // The 24 h view, and a step back through the day.
    b.click("#range-day");
    b.wait(
        "() => { const d = document.querySelector('#history-chart').dataset; return d.to - d.from > 23 * 3600e3 }",
        10,
    );
    let from0: f64 = b.eval("() => Number(document.querySelector('#history-chart').dataset.from)").as_f64().unwrap();
    b.click("#history-earlier");
    let js = format!("() => Number(document.querySelector('#history-chart').dataset.from) < {from0} - 23 * 3600e3");
    b.wait(&js, 10);
    b.click("#range-hour");

    // Hostile names: a query name in the device's DNS log and the DNS page, a remote's name from a DNS answer.
    for name in [HOSTILE_QUERY, HOSTILE_REMOTE] {
        lab.run(&lab.client(2), &["dig", "+short", "+tries=1", "@10.0.0.1", name, "A"]).unwrap();
    }
    common::spawn_in(&lab.client(2), || {
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.send_to(b"hello", (WAN_ADDR, 5683)).unwrap();
    })
    .join()
    .unwrap();
    b.open(&format!("/devices/{mac2}"));
    assert_text_not_markup(&mut b, "#device-dns", HOSTILE_QUERY);
    assert_text_not_markup(&mut b, "#remotes", HOSTILE_REMOTE);
    b.open("/dns?q=onerror");
    assert_text_not_markup(&mut b, "#dns-log", HOSTILE_QUERY);

    // The device page's capture: its ring's status, a download the browser can fetch (a pcapng file), the live
    // packet view (the sender's datagrams, and a DNS lookup with a hostile name shown as text), pause and resume.
    b.open(&format!("/devices/{mac2}"));
    b.wait("() => /packets/.test(document.querySelector('#capture-status')?.textContent ?? '')", 10);
    b.wait("() => document.querySelector('#capture-live-state')?.textContent === 'live'", 10);
    b.wait(
        "() => [...document.querySelectorAll('#capture-live tr[data-proto=\"UDP\"]')].some(r => \
         r.dataset.dir === 'out' && r.textContent.includes(':5683'))",
        10,
    );
    lab.run(&lab.client(2), &["dig", "+short", "+tries=1", "@10.0.0.1", HOSTILE_QUERY, "A"]).unwrap();
    assert_text_not_markup(&mut b, "#capture-live", &format!("DNS A {HOSTILE_QUERY}"));
    let magic = b.eval(
        "() => fetch(document.querySelector('#capture-download').href).then(r => r.arrayBuffer()).then(a => \
         [...new Uint8Array(a.slice(0, 4))].map(x => x.toString(16)).join(' ') + ' ' + a.byteLength)",
    );
    let magic = magic.as_str().unwrap().to_owned();
    assert!(magic.starts_with("a d d a "), "not a pcapng file: {magic}");
    println!("capture download from the page: {magic}");
    b.click("#capture-toggle");
    b.wait("() => /paused/i.test(document.querySelector('#capture-status')?.textContent ?? '')", 10);
    b.click("#capture-toggle");
    b.wait("() => !/paused/i.test(document.querySelector('#capture-status')?.textContent ?? '')", 10);

    // The admin renames a device (markup as its name) and makes another's lease static.
    b.open(&format!("/devices/{mac2}"));
    b.fill("#rename-input", HOSTILE_NAME);
    b.click("#rename-save");
    assert_text_not_markup(&mut b, "main", HOSTILE_NAME);
    b.open(&format!("/devices/{mac3}"));
    b.click("#make-static");
    b.wait(
        &format!(
            "() => fetch('/api/leases').then(r => r.json()).then(j => \
             j.leases.some(l => l.mac === {mac3:?} && l.kind === 'static' && l.origin === 'ui'))"
        ),
        10,
    );

    // Ports: a forward made from the page (markup as its description), and the sender's full-cone mapping made a
    // stable forward with one click.
    b.open("/ports");
    b.wait(&format!("() => document.querySelector('#fwd-device option[value=\"{mac2}\"]') !== null"), 15);
    b.eval(&format!(
        "() => {{ const s = document.querySelector('#fwd-device'); s.value = {mac2:?}; \
         s.dispatchEvent(new Event('change', {{ bubbles: true }})); return s.value; }}"
    ));
    b.fill("#fwd-external", "8080-8081");
    b.fill("#fwd-internal", "80");
    b.fill("#fwd-description", HOSTILE_NAME);
    b.click("#fwd-submit");
    b.wait(
        &format!(
            "() => fetch('/api/forwards').then(r => r.json()).then(j => j.forwards.some(f => \
             f.mac === {mac2:?} && f.external_first === 8080 && f.external_last === 8081 && f.internal_port === 80))"
        ),
        10,
    );
    b.wait("() => document.querySelectorAll('#forwards-card tr[data-forward]').length > 0", 10);
    assert_text_not_markup(&mut b, "#forwards-card", HOSTILE_NAME);
    // The sender's mapping (its UDP to the remote's 5683), found by its device.
    let port = b.wait(
        &format!(
            "() => fetch('/api/ports').then(r => r.json()).then(j => j.rows.find(r => r.kind === 'mapping' && \
             r.protocol === 'udp' && r.mapping.mac === {mac2:?} && r.connections.some(c => c.remote.endsWith(':5683')))\
             ?.port)"
        ),
        15,
    );
    let button = format!("tr[data-kind=mapping][data-protocol=udp][data-port='{port}'] .make-forward");
    b.wait(&format!("() => document.querySelector({button:?}) !== null"), 10);
    b.click(&button);
    let said = b.wait(
        &format!(
            "() => fetch('/api/forwards').then(r => r.json()).then(j => j.forwards.some(f => f.protocol === 'udp' && \
             f.external_first === {port}) ? 'made' : document.querySelector({button:?})?.parentElement\
             .querySelector('.form-error')?.textContent)"
        ),
        10,
    );
    assert_eq!(said, "made", "make stable forward");
    b.wait(
        &format!(
            "() => fetch('/api/forwards').then(r => r.json()).then(j => j.forwards.some(f => \
             f.mac === {mac2:?} && f.protocol === 'udp'))"
        ),
        10,
    );

    // Screenshots of every page, with traffic on.
    for (path, name) in [
        ("/".to_owned(), "devices"),
        (format!("/devices/{mac2}"), "device"),
        ("/network".to_owned(), "network"),
        ("/leases".to_owned(), "leases"),
        ("/dns".to_owned(), "dns"),
        ("/ports".to_owned(), "ports"),
    ] {
        b.open(&path);
        std::thread::sleep(Duration::from_millis(1500)); // live graphs fill
        b.screenshots(&shots, name);
    }

    // Both changes survive a restart of the gateway; so does the browser's session.
    assert!(gw.terminate(Duration::from_secs(10)).unwrap().success(), "{}", gw.log());
    let _gw = start_gateway(&lab, "gw-again.log", "");
    b.open("/");
    b.wait(
        &format!(
            "() => [...document.querySelectorAll('table#devices tbody tr')].some(r => \
             r.querySelector('.name')?.textContent.includes({HOSTILE_NAME:?}))"
        ),
        15,
    );
    assert_text_not_markup(&mut b, "table#devices", HOSTILE_NAME);
    b.open("/leases");
    b.wait(
        &format!(
            "() => [...document.querySelectorAll('table#leases tbody tr')].some(r => \
             r.dataset.mac === {mac3:?} && r.textContent.includes('static'))"
        ),
        15,
    );
    let problems = b.problems();
    assert!(problems.iter().all(|p| !p.contains("page error")), "{problems:?}");

    // A change without a session, or without (or with a wrong) CSRF token, is refused.
    let cookie = format!("Cookie: gk_session={}", common::login(&lab.client(2), &state_dir(&lab, "state")));
    let put = format!("{UI}/api/devices/{mac3}");
    let body = r#"{"name":"x"}"#;
    let json_type = "Content-Type: application/json";
    assert_eq!(status_of(&lab, &lab.client(2), &["-X", "PUT", "-H", json_type, "-d", body, &put]), "401");
    assert_eq!(
        status_of(&lab, &lab.client(2), &["-X", "PUT", "-H", json_type, "-H", &cookie, "-d", body, &put]),
        "403"
    );
    let wrong = "X-CSRF-Token: 0000";
    assert_eq!(
        status_of(&lab, &lab.client(2), &["-X", "PUT", "-H", json_type, "-H", &cookie, "-H", wrong, "-d", body, &put]),
        "403"
    );
    let del = format!("{UI}/api/leases/{mac3}");
    assert_eq!(status_of(&lab, &lab.client(2), &["-X", "DELETE", &del]), "401");
    let leases = common::api_get(&lab, &lab.client(2), "/api/leases");
    assert!(leases.contains(&format!("\"mac\":\"{mac3}\"")) && !leases.contains("\"name\":\"x\""), "{leases}");

    // From the internet side the UI does not answer.
    assert_eq!(status_of(&lab, &lab.wan(), &["http://203.0.113.2:1337/"]), "000");
    assert_eq!(status_of(&lab, &lab.wan(), &["http://203.0.113.2:1337/api/session"]), "000");

    stop.store(true, Ordering::Relaxed);
    send.join().unwrap();
}

#[test]
fn the_device_list_stays_smooth_with_50_devices_streaming() {
    const N: usize = 50;
    let lab = common::lab(N);
    let _knot = lab.start_knot(WAN_ADDR, &test_zone()).unwrap();
    // Reading open to the LAN here (`public_read`); changes still need the admin.
    let _gw = start_gateway(&lab, "gw.log", "[web]\npublic_read = true\n");
    let roles = ["laptop", "phone", "tablet", "tv", "console", "printer", "speaker", "camera"];
    let mut clients: Vec<_> =
        (1..=N).map(|i| lab.dhcp_client(i, DhcpClient::Udhcpc, Some(&format!("dev{i}"))).unwrap()).collect();
    for c in &mut clients {
        c.wait_event(0, &["bound"], Duration::from_secs(60)).unwrap();
    }
    let devices: Vec<(String, usize)> = (2..=N).map(|i| (roles[i % roles.len()].to_owned(), i)).collect();
    let generator = gatekeeper::lab::traffic::start(&lab, "10.0.0.1".parse().unwrap(), &devices).unwrap();
    // Every device busy as well: a datagram every 50 ms each, so every tick carries all of them.
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (2..=N).map(|i| sender(&lab, i, stop.clone())).collect();

    assert_eq!(status_of(&lab, &lab.client(1), &[&format!("{UI}/api/devices")]), "200");
    let put = ["-X", "PUT", "-H", "Content-Type: application/json", "-d", "{\"name\":\"x\"}"];
    let url = format!("{UI}/api/devices/{}", lab.client_mac(1).unwrap());
    assert_eq!(status_of(&lab, &lab.client(1), &[&put[..], &[url.as_str()]].concat()), "401");

    let mut b = Browser::start(&lab, &lab.client(1));
    b.goto(&format!("{UI}/login"));
    let password = std::fs::read_to_string(state_dir(&lab, "state").join("admin-password")).unwrap();
    b.wait("() => document.querySelector('#password')", 10);
    b.fill("#password", password.trim());
    b.click("#login");
    b.wait("() => location.pathname === '/'", 10);
    b.open("/");
    b.wait(&format!("() => document.querySelectorAll('table#devices tbody tr').length >= {N}"), 20);
    std::thread::sleep(Duration::from_secs(2));
    // 10 s of frames: the gaps between animation frames, and the main thread's long tasks (over 50 ms).
    let m = b.wait(
        "() => new Promise(done => { const gaps = []; let last = performance.now(); let long = 0; \
         new PerformanceObserver(l => { long += l.getEntries().length }).observe({ entryTypes: ['longtask'] }); \
         const end = last + 10000; \
         const f = t => { gaps.push(t - last); last = t; if (t < end) requestAnimationFrame(f); else { \
           gaps.sort((a, b) => a - b); const q = p => gaps[Math.min(gaps.length - 1, Math.floor(p * gaps.length))]; \
           const busy = [...document.querySelectorAll('table#devices tbody tr')].filter(r => \
             Number(r.querySelector('.spark canvas, canvas.spark, .spark')?.dataset?.points ?? 1) > 0).length; \
           done({ frames: gaps.length, p50: q(0.5), p99: q(0.99), max: gaps[gaps.length - 1], long, rows: busy }) } }; \
         requestAnimationFrame(f) })",
        30,
    );
    println!("50 devices, live: {m}");
    let rates = b.eval(
        "() => [...document.querySelectorAll('table#devices tbody tr')].filter(r => /[1-9]/.test(r.querySelector('.rate')?.textContent ?? '')).length",
    );
    println!("rows with a live rate: {rates}");
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    generator.stop();
    assert!(m["frames"].as_u64().unwrap() > 100, "frames were drawn: {m}");
    assert!(rates.as_u64().unwrap() >= (N as u64 - 1) * 9 / 10, "the live rates of the busy devices: {rates}");
}
