//! Webhook notifications (SPEC.md §9): what happened (an update is available, a container was
//! updated, an update failed) turned into a POST to each `notify.webhooks` entry subscribed to it,
//! in one of four formats: `json` (ours), `slack`, `discord`, `ntfy`.
//!
//! It owns the payloads (pure functions, [`payload`]), the once-per-remote-digest rule
//! ([`AvailableDeduper`], pure) and one background thread, `notify`, that delivers them
//! ([`Notifier`]). It knows nothing of scans, updates or the engine: callers hand it a
//! [`Notification`] and move on.
//!
//! A failing webhook never blocks an update: [`NotifySender::send`] only puts the notification on a
//! bounded queue (dropping it, counted and logged, when the queue is full) and the thread does the
//! slow part: a timeout per attempt, at most `attempts` attempts with exponential back-off, retrying
//! connect errors, timeouts, 408, 429 and 5xx but no other answer. Webhook URLs often embed a secret
//! (Slack, Discord), so logs name a webhook by its index in `notify.webhooks` and its host, never by
//! its URL. Proxies come from the usual `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`, honouring `NO_PROXY`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender, TrySendError};
use serde_json::json;

use crate::config::{NotifyConfig, Secret, Webhook, WebhookEvent, WebhookFormat};

/// Something worth telling the operator. Fields are as the rest of the product names them:
/// `container` is the container name, `image` the reference it was created from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// The image's tag moved in its registry. Send it once per new remote digest
    /// ([`AvailableDeduper`]).
    Available {
        container: String,
        image: String,
        /// The digest the container runs, when known (`None` for some local images).
        current_digest: Option<String>,
        remote_digest: String,
    },
    /// The container now runs the new image.
    Updated {
        container: String,
        image: String,
        from_image_id: String,
        to_image_id: String,
        duration_ms: u64,
    },
    /// An update failed; `rolled_back` tells whether the old container was put back.
    Failed {
        container: String,
        image: String,
        error: String,
        rolled_back: bool,
    },
}

impl Notification {
    /// The event a webhook subscribes to (`notify.webhooks[].events`).
    pub fn event(&self) -> WebhookEvent {
        match self {
            Notification::Available { .. } => WebhookEvent::Available,
            Notification::Updated { .. } => WebhookEvent::Updated,
            Notification::Failed { .. } => WebhookEvent::Failed,
        }
    }

    fn container_and_image(&self) -> (&str, &str) {
        match self {
            Notification::Available {
                container, image, ..
            }
            | Notification::Updated {
                container, image, ..
            }
            | Notification::Failed {
                container, image, ..
            } => (container, image),
        }
    }
}

/// The name of an event in payloads and in `notify.webhooks[].events`.
pub fn event_name(event: WebhookEvent) -> &'static str {
    match event {
        WebhookEvent::Available => "available",
        WebhookEvent::Updated => "updated",
        WebhookEvent::Failed => "failed",
    }
}

/// One request body, ready to POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Headers beyond `Content-Type` (ntfy's `Title`, `Tags`, `Priority`).
    pub headers: Vec<(&'static str, String)>,
}

/// Discord rejects a `content` longer than 2000 characters.
const DISCORD_MAX_CHARS: usize = 2000;
/// ntfy turns a message over 4096 bytes into an attachment; stay under it.
const NTFY_MAX_BYTES: usize = 4000;
/// Error messages can be long (a pull's whole error stream); a chat line should not be.
const ERROR_MAX_CHARS: usize = 1000;

/// The request body for `format`. Pure: `host` names the Docker host (most users run several),
/// `time` is when it happened (RFC 3339), passed in so that this reads no clock.
pub fn payload(format: WebhookFormat, n: &Notification, host: &str, time: &str) -> Payload {
    let line = summary(n);
    match format {
        WebhookFormat::Json => Payload {
            content_type: "application/json",
            body: json_body(n, host, time, &line).to_string().into_bytes(),
            headers: Vec::new(),
        },
        WebhookFormat::Slack => Payload {
            content_type: "application/json",
            body: json!({ "text": slack_escape(&format!("[{host}] {line}")) })
                .to_string()
                .into_bytes(),
            headers: Vec::new(),
        },
        WebhookFormat::Discord => Payload {
            content_type: "application/json",
            // An error text could hold `@everyone`: never let a message ping anyone.
            body: json!({
                "content": clip_chars(&format!("[{host}] {line}"), DISCORD_MAX_CHARS),
                "allowed_mentions": { "parse": [] },
            })
            .to_string()
            .into_bytes(),
            headers: Vec::new(),
        },
        WebhookFormat::Ntfy => {
            // https://docs.ntfy.sh/publish/: the body is the message, headers carry the rest.
            let (title, tags, priority) = match n {
                Notification::Available { .. } => ("update available", "package", "3"),
                Notification::Updated { .. } => ("updated", "white_check_mark", "3"),
                Notification::Failed {
                    rolled_back: true, ..
                } => ("update failed, rolled back", "warning", "4"),
                // The old container may be down: the loudest level.
                Notification::Failed { .. } => ("update failed", "rotating_light", "5"),
            };
            Payload {
                content_type: "text/plain; charset=utf-8",
                body: clip_bytes(&line, NTFY_MAX_BYTES).into_bytes(),
                headers: vec![
                    ("Title", header_text(&format!("{host}: {title}"))),
                    ("Tags", tags.to_string()),
                    ("Priority", priority.to_string()),
                ],
            }
        }
    }
}

fn json_body(n: &Notification, host: &str, time: &str, line: &str) -> serde_json::Value {
    let (container, image) = n.container_and_image();
    let mut v = json!({
        "event": event_name(n.event()),
        "host": host,
        "container": container,
        "image": image,
        "time": time,
        "message": line,
    });
    let extra = match n {
        Notification::Available {
            current_digest,
            remote_digest,
            ..
        } => json!({ "currentDigest": current_digest, "remoteDigest": remote_digest }),
        Notification::Updated {
            from_image_id,
            to_image_id,
            duration_ms,
            ..
        } => json!({
            "fromImageId": from_image_id,
            "toImageId": to_image_id,
            "durationMs": duration_ms,
        }),
        Notification::Failed {
            error, rolled_back, ..
        } => json!({ "error": error, "rolledBack": rolled_back }),
    };
    if let (Some(obj), serde_json::Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    v
}

/// One readable line: `web (nginx:latest): update available sha256:0123456789ab… → sha256:…`.
pub fn summary(n: &Notification) -> String {
    let (container, image) = n.container_and_image();
    let what = match n {
        Notification::Available {
            current_digest: Some(current),
            remote_digest,
            ..
        } => format!(
            "update available {} → {}",
            short_id(current),
            short_id(remote_digest)
        ),
        Notification::Available {
            current_digest: None,
            remote_digest,
            ..
        } => format!("update available {}", short_id(remote_digest)),
        Notification::Updated {
            from_image_id,
            to_image_id,
            duration_ms,
            ..
        } => format!(
            "updated {} → {} in {}",
            short_id(from_image_id),
            short_id(to_image_id),
            human_ms(*duration_ms)
        ),
        Notification::Failed {
            error, rolled_back, ..
        } => {
            let error = clip_chars(error, ERROR_MAX_CHARS);
            if *rolled_back {
                format!("update failed, rolled back: {error}")
            } else {
                format!("update failed: {error}")
            }
        }
    };
    format!("{container} ({image}): {what}")
}

/// `sha256:` and the first 12 hex digits, then `…`; short values stay whole.
fn short_id(id: &str) -> String {
    let (algo, hex) = match id.split_once(':') {
        Some((a, h)) => (Some(a), h),
        None => (None, id),
    };
    let short: String = hex.chars().take(12).collect();
    let ellipsis = if hex.chars().count() > 12 { "…" } else { "" };
    match algo {
        Some(a) => format!("{a}:{short}{ellipsis}"),
        None => format!("{short}{ellipsis}"),
    }
}

fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{}.{} s", ms / 1000, (ms % 1000) / 100)
    }
}

/// Slack's text escaping: `&`, `<`, `>` are markup (https://api.slack.com/reference/surfaces/formatting).
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn clip_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max.saturating_sub(1)) {
        Some((i, _)) if s[i..].chars().count() > 1 => format!("{}…", &s[..i]),
        _ => s.to_string(),
    }
}

fn clip_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A header value: control characters become spaces; non-ASCII text is sent as an RFC 2047
/// encoded word, which ntfy decodes (raw UTF-8 in headers is not portable).
fn header_text(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.is_ascii() {
        clean
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(clean.as_bytes());
        format!("=?UTF-8?B?{b64}?=")
    }
}

/// Remembers which (container, remote digest) pairs were already announced, so that an
/// `available` notification goes out once per new remote digest rather than at every scan.
///
/// Memory lives in the process only: after a restart the first scan announces each pending update
/// once more (SPEC.md §9). A container that is updated gets a new id, and a container that sees yet
/// another digest later is a new pair: both notify again.
#[derive(Debug, Default, Clone)]
pub struct AvailableDeduper {
    seen: std::collections::HashMap<String, std::collections::BTreeSet<String>>,
}

impl AvailableDeduper {
    pub fn new() -> Self {
        Self::default()
    }

    /// True the first time this pair is seen (then remembered); false afterwards.
    pub fn should_notify(&mut self, container_id: &str, remote_digest: &str) -> bool {
        self.seen
            .entry(container_id.to_string())
            .or_default()
            .insert(remote_digest.to_string())
    }

    /// Forgets containers that no longer exist (call with the ids of the last discovery), so the
    /// memory stays bounded by the live containers.
    pub fn retain_containers<'a>(&mut self, live_ids: impl IntoIterator<Item = &'a str>) {
        let live: std::collections::HashSet<&str> = live_ids.into_iter().collect();
        self.seen.retain(|id, _| live.contains(id.as_str()));
    }
}

/// Tuning of delivery; the defaults suit production, tests shrink the times.
#[derive(Debug, Clone)]
pub struct NotifierOptions {
    /// Notifications waiting for the thread; beyond it `send` drops (counted, logged).
    pub queue_capacity: usize,
    /// Whole-request limit for one attempt (connect, send, answer).
    pub attempt_timeout: Duration,
    /// Attempts per webhook and notification, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubles for each further one.
    pub backoff: Duration,
    /// How long `shutdown` keeps delivering what is queued (one attempt each, no back-off).
    pub drain_timeout: Duration,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        NotifierOptions {
            queue_capacity: 64,
            attempt_timeout: Duration::from_secs(10),
            attempts: 3,
            backoff: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Starting the notifier failed.
#[derive(Debug)]
pub enum NotifyError {
    /// The `notify` thread could not be created.
    Spawn(std::io::Error),
}

impl fmt::Display for NotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotifyError::Spawn(_) => f.write_str("start the notify thread"),
        }
    }
}

impl std::error::Error for NotifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NotifyError::Spawn(e) => Some(e),
        }
    }
}

/// A queued notification with the time it was sent.
struct Queued {
    n: Notification,
    time: String,
}

/// The cheap, cloneable sending side of a [`Notifier`], for the threads that report events.
#[derive(Clone)]
pub struct NotifySender {
    /// `None` when no webhook is configured: sending is then a no-op.
    tx: Option<Sender<Queued>>,
    /// Whether any webhook subscribes to available, updated, failed.
    interest: [bool; 3],
    dropped: Arc<AtomicU64>,
}

impl fmt::Debug for NotifySender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifySender")
            .field("enabled", &self.tx.is_some())
            .field("interest", &self.interest)
            .finish()
    }
}

fn event_slot(e: WebhookEvent) -> usize {
    match e {
        WebhookEvent::Available => 0,
        WebhookEvent::Updated => 1,
        WebhookEvent::Failed => 2,
    }
}

impl NotifySender {
    /// A sender that goes nowhere (no webhooks, or one-shot commands that do not notify).
    pub fn disabled() -> Self {
        NotifySender {
            tx: None,
            interest: [false; 3],
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues `n` for every webhook subscribed to its event. Never blocks: when the queue is full
    /// the notification is dropped, counted and logged.
    pub fn send(&self, n: Notification) {
        let Some(tx) = &self.tx else { return };
        if !self.interest[event_slot(n.event())] {
            return;
        }
        let event = event_name(n.event());
        let time = now_rfc3339();
        match tx.try_send(Queued { n, time }) {
            Ok(()) => {}
            Err(TrySendError::Full(q)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                let (container, _) = q.n.container_and_image();
                log::warn!(component = "notify", container = container;
                    "notification queue full: {event} notification dropped");
            }
            Err(TrySendError::Disconnected(_)) => {
                log::debug!(component = "notify"; "notifier stopped: {event} notification not sent");
            }
        }
    }

    /// Notifications dropped because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// Owns the `notify` thread. Stop it with [`Notifier::shutdown`] (dropping it does the same).
pub struct Notifier {
    sender: NotifySender,
    stop: Option<Sender<Instant>>,
    worker: Option<JoinHandle<()>>,
    drain_timeout: Duration,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("sender", &self.sender)
            .finish()
    }
}

impl Notifier {
    /// Starts the `notify` thread for `cfg.webhooks`; `host` names this Docker host in every
    /// payload. With no webhooks no thread is started and sending does nothing.
    pub fn start(
        cfg: &NotifyConfig,
        host: impl Into<String>,
        opts: NotifierOptions,
    ) -> Result<Notifier, NotifyError> {
        let dropped = Arc::new(AtomicU64::new(0));
        if cfg.webhooks.is_empty() {
            return Ok(Notifier {
                sender: NotifySender::disabled(),
                stop: None,
                worker: None,
                drain_timeout: opts.drain_timeout,
            });
        }
        let mut interest = [false; 3];
        for hook in &cfg.webhooks {
            for e in &hook.events {
                interest[event_slot(*e)] = true;
            }
        }
        let (tx, rx) = bounded(opts.queue_capacity.max(1));
        let (stop_tx, stop_rx) = bounded(1);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(opts.attempt_timeout))
            .http_status_as_error(false)
            // A redirected POST turns into a GET and loses its body: report the status instead.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("watch-docker/", env!("CARGO_PKG_VERSION")))
            .tls_config(crate::registry::client::tls_config(Vec::new()))
            .build()
            .into();
        let worker = Worker {
            agent,
            hooks: cfg.webhooks.clone(),
            host: host.into(),
            opts,
            rx,
            stop_rx,
            deadline: None,
        };
        let drain_timeout = worker.opts.drain_timeout;
        let handle = std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || worker.run())
            .map_err(NotifyError::Spawn)?;
        Ok(Notifier {
            sender: NotifySender {
                tx: Some(tx),
                interest,
                dropped,
            },
            stop: Some(stop_tx),
            worker: Some(handle),
            drain_timeout,
        })
    }

    /// See [`NotifySender::send`].
    pub fn send(&self, n: Notification) {
        self.sender.send(n)
    }

    /// A sending handle for other threads.
    pub fn sender(&self) -> NotifySender {
        self.sender.clone()
    }

    /// See [`NotifySender::dropped`].
    pub fn dropped(&self) -> u64 {
        self.sender.dropped()
    }

    /// Delivers what is queued for at most `drain_timeout` (one attempt each, plus at most one
    /// attempt's timeout already in flight), then joins the thread. Later sends are ignored.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.try_send(Instant::now() + self.drain_timeout);
        }
        if let Some(handle) = self.worker.take() {
            if handle.join().is_err() {
                log::error!(component = "notify"; "the notify thread panicked");
            }
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// What one attempt's outcome means for the next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Delivered,
    Retry(String),
    GiveUp(String),
}

/// 408, 429 and 5xx are worth another try; any other non-2xx answer will not change by retrying.
fn classify_status(code: u16) -> Verdict {
    match code {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry(format!("answered {code}")),
        300..=399 => Verdict::GiveUp(format!(
            "answered {code} (a redirect; configure the final URL)"
        )),
        _ => Verdict::GiveUp(format!("answered {code}")),
    }
}

fn classify_error(e: &ureq::Error) -> Verdict {
    // `BadUri`'s text holds the URL, which may hold a secret: never print it.
    let text = match e {
        ureq::Error::BadUri(_) => "invalid URL".to_string(),
        other => other.to_string(),
    };
    match e {
        ureq::Error::Timeout(_)
        | ureq::Error::Io(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Protocol(_) => Verdict::Retry(text),
        _ => Verdict::GiveUp(text),
    }
}

/// The host of a webhook URL for logs, or a placeholder; never the path or query (secrets live there).
fn url_host(url: &Secret) -> String {
    url.expose()
        .parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_string))
        .unwrap_or_else(|| "invalid URL".to_string())
}

struct Worker {
    agent: ureq::Agent,
    /// In `notify.webhooks` order: the index is the name logs use.
    hooks: Vec<Webhook>,
    host: String,
    opts: NotifierOptions,
    rx: Receiver<Queued>,
    stop_rx: Receiver<Instant>,
    /// Set once shutdown starts: deliver what is queued until then, without retries.
    deadline: Option<Instant>,
}

impl Worker {
    fn run(mut self) {
        loop {
            let job = match self.deadline {
                None => select! {
                    recv(self.rx) -> m => match m {
                        Ok(job) => job,
                        Err(_) => return,
                    },
                    recv(self.stop_rx) -> m => {
                        self.deadline = Some(m.unwrap_or_else(|_| Instant::now() + self.opts.drain_timeout));
                        continue;
                    }
                },
                Some(deadline) => match self.rx.try_recv() {
                    Ok(job) if Instant::now() < deadline => job,
                    Ok(_) => {
                        let left = 1 + self.rx.try_iter().count();
                        log::warn!(component = "notify";
                            "shutting down: {left} queued notification(s) not delivered");
                        return;
                    }
                    Err(_) => return,
                },
            };
            self.deliver(&job);
        }
    }

    fn deliver(&mut self, job: &Queued) {
        let event = job.n.event();
        for i in 0..self.hooks.len() {
            if !self.hooks[i].events.contains(&event) {
                continue;
            }
            let p = payload(self.hooks[i].format, &job.n, &self.host, &job.time);
            self.post_with_retries(i, &job.n, &p);
        }
    }

    fn post_with_retries(&mut self, index: usize, n: &Notification, p: &Payload) {
        let url_host = url_host(&self.hooks[index].url);
        let event = event_name(n.event());
        let (container, _) = n.container_and_image();
        let mut wait = self.opts.backoff;
        let attempts = self.opts.attempts.max(1);
        for attempt in 1..=attempts {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                log::warn!(component = "notify", container = container;
                    "webhook {index} ({url_host}): {event} not delivered: shutting down");
                return;
            }
            let verdict = self.post_once(index, p);
            let reason = match verdict {
                Verdict::Delivered => {
                    log::debug!(component = "notify", container = container;
                        "webhook {index} ({url_host}): {event} delivered");
                    return;
                }
                Verdict::GiveUp(reason) => {
                    log::warn!(component = "notify", container = container;
                        "webhook {index} ({url_host}): {event} not delivered: {reason}");
                    return;
                }
                Verdict::Retry(reason) => reason,
            };
            if attempt == attempts {
                log::warn!(component = "notify", container = container;
                    "webhook {index} ({url_host}): {event} not delivered after {attempts} attempts: {reason}");
                return;
            }
            if !self.pause(wait) {
                log::warn!(component = "notify", container = container;
                    "webhook {index} ({url_host}): {event} not delivered: {reason}; not retried while shutting down");
                return;
            }
            log::info!(component = "notify", container = container;
                "webhook {index} ({url_host}): {event} attempt {attempt} failed ({reason}); retrying");
            wait = wait.saturating_mul(2);
        }
    }

    fn post_once(&self, i: usize, p: &Payload) -> Verdict {
        let mut req = self
            .agent
            .post(self.hooks[i].url.expose())
            .header("Content-Type", p.content_type);
        for (name, value) in &p.headers {
            req = req.header(*name, value);
        }
        match req.send(&p.body[..]) {
            Ok(mut resp) => {
                // Read a little of the answer so the connection can be reused; its content is
                // not ours to log (it may echo the URL).
                let _ = resp.body_mut().with_config().limit(64 * 1024).read_to_vec();
                classify_status(resp.status().as_u16())
            }
            Err(e) => classify_error(&e),
        }
    }

    /// Waits `d` before a retry; false (at once) when shutdown has started, so draining never
    /// waits out a back-off.
    fn pause(&mut self, d: Duration) -> bool {
        if self.deadline.is_some() {
            return false;
        }
        match self.stop_rx.recv_timeout(d) {
            Err(RecvTimeoutError::Timeout) => true,
            Ok(deadline) => {
                self.deadline = Some(deadline);
                false
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.deadline = Some(Instant::now() + self.opts.drain_timeout);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const CUR: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const NEW: &str = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    const TIME: &str = "2026-11-29T06:30:00Z";

    fn available(container: &str) -> Notification {
        Notification::Available {
            container: container.into(),
            image: "nginx:latest".into(),
            current_digest: Some(CUR.into()),
            remote_digest: NEW.into(),
        }
    }

    fn updated(container: &str) -> Notification {
        Notification::Updated {
            container: container.into(),
            image: "nginx:latest".into(),
            from_image_id: CUR.into(),
            to_image_id: NEW.into(),
            duration_ms: 4230,
        }
    }

    fn failed(container: &str, rolled_back: bool) -> Notification {
        Notification::Failed {
            container: container.into(),
            image: "redis:7".into(),
            error: "start: health check failed".into(),
            rolled_back,
        }
    }

    #[test]
    fn summaries_are_readable_lines() {
        let table = [
            (
                available("web"),
                "web (nginx:latest): update available sha256:0123456789ab… → sha256:fedcba987654…",
            ),
            (
                Notification::Available {
                    container: "web".into(),
                    image: "nginx:latest".into(),
                    current_digest: None,
                    remote_digest: NEW.into(),
                },
                "web (nginx:latest): update available sha256:fedcba987654…",
            ),
            (
                updated("web"),
                "web (nginx:latest): updated sha256:0123456789ab… → sha256:fedcba987654… in 4.2 s",
            ),
            (
                Notification::Updated {
                    container: "web".into(),
                    image: "nginx:latest".into(),
                    from_image_id: "sha256:abc".into(),
                    to_image_id: "def".into(),
                    duration_ms: 812,
                },
                "web (nginx:latest): updated sha256:abc → def in 812 ms",
            ),
            (
                failed("db", true),
                "db (redis:7): update failed, rolled back: start: health check failed",
            ),
            (
                failed("db", false),
                "db (redis:7): update failed: start: health check failed",
            ),
        ];
        for (n, want) in table {
            assert_eq!(summary(&n), want, "{n:?}");
        }
    }

    fn body_json(p: &Payload) -> Value {
        serde_json::from_slice(&p.body).expect("payload is JSON")
    }

    #[test]
    fn json_payloads_carry_every_field() {
        let table = [
            (
                available("web"),
                json!({
                    "event": "available", "host": "edge-1", "container": "web",
                    "image": "nginx:latest", "time": TIME,
                    "currentDigest": CUR, "remoteDigest": NEW,
                    "message": "web (nginx:latest): update available sha256:0123456789ab… → sha256:fedcba987654…",
                }),
            ),
            (
                updated("web"),
                json!({
                    "event": "updated", "host": "edge-1", "container": "web",
                    "image": "nginx:latest", "time": TIME,
                    "fromImageId": CUR, "toImageId": NEW, "durationMs": 4230,
                    "message": "web (nginx:latest): updated sha256:0123456789ab… → sha256:fedcba987654… in 4.2 s",
                }),
            ),
            (
                failed("db", true),
                json!({
                    "event": "failed", "host": "edge-1", "container": "db",
                    "image": "redis:7", "time": TIME,
                    "error": "start: health check failed", "rolledBack": true,
                    "message": "db (redis:7): update failed, rolled back: start: health check failed",
                }),
            ),
        ];
        for (n, want) in table {
            let p = payload(WebhookFormat::Json, &n, "edge-1", TIME);
            assert_eq!(p.content_type, "application/json");
            assert!(p.headers.is_empty());
            assert_eq!(body_json(&p), want);
        }
        let none = Notification::Available {
            container: "web".into(),
            image: "local/app".into(),
            current_digest: None,
            remote_digest: NEW.into(),
        };
        assert_eq!(
            body_json(&payload(WebhookFormat::Json, &none, "h", TIME))["currentDigest"],
            Value::Null
        );
    }

    #[test]
    fn chat_payloads_are_one_escaped_line() {
        let table = [
            (
                WebhookFormat::Slack,
                available("web"),
                r#"{"text":"[edge-1] web (nginx:latest): update available sha256:0123456789ab… → sha256:fedcba987654…"}"#,
            ),
            (
                WebhookFormat::Slack,
                Notification::Failed {
                    container: "a&b".into(),
                    image: "x:1".into(),
                    error: "<boom> \"quoted\"".into(),
                    rolled_back: false,
                },
                r#"{"text":"[edge-1] a&amp;b (x:1): update failed: &lt;boom&gt; \"quoted\""}"#,
            ),
            (
                WebhookFormat::Discord,
                failed("db", true),
                r#"{"allowed_mentions":{"parse":[]},"content":"[edge-1] db (redis:7): update failed, rolled back: start: health check failed"}"#,
            ),
        ];
        for (format, n, want) in table {
            let p = payload(format, &n, "edge-1", TIME);
            assert_eq!(p.content_type, "application/json");
            assert!(p.headers.is_empty());
            assert_eq!(String::from_utf8_lossy(&p.body), want, "{format:?} {n:?}");
        }
    }

    #[test]
    fn discord_content_stays_under_its_limit() {
        let n = Notification::Failed {
            container: "web".into(),
            image: "nginx".into(),
            error: "x".repeat(5000),
            rolled_back: false,
        };
        let p = payload(WebhookFormat::Discord, &n, "h", TIME);
        let content = body_json(&p)["content"].as_str().unwrap_or("").to_string();
        assert!(content.chars().count() <= DISCORD_MAX_CHARS);
        assert!(content.ends_with('…'));
    }

    #[test]
    fn ntfy_payloads_are_plain_text_with_headers() {
        let table = [
            (available("web"), "edge-1: update available", "package", "3"),
            (updated("web"), "edge-1: updated", "white_check_mark", "3"),
            (
                failed("db", true),
                "edge-1: update failed, rolled back",
                "warning",
                "4",
            ),
            (
                failed("db", false),
                "edge-1: update failed",
                "rotating_light",
                "5",
            ),
        ];
        for (n, title, tags, priority) in table {
            let p = payload(WebhookFormat::Ntfy, &n, "edge-1", TIME);
            assert_eq!(p.content_type, "text/plain; charset=utf-8");
            assert_eq!(String::from_utf8_lossy(&p.body), summary(&n));
            assert_eq!(
                p.headers,
                [
                    ("Title", title.to_string()),
                    ("Tags", tags.to_string()),
                    ("Priority", priority.to_string()),
                ]
            );
        }
        let p = payload(WebhookFormat::Ntfy, &available("web"), "küche\n", TIME);
        assert_eq!(
            p.headers[0].1,
            format!(
                "=?UTF-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode("küche : update available")
            )
        );
        let long = Notification::Failed {
            container: "web".into(),
            image: "nginx".into(),
            error: "é".repeat(900),
            rolled_back: false,
        };
        let body = payload(WebhookFormat::Ntfy, &long, "h", TIME).body;
        assert!(body.len() <= NTFY_MAX_BYTES);
        assert!(std::str::from_utf8(&body).is_ok());
    }

    #[test]
    fn deduper_notifies_once_per_container_and_remote_digest() {
        let mut d = AvailableDeduper::new();
        // (container id, remote digest, expected)
        let table = [
            ("c1", "sha256:a", true),
            ("c1", "sha256:a", false), // the next scan: same news
            ("c2", "sha256:a", true),  // another container on the same image
            ("c1", "sha256:b", true),  // the tag moved again
            ("c1", "sha256:a", false), // and back: already announced
            ("c3", "sha256:b", true),  // c1 was updated: a new id, a new pair
        ];
        for (id, digest, want) in table {
            assert_eq!(d.should_notify(id, digest), want, "{id} {digest}");
        }
        d.retain_containers(["c2"]);
        assert!(d.should_notify("c1", "sha256:a"), "forgotten once gone");
        assert!(!d.should_notify("c2", "sha256:a"), "kept while it lives");
    }

    #[test]
    fn statuses_and_errors_decide_retries() {
        for (code, retry) in [
            (408, true),
            (429, true),
            (500, true),
            (502, true),
            (503, true),
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (410, false),
            (301, false),
        ] {
            let v = classify_status(code);
            assert_eq!(matches!(v, Verdict::Retry(_)), retry, "{code}: {v:?}");
            assert!(!matches!(v, Verdict::Delivered), "{code}");
        }
        for code in [200, 201, 202, 204] {
            assert_eq!(classify_status(code), Verdict::Delivered);
        }
        let timeout = ureq::Error::Timeout(ureq::Timeout::Global);
        assert!(matches!(classify_error(&timeout), Verdict::Retry(_)));
        assert!(matches!(
            classify_error(&ureq::Error::ConnectionFailed),
            Verdict::Retry(_)
        ));
        let bad = ureq::Error::BadUri("https://hooks.example/s3cret is missing host".into());
        assert_eq!(classify_error(&bad), Verdict::GiveUp("invalid URL".into()));
    }

    #[test]
    fn logs_name_a_webhook_by_host_only() {
        for (url, want) in [
            (
                "https://hooks.slack.com/services/T0/B0/s3cret",
                "hooks.slack.com",
            ),
            ("http://127.0.0.1:8080/x?token=s3cret", "127.0.0.1"),
            ("not a url", "invalid URL"),
        ] {
            assert_eq!(url_host(&Secret::new(url)), want);
        }
    }

    // ---- tier 2: a local HTTP receiver ----

    use std::io::{Read as _, Write as _};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::Mutex;

    #[derive(Debug, Clone)]
    struct Recorded {
        path: String,
        /// Names lowercased.
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Recorded {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap_or(Value::Null)
        }
    }

    #[derive(Clone, Copy)]
    enum Reply {
        Status(u16),
        /// Accept the connection, never answer.
        Hold,
    }

    /// A one-connection-at-a-time HTTP receiver on 127.0.0.1 answering from a script, then 200.
    struct Receiver {
        addr: SocketAddr,
        requests: Arc<Mutex<Vec<Recorded>>>,
        accepted: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Receiver {
        fn start(script: &[Reply]) -> Receiver {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let requests = Arc::new(Mutex::new(Vec::new()));
            let accepted = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (req2, acc2, stop2) = (requests.clone(), accepted.clone(), stop.clone());
            let script: Vec<Reply> = script.to_vec();
            let mut script = script.into_iter();
            let thread = std::thread::Builder::new()
                .name("test-receiver".into())
                .spawn(move || {
                    let mut held = Vec::new();
                    for stream in listener.incoming() {
                        if stop2.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(mut stream) = stream else { continue };
                        acc2.fetch_add(1, Ordering::SeqCst);
                        match script.next().unwrap_or(Reply::Status(200)) {
                            Reply::Hold => held.push(stream),
                            Reply::Status(code) => {
                                if let Some(r) = read_request(&mut stream) {
                                    req2.lock().unwrap().push(r);
                                }
                                let _ = write!(
                                    stream,
                                    "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                                );
                            }
                        }
                    }
                })
                .expect("spawn");
            Receiver {
                addr,
                requests,
                accepted,
                stop,
                thread: Some(thread),
            }
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        /// Polls until `n` requests were recorded (deadline 20 s), then returns them all.
        fn wait_for(&self, n: usize) -> Vec<Recorded> {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let got = self.requests.lock().unwrap().clone();
                if got.len() >= n || Instant::now() > deadline {
                    return got;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        fn wait_accepted(&self, n: usize) -> usize {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let got = self.accepted.load(Ordering::SeqCst);
                if got >= n || Instant::now() > deadline {
                    return got;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(self.addr);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn read_request(stream: &mut TcpStream) -> Option<Recorded> {
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let path = lines.next()?.split(' ').nth(1)?.to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end..].to_vec();
        while body.len() < len {
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Some(Recorded {
            path,
            headers,
            body,
        })
    }

    fn fast() -> NotifierOptions {
        NotifierOptions {
            queue_capacity: 16,
            attempt_timeout: Duration::from_millis(300),
            attempts: 3,
            backoff: Duration::from_millis(10),
            drain_timeout: Duration::from_secs(2),
        }
    }

    fn hook(url: String, events: &[WebhookEvent], format: WebhookFormat) -> Webhook {
        Webhook {
            url: Secret::new(url),
            events: events.to_vec(),
            format,
        }
    }

    fn start(hooks: Vec<Webhook>, opts: NotifierOptions) -> Notifier {
        Notifier::start(&NotifyConfig { webhooks: hooks }, "edge-1", opts).expect("start")
    }

    use WebhookEvent::{Available as A, Failed as F, Updated as U};

    #[test]
    fn notifications_reach_the_subscribed_webhooks_in_their_format() {
        let rx = Receiver::start(&[]);
        let notifier = start(
            vec![
                hook(rx.url("/json"), &[A, F], WebhookFormat::Json),
                hook(rx.url("/slack"), &[U], WebhookFormat::Slack),
                hook(rx.url("/ntfy"), &[A], WebhookFormat::Ntfy),
            ],
            fast(),
        );
        notifier.send(available("web"));
        notifier.sender().send(updated("web"));
        notifier.send(failed("db", true));
        let got = rx.wait_for(4);
        notifier.shutdown();

        let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/json", "/ntfy", "/slack", "/json"]);
        assert_eq!(got[0].header("content-type"), Some("application/json"));
        assert_eq!(got[0].json()["event"], "available");
        assert_eq!(got[0].json()["host"], "edge-1");
        assert_eq!(got[0].json()["remoteDigest"], NEW);
        assert!(got[0].json()["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
        assert_eq!(
            got[1].header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(got[1].header("title"), Some("edge-1: update available"));
        assert_eq!(got[1].header("priority"), Some("3"));
        assert_eq!(
            String::from_utf8_lossy(&got[1].body),
            summary(&available("web"))
        );
        assert_eq!(
            got[2].json()["text"],
            format!("[edge-1] {}", summary(&updated("web")))
        );
        assert_eq!(got[3].json()["event"], "failed");
        assert_eq!(got[3].json()["rolledBack"], true);
        assert!(got.iter().all(|r| r
            .headers
            .iter()
            .filter(|(n, _)| n == "content-type")
            .count()
            == 1));
        assert!(got.iter().all(|r| r
            .header("user-agent")
            .is_some_and(|u| u.starts_with("watch-docker/"))));
    }

    #[test]
    fn server_errors_are_retried_until_an_answer_succeeds() {
        let rx = Receiver::start(&[Reply::Status(500), Reply::Status(500)]);
        let notifier = start(
            vec![hook(rx.url("/h"), &[A, U], WebhookFormat::Json)],
            fast(),
        );
        notifier.send(available("web"));
        let got = rx.wait_for(3);
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|r| r.json()["event"] == "available"));
        // The third attempt succeeded: the next request is the next notification, not a fourth try.
        notifier.send(updated("web"));
        let got = rx.wait_for(4);
        notifier.shutdown();
        let events: Vec<Value> = got.iter().map(|r| r.json()["event"].clone()).collect();
        assert_eq!(events, ["available", "available", "available", "updated"]);
    }

    #[test]
    fn a_client_error_is_not_retried() {
        let rx = Receiver::start(&[Reply::Status(400)]);
        let notifier = start(
            vec![hook(rx.url("/h"), &[A, U], WebhookFormat::Json)],
            fast(),
        );
        notifier.send(available("web"));
        notifier.send(updated("web"));
        let got = rx.wait_for(2);
        notifier.shutdown();
        let events: Vec<Value> = got.iter().map(|r| r.json()["event"].clone()).collect();
        assert_eq!(events, ["available", "updated"]);
    }

    #[test]
    fn a_webhook_that_never_answers_blocks_neither_send_nor_other_webhooks() {
        let silent = Receiver::start(&[Reply::Hold, Reply::Hold, Reply::Hold]);
        let healthy = Receiver::start(&[]);
        let notifier = start(
            vec![
                hook(silent.url("/s3cret-path"), &[A], WebhookFormat::Json),
                hook(healthy.url("/ok"), &[U], WebhookFormat::Json),
            ],
            fast(),
        );
        notifier.send(available("web"));
        // Returns while the thread waits on the silent webhook.
        notifier.send(updated("web"));
        assert_eq!(silent.wait_accepted(3), 3, "three attempts, each timed out");
        let got = healthy.wait_for(1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].json()["event"], "updated");
        assert!(!format!("{notifier:?}").contains("s3cret"));
        notifier.shutdown();
    }

    #[test]
    fn a_full_queue_drops_instead_of_blocking() {
        let silent = Receiver::start(&[Reply::Hold; 16]);
        let opts = NotifierOptions {
            queue_capacity: 1,
            attempts: 1,
            drain_timeout: Duration::from_millis(50),
            ..fast()
        };
        let notifier = start(vec![hook(silent.url("/"), &[A], WebhookFormat::Json)], opts);
        for i in 0..10 {
            notifier.send(available(&format!("c{i}")));
        }
        // At most one in flight and one queued.
        assert!(notifier.dropped() >= 8, "dropped {}", notifier.dropped());
        notifier.shutdown();
    }

    #[test]
    fn without_webhooks_nothing_runs_and_send_is_a_no_op() {
        let notifier = start(vec![], fast());
        notifier.send(available("web"));
        assert_eq!(notifier.dropped(), 0);
        notifier.shutdown();
        NotifySender::disabled().send(updated("web"));
    }

    #[test]
    fn events_without_subscribers_are_not_queued() {
        let rx = Receiver::start(&[]);
        let notifier = start(vec![hook(rx.url("/u"), &[U], WebhookFormat::Json)], fast());
        notifier.send(available("web"));
        notifier.send(updated("web"));
        let got = rx.wait_for(1);
        notifier.shutdown();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].json()["event"], "updated");
    }
}
