//! The daemon (`serve`): binds the API first, then owns all mutable state in one event loop fed by
//! crossbeam channels: signals, API commands, worker results and scheduler deadlines. Jobs (scans,
//! updates, container operations) run on named threads and report back; only this loop replaces
//! the snapshot the API reads, and the API never waits for a job unless asked to (`?wait=true`).

mod backend;
mod jobs_run;

use crate::api::{self, ApiOptions, ApiReply, ErrorCode};
use crate::config::{Config, Loaded};
use crate::discovery::{self, Discovery};
use crate::docker::{Engine, EngineError};
use crate::jobs::{ContainerResult, Counts, JobBook, JobKind, Trigger};
use crate::metrics::Metrics;
use crate::model::Status;
use crate::notify::{AvailableDeduper, Notification, Notifier, NotifierOptions};
use crate::scanner::{CheckResult, Scanner};
use crate::scheduler::{self, JobClock, Schedule, TickOutcome};
use crate::state::{ContainerView, EngineSummary, SharedState, Snapshot};
use crate::updater::{Outcome, UpdateRequest};
use backend::DaemonBackend;
use crossbeam_channel::{bounded, select, tick, Receiver, Sender};
use jobs_run::JobDone;
pub(crate) use jobs_run::{build_scanner, JobEnv, Work};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often the engine is polled for changed containers or images. Cheap: two list calls over the
/// local socket; the full inspect pass runs only when the lists changed.
const DISCOVERY_POLL: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub enum DaemonError {
    Api(api::ApiError),
    Engine(EngineError),
    Schedule(scheduler::ScheduleError),
    Signals(std::io::Error),
    Thread(std::io::Error),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Api(e) => write!(f, "start the API: {e}"),
            DaemonError::Engine(e) => write!(f, "engine: {e}"),
            DaemonError::Schedule(e) => write!(f, "schedule: {e}"),
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
            DaemonError::Schedule(e) => Some(e),
            DaemonError::Signals(e) | DaemonError::Thread(e) => Some(e),
        }
    }
}

/// What the API asks of the loop. Every command carries the channel its answer goes to.
pub(crate) enum Command {
    Scan {
        wait: bool,
        /// Bypass the digest cache (`?force=true`).
        fresh: bool,
        reply: Sender<ApiReply>,
    },
    /// `ids` empty: every eligible container (`POST /api/updates/run`).
    Update {
        ids: Vec<String>,
        image: Option<String>,
        rollback: bool,
        dry_run: bool,
        wait: bool,
        reply: Sender<ApiReply>,
    },
    Lifecycle {
        id: String,
        op: LifecycleOp,
        reply: Sender<ApiReply>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LifecycleOp {
    Stop,
    Start,
    Remove { force: bool },
}

enum WorkKind {
    Batch,
    Other,
}

/// Messages to the event loop from its helpers.
pub(crate) enum Event {
    Discovered(Result<(Discovery, Option<EngineSummary>), EngineError>),
    Done(JobDone),
}

fn spawn<F: FnOnce() + Send + 'static>(name: &str, f: F) -> Result<JoinHandle<()>, DaemonError> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(DaemonError::Thread)
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// A random u64 for `scan.jitter`, without a dependency: std's randomly seeded hasher.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// A job in flight: its thread, and who waits for its end (`?wait=true`).
struct Running {
    handle: JoinHandle<()>,
    waiters: Vec<Sender<ApiReply>>,
    kind: JobKind,
    /// Containers this job may touch (updates and lifecycle operations).
    containers: Vec<String>,
    /// A scheduled scan is followed by the update job (autoUpdateCron empty).
    then_update: bool,
    /// An update of every eligible container (scheduled or `POST /api/updates/run`).
    batch: bool,
}

/// Everything the loop owns.
struct Daemon {
    cfg: Config,
    state: Arc<SharedState>,
    env: Arc<JobEnv>,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    deduper: AvailableDeduper,
    book: JobBook,
    scan_clock: JobClock,
    update_clock: Option<JobClock>,
    discovery: Option<Discovery>,
    /// RFC 3339 time of the last successful discovery.
    discovered_at: Option<String>,
    engine: Option<EngineSummary>,
    discovery_error: Option<String>,
    checks: HashMap<String, CheckResult>,
    running: HashMap<String, Running>,
    done_tx: Sender<Event>,
    /// Set once crash recovery has run; updates wait for it.
    recovered: bool,
    /// Container name → the remote digest its last update failed to: scheduled runs skip that pair.
    failed_updates: HashMap<String, String>,
    shutting_down: bool,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(loaded: Loaded) -> Result<(), DaemonError> {
    let cfg: Config = loaded.config;
    let state = Arc::new(SharedState::default());
    let shutting_down = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")));
    let scanner: Arc<OnceLock<Arc<Scanner>>> = Arc::new(OnceLock::new());
    let (cmd_tx, cmd_rx) = bounded::<Command>(64);

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
        commands: cmd_tx,
        metrics: Arc::clone(&metrics),
        metrics_enabled: cfg.metrics.enabled,
        scanner: Arc::clone(&scanner),
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
    let server = api::serve(&addrs, opts, backend).map_err(DaemonError::Api)?;

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

    let (event_tx, event_rx) = bounded::<Event>(64);
    let (discover_tx, discover_rx) = bounded::<()>(1);
    let discovery_thread = {
        let engine = engine.clone();
        let include_stopped = cfg.docker.include_stopped;
        let events = event_tx.clone();
        spawn("discovery", move || {
            discovery_worker(engine, include_stopped, discover_rx, events)
        })?
    };

    let tz_env = std::env::var("TZ").ok();
    let scan_schedule = schedule_of(
        cfg.scan.cron.as_deref(),
        cfg.scan.interval,
        cfg.scan.timezone.as_deref(),
        tz_env.as_deref(),
    )?;
    let update_schedule = match (&cfg.update.auto_update_cron, cfg.update.enabled) {
        (Some(expr), true) => Some(schedule_of(
            Some(expr),
            cfg.scan.interval,
            cfg.update
                .timezone
                .as_deref()
                .or(cfg.scan.timezone.as_deref()),
            tz_env.as_deref(),
        )?),
        _ => None,
    };
    let now = jiff::Timestamp::now();
    let book = JobBook::new(
        scan_schedule.describe(),
        match (&update_schedule, cfg.update.enabled) {
            (Some(s), _) => Some(s.describe()),
            (None, true) => Some("after every scheduled scan".into()),
            (None, false) => None,
        },
    );
    let notifier = Notifier::start(&cfg.notify, hostname(), NotifierOptions::default())
        .map_err(|e| DaemonError::Thread(std::io::Error::other(e.to_string())))?;
    let env = Arc::new(JobEnv::new(
        &cfg,
        engine,
        scanner,
        Some(Arc::clone(&metrics)),
    ));
    let mut d = Daemon {
        state,
        env,
        metrics,
        notifier,
        deduper: AvailableDeduper::new(),
        book,
        scan_clock: JobClock::new(scan_schedule, now),
        update_clock: update_schedule.map(|s| JobClock::new(s, now)),
        discovery: None,
        discovered_at: None,
        engine: None,
        discovery_error: None,
        checks: HashMap::new(),
        running: HashMap::new(),
        done_tx: event_tx,
        recovered: false,
        failed_updates: HashMap::new(),
        shutting_down: false,
        cfg,
    };
    d.apply_jitter();
    d.publish();
    // Crash recovery first, then (if configured) the initial scan: both after the API is up.
    d.start_job(
        "scan",
        JobKind::Scan,
        Trigger::Startup,
        Work::Startup {
            scan: d.cfg.scan.initial_scan_on_start,
        },
        vec![],
        None,
    );
    if d.cfg.scan.initial_scan_on_start {
        d.scan_clock.try_start(jiff::Timestamp::now());
    }

    d.event_loop(&discover_tx, &event_rx, &sig_rx, &cmd_rx);

    // Shutdown: readiness is already 503; running jobs finish or roll back, then all is joined.
    shutting_down.store(true, Ordering::Relaxed);
    d.drain(&event_rx);
    drop(discover_tx);
    let _ = discovery_thread.join();
    signal_handle.close();
    let _ = signal_thread.join();
    d.notifier.shutdown();
    if let Err(e) = server.shutdown() {
        log::warn!(component = "api"; "{e}");
    }
    log::info!(component = "daemon"; "stopped");
    Ok(())
}

fn schedule_of(
    cron: Option<&str>,
    interval: Duration,
    tz: Option<&str>,
    tz_env: Option<&str>,
) -> Result<Schedule, DaemonError> {
    match cron {
        Some(expr) => {
            let (zone, warning) =
                scheduler::resolve_timezone(tz, tz_env).map_err(DaemonError::Schedule)?;
            if let Some(w) = warning {
                log::warn!(component = "scheduler"; "{w}");
            }
            Schedule::cron_in(expr, zone).map_err(DaemonError::Schedule)
        }
        None => Ok(Schedule::Interval(interval)),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "docker-host".into())
}

impl Daemon {
    fn event_loop(
        &mut self,
        discover_tx: &Sender<()>,
        events: &Receiver<Event>,
        signals: &Receiver<i32>,
        commands: &Receiver<Command>,
    ) {
        let poll = tick(DISCOVERY_POLL);
        let _ = discover_tx.try_send(());
        loop {
            let now = jiff::Timestamp::now();
            let wait = [
                self.scan_clock.until_next(now),
                self.update_clock.as_ref().and_then(|c| c.until_next(now)),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(3600))
            // Wall-clock jumps are caught within a minute.
            .min(Duration::from_secs(60));
            select! {
                recv(signals) -> s => match s {
                    Ok(signal_hook::consts::SIGHUP) => log::warn!(
                        component = "daemon";
                        "SIGHUP: configuration reload is not supported; restart watch-docker to apply changes"
                    ),
                    Ok(s) => {
                        log::info!(component = "daemon"; "signal {s} received: finishing running jobs, then exiting");
                        self.shutting_down = true;
                        self.env.cancel.store(true, Ordering::Relaxed);
                        return;
                    }
                    Err(_) => return,
                },
                recv(commands) -> c => if let Ok(c) = c { self.command(c) },
                recv(events) -> ev => match ev {
                    Ok(Event::Discovered(r)) => self.discovered(r),
                    Ok(Event::Done(done)) => self.job_done(done),
                    Err(_) => return,
                },
                recv(poll) -> _ => { let _ = discover_tx.try_send(()); }
                default(wait) => {}
            }
            self.fire_due_jobs();
        }
    }

    /// After a stop signal: wait for running jobs to end (updates past their stop step finish or
    /// roll back; the others abandon), answering their waiters.
    fn drain(&mut self, events: &Receiver<Event>) {
        self.publish();
        while !self.running.is_empty() {
            match events.recv() {
                Ok(Event::Done(done)) => self.job_done(done),
                Ok(Event::Discovered(_)) => {}
                Err(_) => break,
            }
        }
    }

    fn apply_jitter(&mut self) {
        let max = self.cfg.scan.jitter;
        if !max.is_zero() {
            self.scan_clock
                .delay_next(scheduler::jitter(max, random_u64()));
        }
    }

    fn fire_due_jobs(&mut self) {
        if self.shutting_down {
            return;
        }
        let now = jiff::Timestamp::now();
        match self.scan_clock.on_tick(now) {
            TickOutcome::Start => {
                self.apply_jitter();
                let then_update = self.cfg.update.enabled && self.update_clock.is_none();
                self.start_job(
                    "scan",
                    JobKind::Scan,
                    Trigger::Schedule,
                    Work::Scan { fresh: false },
                    vec![],
                    None,
                );
                if let Some(r) = self.running.get_mut("scan") {
                    r.then_update = then_update;
                }
            }
            TickOutcome::SkippedBecauseRunning => {
                self.metrics.skipped_tick("scan");
                self.book.scan.skipped_ticks = self.scan_clock.skipped();
            }
            TickOutcome::NotDue => {}
        }
        let update_tick = self.update_clock.as_mut().map(|c| c.on_tick(now));
        match update_tick {
            Some(TickOutcome::Start) => self.start_batch_update(Trigger::Schedule),
            Some(TickOutcome::SkippedBecauseRunning) => {
                self.metrics.skipped_tick("update");
                if let (Some(u), Some(c)) = (self.book.update.as_mut(), &self.update_clock) {
                    u.skipped_ticks = c.skipped();
                }
            }
            _ => {}
        }
        self.publish();
    }

    /// The scheduled update job: scan first when the results are older than `cacheTTL`.
    fn start_batch_update(&mut self, trigger: Trigger) {
        if self.running.values().any(|r| r.batch) {
            return;
        }
        self.start_job(
            "update",
            JobKind::Update,
            trigger,
            Work::Batch {
                dry_run: false,
                avoid: self
                    .failed_updates
                    .iter()
                    .map(|(n, d)| (n.clone(), d.clone()))
                    .collect(),
            },
            vec![],
            None,
        );
    }

    /// Starts a job on its own thread. `id` is `scan`, `update` or a new `run-N` (pass "").
    fn start_job(
        &mut self,
        id: &str,
        kind: JobKind,
        trigger: Trigger,
        work: Work,
        containers: Vec<String>,
        waiter: Option<Sender<ApiReply>>,
    ) -> String {
        let now = now_rfc3339();
        let id = if id.is_empty() {
            self.book.new_run(kind, trigger, &now)
        } else {
            if let Some(r) = self.book.get_mut(id) {
                r.trigger = trigger;
                r.start(&now);
            }
            id.to_string()
        };
        let work_kind = if matches!(work, Work::Batch { .. }) {
            WorkKind::Batch
        } else {
            WorkKind::Other
        };
        let env = Arc::clone(&self.env);
        let tx = self.done_tx.clone();
        let job_id = id.clone();
        let recovered = self.recovered;
        let spawned = thread::Builder::new()
            .name(format!("job-{id}"))
            .spawn(move || {
                // A panic in a job is a failed job, not a dead daemon.
                let started = Instant::now();
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    env.run(&work, recovered)
                }));
                let done = JobDone::from_result(job_id, result, started.elapsed());
                let _ = tx.send(Event::Done(done));
            });
        match spawned {
            Ok(handle) => {
                self.running.insert(
                    id.clone(),
                    Running {
                        handle,
                        waiters: waiter.into_iter().collect(),
                        kind,
                        batch: matches!(work_kind, WorkKind::Batch),
                        containers,
                        then_update: false,
                    },
                );
            }
            Err(e) => {
                let msg = format!("spawn the job thread: {e}");
                log::error!(component = "daemon"; "{msg}");
                if let Some(r) = self.book.get_mut(&id) {
                    r.finish(&now, 0, Counts::default(), Some(msg.clone()), None);
                }
                if let Some(w) = waiter {
                    let _ = w.send(ApiReply::error(ErrorCode::Internal, msg));
                }
            }
        }
        self.publish();
        id
    }

    fn job_done(&mut self, done: JobDone) {
        let Some(running) = self.running.remove(&done.id) else {
            return;
        };
        let _ = running.handle.join();
        let now = now_rfc3339();
        if done.recovered {
            self.recovered = true;
        }
        if let Some(found) = done.discovery.clone() {
            self.discovery = Some(found);
            self.discovered_at = Some(now.clone());
            self.discovery_error = None;
        }
        for c in &done.checks {
            self.checks.insert(c.container_id.clone(), c.clone());
        }
        let at = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
        match &done.scan {
            Some(summary) => self
                .metrics
                .scan_finished(done.error.is_none(), summary.duration, at),
            // A scan that could not run at all (engine down, no registry client).
            None if running.kind == JobKind::Scan && done.error.is_some() => {
                self.metrics.scan_finished(false, done.duration, at)
            }
            None => {}
        }
        self.notify_available(&done.checks);
        for r in &done.results {
            self.notify_result(r);
            self.remember_failure(r, &done.checks);
        }
        let counts = done.counts();
        if let Some(rec) = self.book.get_mut(&done.id) {
            rec.finish(
                &now,
                done.duration.as_millis() as u64,
                counts,
                done.record_error(),
                (running.kind == JobKind::Update).then(|| done.results.clone()),
            );
        }
        let ts = jiff::Timestamp::now();
        match done.id.as_str() {
            "scan" => self.scan_clock.on_finished(ts),
            "update" => {
                if let Some(c) = self.update_clock.as_mut() {
                    c.on_finished(ts)
                }
            }
            _ => {}
        }
        self.publish();
        let record = self.book.get(&done.id).cloned();
        for w in running.waiters {
            let _ = w.send(done.reply(record.as_ref()));
        }
        if running.then_update && !self.shutting_down {
            self.start_batch_update(Trigger::Schedule);
        }
    }

    fn notify_available(&mut self, checks: &[CheckResult]) {
        let Some(d) = &self.discovery else { return };
        for chk in checks {
            if chk.status != Status::UpdateAvailable {
                continue;
            }
            let Some(remote) = &chk.remote_digest else {
                continue;
            };
            if !self.deduper.should_notify(&chk.container_id, remote) {
                continue;
            }
            if let Some(c) = d.containers.iter().find(|c| c.id == chk.container_id) {
                log::info!(
                    component = "scanner", container = c.name.as_str(), image = c.image.as_str(),
                    digest = remote.as_str(), action = "available";
                    "update available"
                );
                self.notifier.send(Notification::Available {
                    container: c.name.clone(),
                    image: c.image.clone(),
                    current_digest: chk.current_digest.clone(),
                    remote_digest: remote.clone(),
                });
            }
        }
    }

    /// A failed update is not retried by scheduled runs while the registry offers the same image.
    fn remember_failure(&mut self, r: &ContainerResult, checks: &[CheckResult]) {
        match r.outcome.as_str() {
            "rolledBack" | "failed" => {
                let id = self
                    .discovery
                    .as_ref()
                    .and_then(|d| d.containers.iter().find(|c| c.name == r.container))
                    .map(|c| c.id.clone());
                let digest = checks
                    .iter()
                    .find(|c| Some(&c.container_id) == id.as_ref())
                    .and_then(|c| c.remote_digest.clone());
                if let Some(d) = digest {
                    self.failed_updates.insert(r.container.clone(), d);
                }
            }
            "updated" => {
                self.failed_updates.remove(&r.container);
            }
            _ => {}
        }
    }

    fn notify_result(&mut self, r: &ContainerResult) {
        let image = self
            .discovery
            .as_ref()
            .and_then(|d| d.containers.iter().find(|c| c.name == r.container))
            .map(|c| c.image.clone())
            .unwrap_or_default();
        use crate::metrics::UpdateOutcome as M;
        match r.outcome.as_str() {
            "updated" => {
                self.metrics.update_finished(M::Succeeded);
                self.notifier.send(Notification::Updated {
                    container: r.container.clone(),
                    image,
                    from_image_id: r.from_image.clone().unwrap_or_default(),
                    to_image_id: r.to_image.clone().unwrap_or_default(),
                    duration_ms: r.duration_ms,
                });
            }
            "rolledBack" | "failed" => {
                let rolled_back = r.outcome == "rolledBack";
                self.metrics.update_finished(if rolled_back {
                    M::RolledBack
                } else {
                    M::Failed
                });
                self.notifier.send(Notification::Failed {
                    container: r.container.clone(),
                    image,
                    error: r.error.clone().unwrap_or_default(),
                    rolled_back,
                });
            }
            _ => {}
        }
    }

    fn discovered(&mut self, result: Result<(Discovery, Option<EngineSummary>), EngineError>) {
        match result {
            Ok((d, engine)) => {
                self.discovery = Some(d);
                self.discovered_at = Some(now_rfc3339());
                if engine.is_some() {
                    self.engine = engine;
                }
                self.discovery_error = None;
                if !self.recovered && !self.running.contains_key("scan") && !self.shutting_down {
                    // The engine was down at start: recovery, and the initial scan, run now.
                    self.start_job(
                        "scan",
                        JobKind::Scan,
                        Trigger::Startup,
                        Work::Startup {
                            scan: self.cfg.scan.initial_scan_on_start,
                        },
                        vec![],
                        None,
                    );
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if self.discovery_error.as_deref() != Some(&msg) {
                    log::warn!(component = "discovery"; "{msg}");
                }
                self.discovery_error = Some(msg);
            }
        }
        self.publish();
    }

    /// Containers some running job may touch.
    fn busy_containers(&self) -> HashSet<&str> {
        self.running
            .values()
            .flat_map(|r| r.containers.iter().map(String::as_str))
            .collect()
    }

    fn command(&mut self, c: Command) {
        if self.shutting_down {
            let reply = ApiReply::error(ErrorCode::DockerError, "shutting down").with_status(503);
            match c {
                Command::Scan { reply: r, .. }
                | Command::Update { reply: r, .. }
                | Command::Lifecycle { reply: r, .. } => {
                    let _ = r.send(reply);
                }
            }
            return;
        }
        match c {
            Command::Scan { wait, fresh, reply } => {
                // A scan already running (scheduled or not) is the answer.
                if let Some((id, r)) = self
                    .running
                    .iter_mut()
                    .find(|(_, r)| r.kind == JobKind::Scan)
                {
                    if wait {
                        r.waiters.push(reply);
                    } else {
                        let _ = reply.send(ApiReply::accepted(serde_json::json!({"jobId": id})));
                    }
                    return;
                }
                let waiter = wait.then(|| reply.clone());
                let id = self.start_job(
                    "",
                    JobKind::Scan,
                    Trigger::Api,
                    Work::Scan { fresh },
                    vec![],
                    waiter,
                );
                if !wait {
                    let _ = reply.send(ApiReply::accepted(serde_json::json!({"jobId": id})));
                }
            }
            Command::Update {
                ids,
                image,
                rollback,
                dry_run,
                wait,
                reply,
            } => {
                if !self.recovered && !dry_run {
                    let _ = reply.send(
                        ApiReply::error(
                            ErrorCode::DockerError,
                            "not ready for updates yet: crash recovery has not run (is the engine reachable?)",
                        )
                        .with_status(503),
                    );
                    return;
                }
                let busy = self.busy_containers();
                if let Some(id) = ids.iter().find(|id| busy.contains(id.as_str())) {
                    let name = self.name_of(id);
                    let _ = reply.send(ApiReply::error(
                        ErrorCode::Conflict,
                        format!("{name} is already being updated"),
                    ));
                    return;
                }
                if ids.is_empty() {
                    if let Some((id, _)) = self.running.iter().find(|(_, r)| r.batch) {
                        let _ = reply.send(ApiReply::error(
                            ErrorCode::Conflict,
                            format!(
                                "an update of all eligible containers is already running ({id})"
                            ),
                        ));
                        return;
                    }
                }
                let work = if ids.is_empty() {
                    // Asked for explicitly: failed updates are tried again.
                    Work::Batch {
                        dry_run,
                        avoid: vec![],
                    }
                } else {
                    Work::Update(
                        ids.iter()
                            .map(|id| UpdateRequest {
                                container: id.clone(),
                                image: image.clone(),
                                rollback,
                                dry_run,
                            })
                            .collect(),
                    )
                };
                let waiter = wait.then(|| reply.clone());
                let id = self.start_job("", JobKind::Update, Trigger::Api, work, ids, waiter);
                if !wait {
                    let _ = reply.send(ApiReply::accepted(serde_json::json!({"jobId": id})));
                }
            }
            Command::Lifecycle { id, op, reply } => {
                if self.busy_containers().contains(id.as_str()) {
                    let name = self.name_of(&id);
                    let _ = reply.send(ApiReply::error(
                        ErrorCode::Conflict,
                        format!("{name} is being updated; try again when the update has finished"),
                    ));
                    return;
                }
                // Short engine calls, but a stop may take the container's stop timeout: a job.
                self.start_job(
                    "",
                    JobKind::Update,
                    Trigger::Api,
                    Work::Lifecycle { id: id.clone(), op },
                    vec![id],
                    Some(reply),
                );
            }
        }
    }

    fn name_of(&self, id: &str) -> String {
        self.discovery
            .as_ref()
            .and_then(|d| d.containers.iter().find(|c| c.id == id))
            .map(|c| c.name.clone())
            .unwrap_or_else(|| id.chars().take(12).collect())
    }

    /// Builds the snapshot from what the loop knows and hands it to the API.
    fn publish(&mut self) {
        let containers: Vec<ContainerView> = self
            .discovery
            .as_ref()
            .map(|d| {
                d.containers
                    .iter()
                    .map(|c| view(c, self.checks.get(&c.id), &self.cfg))
                    .collect()
            })
            .unwrap_or_default();
        self.metrics.set_container_statuses(
            containers
                .iter()
                .map(|v| (v.name.as_str(), v.image.as_str(), v.status)),
        );
        self.book.scan.next_run = self.scan_clock.next_fire().map(|t| t.to_string());
        self.book.scan.skipped_ticks = self.scan_clock.skipped();
        if let Some(u) = self.book.update.as_mut() {
            u.next_run = match &self.update_clock {
                Some(c) => c.next_fire().map(|t| t.to_string()),
                None => self.scan_clock.next_fire().map(|t| t.to_string()),
            };
        }
        self.state.replace(Snapshot {
            containers,
            images: self
                .discovery
                .as_ref()
                .map(|d| d.images.clone())
                .unwrap_or_default(),
            engine: self.engine.clone(),
            discovered_at: self.discovered_at.clone(),
            discovery_error: self.discovery_error.clone(),
            jobs: self.book.all(),
            ..Snapshot::default()
        });
        // Forget dedup entries of containers that are gone, so the map stays small.
        if let Some(d) = &self.discovery {
            self.deduper
                .retain_containers(d.containers.iter().map(|c| c.id.as_str()));
            self.checks
                .retain(|id, _| d.containers.iter().any(|c| &c.id == id));
        }
    }
}

/// One container's API view: discovery + update policy + the last check of this very container.
pub(crate) fn view(
    c: &crate::model::ContainerInfo,
    check: Option<&CheckResult>,
    cfg: &Config,
) -> ContainerView {
    let mut v = ContainerView::unchecked(c);
    let (policy, reason) = crate::policy::update_policy(c, cfg.update.allow_compose_update);
    v.update_policy = policy;
    v.update_policy_reason = reason;
    if let Some(chk) = check {
        v.status = chk.status;
        v.skipped = chk.status == Status::Skipped;
        v.skip_reason = chk.skip_reason.clone();
        v.error = chk.error.clone();
        v.current_digest = chk.current_digest.clone();
        v.remote_digest = chk.remote_digest.clone();
        v.last_checked_at = Some(chk.checked_at.clone());
        v.newer_versions = chk.newer_versions.clone();
    }
    v
}

/// Runs a discovery per request; skips the inspect pass when the container and image lists did
/// not change since the last successful pass.
fn discovery_worker(
    engine: Engine,
    include_stopped: bool,
    requests: Receiver<()>,
    events: Sender<Event>,
) {
    let mut last_fingerprint: Option<u64> = None;
    let mut summary: Option<EngineSummary> = None;
    for () in requests.iter() {
        let result = (|| {
            let containers = engine.list_containers(include_stopped)?;
            let images = engine.list_images()?;
            let fingerprint = fingerprint(&containers, &images);
            if last_fingerprint == Some(fingerprint) {
                return Ok(None);
            }
            if summary.is_none() {
                summary = Some(engine_summary(&engine)?);
            }
            let d = discover_now(&engine, include_stopped)?;
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

/// A hash of everything the two list calls said (ids, states, names, tags, digests...), written
/// straight into the hasher: the poll runs every few seconds and must not build big strings.
fn fingerprint(containers: &impl fmt::Debug, images: &impl fmt::Debug) -> u64 {
    use std::hash::Hasher;
    struct HashWriter(std::collections::hash_map::DefaultHasher);
    impl fmt::Write for HashWriter {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    let mut w = HashWriter(Default::default());
    let _ = fmt::write(&mut w, format_args!("{containers:?}{images:?}"));
    w.0.finish()
}

pub(crate) fn engine_summary(engine: &Engine) -> Result<EngineSummary, EngineError> {
    let v = engine.version()?;
    Ok(EngineSummary {
        version: v.version.clone(),
        api_version: engine
            .api_version()
            .map(|(a, b)| format!("{a}.{b}"))
            .unwrap_or_default(),
        os: v.os.clone(),
        arch: v.arch.clone(),
    })
}

/// A full discovery, recognising our own container.
pub(crate) fn discover_now(
    engine: &Engine,
    include_stopped: bool,
) -> Result<Discovery, EngineError> {
    static SELF_ID: OnceLock<Option<String>> = OnceLock::new();
    let me = match SELF_ID.get() {
        Some(me) => me.clone(),
        None => {
            let ids: Vec<String> = engine
                .list_containers(true)?
                .into_iter()
                .map(|c| c.id)
                .collect();
            let me = discovery::detect_self(&ids.iter().map(String::as_str).collect::<Vec<_>>());
            SELF_ID.get_or_init(|| me).clone()
        }
    };
    discovery::discover(engine, include_stopped, me.as_deref())
}

/// Maps an updater outcome to the job's per-container result.
pub(crate) fn container_result(
    id: &str,
    name: &str,
    outcome: &Outcome,
    took: Duration,
) -> ContainerResult {
    let mut r = ContainerResult {
        container: name.to_string(),
        id: id.to_string(),
        outcome: String::new(),
        error: None,
        from_image: None,
        to_image: None,
        duration_ms: took.as_millis() as u64,
        steps: None,
    };
    match outcome {
        Outcome::Updated {
            from_image,
            to_image,
            ..
        } => {
            r.outcome = "updated".into();
            r.from_image = Some(from_image.clone());
            r.to_image = Some(to_image.clone());
        }
        Outcome::Unchanged { reason } => {
            r.outcome = "unchanged".into();
            r.error = Some(reason.clone());
        }
        Outcome::RolledBack { error } => {
            r.outcome = "rolledBack".into();
            r.error = Some(error.clone());
        }
        // `rolled_back: true` here means a rollback was needed and did not complete.
        Outcome::Failed { error, .. } => {
            r.outcome = "failed".into();
            r.error = Some(error.clone());
        }
        Outcome::Planned { steps } => {
            r.outcome = "planned".into();
            r.steps = Some(steps.clone());
        }
    }
    r
}
