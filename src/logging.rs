//! Logging with `tracing`: colours and timestamps on a terminal, plain lines under systemd (journald adds the time).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("GATEKEEPER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let result = if under_systemd {
        builder.with_ansi(false).without_time().try_init()
    } else {
        builder.with_ansi(terminal).try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
