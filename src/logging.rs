//! Logging with `tracing`: colours and timestamps on a terminal, plain lines under systemd (journald adds the time),
//! each with its syslog priority prefix (`<3>` error ... `<7>` debug) so that journald keeps the levels
//! (`journalctl -p warning` shows warnings and errors).

use std::io::IsTerminal;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// journald's priority for a level (sd-daemon(3): `<N>` at the start of a line).
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// The plain format, each line prefixed with its priority.
struct Journald<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journald<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        write!(w, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, w, event)
    }
}

fn journald_format() -> Journald<Format<tracing_subscriber::fmt::format::Full, ()>> {
    Journald(Format::default().with_ansi(false).without_time().with_target(false).with_level(true))
}

pub fn init() {
    let filter = EnvFilter::try_from_env("GATEKEEPER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let result = if under_systemd {
        builder.with_ansi(false).event_format(journald_format()).try_init()
    } else {
        builder.with_ansi(terminal).try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn under_systemd_every_line_carries_its_priority() {
        let buf = Buf::default();
        let b = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(Level::DEBUG)
            .with_writer(move || b.clone())
            .event_format(journald_format())
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::error!("bad");
            tracing::warn!(port = 5351, "odd");
            tracing::info!("fine");
            tracing::debug!("detail");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        for (line, p) in lines.iter().zip(["<3>", "<4>", "<6>", "<7>"]) {
            assert!(line.starts_with(p), "{line}");
        }
        assert!(lines[1].contains("odd") && lines[1].contains("port=5351"), "{text}");
    }
}
