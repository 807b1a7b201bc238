//! Logging: to stderr, at the level `RUST_LOG` sets (default
//! `info,openraft=warn`). openraft warns about every failed heartbeat, so a
//! follower that is down or refuses the log (it lost its data) would fill
//! the leader's log with one line per heartbeat; those lines are kept once
//! per follower a minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The log filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,openraft=warn";

/// How often openraft's warning about failed heartbeats to one follower is
/// let through.
const HEARTBEAT_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Sets up logging for the process: human-readable lines, or one JSON
/// object per line when `json` is set (`--log-format json`).
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if json {
        let fmt = fmt.json().with_filter(QuietHeartbeats::default());
        tracing_subscriber::registry().with(filter).with(fmt).init();
    } else {
        let fmt = fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(QuietHeartbeats::default());
        tracing_subscriber::registry().with(filter).with(fmt).init();
    }
}

/// Lets openraft's "failed to send a heartbeat" warning about a follower
/// through once every [`HEARTBEAT_WARNING_EVERY`]; everything else passes.
#[derive(Default)]
struct QuietHeartbeats {
    last: Mutex<HashMap<String, Instant>>,
}

impl QuietHeartbeats {
    fn due(&self, key: String) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.get(&key) {
            Some(at) if at.elapsed() < HEARTBEAT_WARNING_EVERY => false,
            _ => {
                last.insert(key, Instant::now());
                true
            }
        }
    }
}

/// The `message` field of an event.
#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S> Filter<S> for QuietHeartbeats {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::WARN || !meta.target().starts_with("openraft::core::heartbeat") {
            return true;
        }
        let mut message = Message::default();
        event.record(&mut message);
        // "HeartbeatWorker(id=0, target=1) failed to send a heartbeat: ...":
        // one key per worker, i.e. per follower.
        match message.0.split_once(" failed to send a heartbeat") {
            Some((worker, _)) => self.due(worker.to_string()),
            None => true,
        }
    }
}
