//! The daemon (`serve`): binds the API first, then owns all mutable state in one event loop fed by
//! crossbeam channels (signals, worker results, timers). Workers do the I/O on named threads and
//! report back; only this loop replaces the snapshot the API reads.

use crate::api::{self, ApiOptions, Backend};
use crate::config::{Config, Loaded};
use crate::discovery::{self, Discovery};
use crate::docker::{Engine, EngineError};
use crate::state::{ContainerView, EngineSummary, SharedState, Snapshot};
use crossbeam_channel::{bounded, select, tick, Receiver, Sender};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often the engine is polled for changed containers or images. Cheap: two list calls over the
/// local socket; the full inspect pass runs only when the lists changed.
const DISCOVERY_POLL: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub enum DaemonError {
    Api(api::ApiError),
    Engine(EngineError),
    Signals(std::io::Error),
    Thread(std::io::Error),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Api(e) => write!(f, "start the API: {e}"),
            DaemonError::Engine(e) => write!(f, "engine: {e}"),
            DaemonError::Signals(e) => write!(f, "install signal handlers: {e}"),
            DaemonError::Thread(e) => write!(f, "spawn a thread: {e}"),
        }
    }
}

impl std::error::Error for DaemonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DaemonError::Api(e) => Some(e),
            DaemonError::Engine(e) => Some(e),
            DaemonError::Signals(e) | DaemonError::Thread(e) => Some(e),
        }
    }
}

/// What the API threads may ask of the daemon's world without waiting for it.
struct DaemonBackend {
    state: Arc<SharedState>,
    /// A separate client with a short timeout, so a hung engine cannot hold an API thread long.
    probe: Engine,
    shutting_down: Arc<AtomicBool>,
}

impl Backend for DaemonBackend {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.state.snapshot()
    }

    fn engine_ready(&self) -> Result<(), String> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err("shutting down".into());
        }
        self.probe.ping().map_err(|e| e.to_string())
    }

    fn version(&self) -> serde_json::Value {
        let snap = self.state.snapshot();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "engine": snap.engine,
        })
    }
}

/// Messages to the event loop.
enum Event {
    Discovered(Result<(Discovery, Option<EngineSummary>), EngineError>),
}

fn spawn<F: FnOnce() + Send + 'static>(name: &str, f: F) -> Result<JoinHandle<()>, DaemonError> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(DaemonError::Thread)
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(loaded: Loaded) -> Result<(), DaemonError> {
    let cfg: Config = loaded.config;
    let state = Arc::new(SharedState::default());
    let shutting_down = Arc::new(AtomicBool::new(false));

    // The API binds before anything slow (SPEC.md §2): no engine call happens before this.
    let backend = Arc::new(DaemonBackend {
        state: Arc::clone(&state),
        probe: Engine::new(
            &cfg.docker.host,
            cfg.docker.api_version,
            Duration::from_secs(2),
        )
        .map_err(DaemonError::Engine)?,
        shutting_down: Arc::clone(&shutting_down),
    });
    let addrs = api::bind_addrs(&cfg.server.addr).map_err(DaemonError::Api)?;
    let opts = ApiOptions {
        read_timeout: cfg.server.read_timeout,
        max_connections: cfg.server.max_connections,
        max_body: api::DEFAULT_MAX_BODY,
        token: cfg.server.token.clone(),
        read_token: cfg.server.read_token.clone(),
        allow_unauthenticated: cfg.server.allow_unauthenticated,
        ui: cfg.server.ui,
    };
    let _server = api::serve(&addrs, opts, backend).map_err(DaemonError::Api)?;

    let engine = Engine::new(
        &cfg.docker.host,
        cfg.docker.api_version,
        Duration::from_secs(30),
    )
    .map_err(DaemonError::Engine)?;

    // Signals arrive on their own thread and are forwarded to the loop.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(DaemonError::Signals)?;
    let signal_handle = signals.handle();
    let (sig_tx, sig_rx) = bounded::<i32>(8);
    let signal_thread = spawn("signals", move || {
        for s in signals.forever() {
            if sig_tx.send(s).is_err() {
                break;
            }
        }
    })?;

    let (event_tx, event_rx) = bounded::<Event>(16);
    let (discover_tx, discover_rx) = bounded::<()>(1);
    let discovery_thread = {
        let engine = engine.clone();
        let include_stopped = cfg.docker.include_stopped;
        spawn("discovery", move || {
            discovery_worker(engine, include_stopped, discover_rx, event_tx)
        })?
    };

    let result = event_loop(&state, &discover_tx, &event_rx, &sig_rx);

    // Shutdown: readiness goes 503 first, then workers are told to stop and are joined.
    shutting_down.store(true, Ordering::Relaxed);
    drop(discover_tx);
    let _ = discovery_thread.join();
    signal_handle.close();
    let _ = signal_thread.join();
    log::info!(component = "daemon"; "stopped");
    result
}

fn event_loop(
    state: &SharedState,
    discover_tx: &Sender<()>,
    events: &Receiver<Event>,
    signals: &Receiver<i32>,
) -> Result<(), DaemonError> {
    let poll = tick(DISCOVERY_POLL);
    // The first discovery right away, after the API is up.
    let _ = discover_tx.try_send(());
    loop {
        select! {
            recv(signals) -> s => match s {
                Ok(signal_hook::consts::SIGHUP) => log::warn!(
                    component = "daemon";
                    "SIGHUP: configuration reload is not supported; restart watch-docker to apply changes"
                ),
                Ok(s) => {
                    log::info!(component = "daemon"; "signal {s} received, shutting down");
                    return Ok(());
                }
                Err(_) => return Ok(()),
            },
            recv(poll) -> _ => {
                // A full worker queue means a discovery is already pending: nothing to add.
                let _ = discover_tx.try_send(());
            }
            recv(events) -> ev => match ev {
                Ok(Event::Discovered(result)) => apply_discovery(state, result),
                Err(_) => return Ok(()),
            },
        }
    }
}

fn apply_discovery(
    state: &SharedState,
    result: Result<(Discovery, Option<EngineSummary>), EngineError>,
) {
    let prev = state.snapshot();
    let next = match result {
        Ok((d, engine)) => Snapshot {
            containers: d.containers.iter().map(ContainerView::unchecked).collect(),
            images: d.images,
            engine: engine.or_else(|| prev.engine.clone()),
            discovered_at: Some(jiff::Timestamp::now().to_string()),
            discovery_error: None,
        },
        Err(e) => {
            if prev.discovery_error.as_deref() != Some(&e.to_string()) {
                log::warn!(component = "discovery"; "{e}");
            }
            Snapshot {
                discovery_error: Some(e.to_string()),
                ..(*prev).clone()
            }
        }
    };
    state.replace(next);
}

/// Runs a discovery per request; skips the inspect pass when the container and image lists did
/// not change since the last successful pass.
fn discovery_worker(
    engine: Engine,
    include_stopped: bool,
    requests: Receiver<()>,
    events: Sender<Event>,
) {
    let mut last_fingerprint: Option<String> = None;
    let mut self_id: Option<Option<String>> = None;
    let mut summary: Option<EngineSummary> = None;
    for () in requests.iter() {
        let result = (|| {
            let containers = engine.list_containers(include_stopped)?;
            let images = engine.list_images()?;
            let fingerprint = format!("{containers:?}{images:?}");
            if last_fingerprint.as_deref() == Some(&fingerprint) {
                return Ok(None);
            }
            if summary.is_none() {
                let v = engine.version()?;
                summary = Some(EngineSummary {
                    version: v.version.clone(),
                    api_version: engine
                        .api_version()
                        .map(|(a, b)| format!("{a}.{b}"))
                        .unwrap_or_default(),
                    os: v.os.clone(),
                    arch: v.arch.clone(),
                });
            }
            let me = self_id.get_or_insert_with(|| {
                let ids: Vec<&str> = containers.iter().map(|c| c.id.as_str()).collect();
                discovery::detect_self(&ids)
            });
            let d = discovery::discover(&engine, include_stopped, me.as_deref())?;
            last_fingerprint = Some(fingerprint);
            Ok(Some((d, summary.clone())))
        })();
        let event = match result {
            Ok(None) => continue,
            Ok(Some(found)) => Event::Discovered(Ok(found)),
            Err(e) => {
                // Force a full pass once the engine answers again.
                last_fingerprint = None;
                Event::Discovered(Err(e))
            }
        };
        if events.send(event).is_err() {
            break;
        }
    }
}
