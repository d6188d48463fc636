//! Metrics: a small registry of the `watchdocker_*` series (SPEC.md §9) and its rendering in the
//! Prometheus text exposition format 0.0.4. Workers record into it; API threads render it.
//!
//! It owns the metric names, their label sets and the text format. It knows nothing of the engine,
//! of registries or of HTTP: callers report what happened (a scan finished, a registry answered).
//!
//! Everything sits behind one `Mutex`: updates are a handful per scan and per registry request, and a
//! render takes microseconds, so contention is not a concern and the code stays obvious. Output is
//! deterministic (families in a fixed order, label sets sorted) so that tests compare exact text.
//!
//! The per-container `watchdocker_container_update_available` set is replaced whole from every
//! snapshot: a container that now runs the new image (or is gone) simply disappears from the output,
//! which is how the gauge "clears" without a stale series lingering at 0.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::model::Status;

/// Upper bounds (seconds) of the scan-duration histogram buckets; `+Inf` is implied.
pub const SCAN_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];
/// Upper bounds (seconds) of the registry-latency histogram buckets; `+Inf` is implied.
pub const REGISTRY_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Statuses in the order they are rendered (every one always present, 0 when none).
const STATUSES: [Status; 5] = [
    Status::UpToDate,
    Status::UpdateAvailable,
    Status::Skipped,
    Status::Error,
    Status::Unknown,
];

/// How an update ended, for `watchdocker_updates_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    Succeeded,
    /// Failed and the old container could not be (or was not) restored.
    Failed,
    /// Failed and the old container was put back.
    RolledBack,
}

impl UpdateOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateOutcome::Succeeded => "succeeded",
            UpdateOutcome::Failed => "failed",
            UpdateOutcome::RolledBack => "rolled_back",
        }
    }
}

/// How one registry request ended, for `watchdocker_registry_requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryOutcome {
    /// Any answer we could use (including 404 for a missing tag: the registry worked).
    Ok,
    /// Transport error, timeout, 5xx, or an unusable answer.
    Error,
    /// 429.
    RateLimited,
}

impl RegistryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryOutcome::Ok => "ok",
            RegistryOutcome::Error => "error",
            RegistryOutcome::RateLimited => "rate_limited",
        }
    }
}

/// A cumulative histogram with fixed buckets. Counts are stored per bucket and summed on render.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus the last for values above every bound (`+Inf` only).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        let slot = self
            .bounds
            .iter()
            .position(|&le| value <= le)
            .unwrap_or(self.bounds.len());
        self.counts[slot] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// Writes `<name>_bucket{labels,le=..}`, `<name>_sum` and `<name>_count`; `labels` is the
    /// already-rendered label list without braces (may be empty).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count;
            let le = match self.bounds.get(i) {
                Some(b) => fmt_float(*b),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", fmt_float(self.sum));
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Clone)]
struct RegistryStats {
    ok: u64,
    error: u64,
    rate_limited: u64,
    latency: Histogram,
}

impl Default for RegistryStats {
    fn default() -> Self {
        RegistryStats {
            ok: 0,
            error: 0,
            rate_limited: 0,
            latency: Histogram::new(REGISTRY_BUCKETS),
        }
    }
}

#[derive(Debug)]
struct Inner {
    scans_ok: u64,
    scans_failed: u64,
    scan_duration: Histogram,
    /// Unix seconds of the last finished scan; no sample until the first.
    last_scan: Option<f64>,
    statuses: BTreeMap<Status, u64>,
    /// (container name, image reference) of containers whose image has an update.
    update_available: BTreeSet<(String, String)>,
    updates: [u64; 3],
    registries: BTreeMap<String, RegistryStats>,
    ratelimit_remaining: BTreeMap<String, u64>,
    skipped_ticks: BTreeMap<String, u64>,
}

/// The process's metrics. Share it as `Arc<Metrics>`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    version: String,
    inner: Mutex<Inner>,
}

impl Metrics {
    /// A registry with every counter at 0; `version` goes into `watchdocker_build_info`.
    pub fn new(version: &str) -> Self {
        Metrics {
            version: version.to_string(),
            inner: Mutex::new(Inner {
                scans_ok: 0,
                scans_failed: 0,
                scan_duration: Histogram::new(SCAN_BUCKETS),
                last_scan: None,
                statuses: BTreeMap::new(),
                update_available: BTreeSet::new(),
                updates: [0; 3],
                registries: BTreeMap::new(),
                ratelimit_remaining: BTreeMap::new(),
                skipped_ticks: BTreeMap::new(),
            }),
        }
    }

    /// A panic elsewhere while holding the lock leaves plain counters behind, still consistent
    /// enough to serve: metrics must never take the API down, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A scan finished (`ok: false` when it failed as a whole, not when some containers are `Error`);
    /// `at_unix` is when it finished, in Unix seconds.
    pub fn scan_finished(&self, ok: bool, duration: Duration, at_unix: f64) {
        let mut m = self.lock();
        if ok {
            m.scans_ok += 1;
        } else {
            m.scans_failed += 1;
        }
        m.scan_duration.observe(duration.as_secs_f64());
        m.last_scan = Some(at_unix);
    }

    /// Replaces the per-status counts and the update-available set from a snapshot of
    /// `(container name, image reference, status)`.
    pub fn set_container_statuses<N, I>(&self, containers: impl IntoIterator<Item = (N, I, Status)>)
    where
        N: AsRef<str>,
        I: AsRef<str>,
    {
        let mut statuses = BTreeMap::new();
        let mut available = BTreeSet::new();
        for (name, image, status) in containers {
            *statuses.entry(status).or_insert(0) += 1;
            if status == Status::UpdateAvailable {
                available.insert((name.as_ref().to_string(), image.as_ref().to_string()));
            }
        }
        let mut m = self.lock();
        m.statuses = statuses;
        m.update_available = available;
    }

    /// An update (or rollback to a previous image) finished.
    pub fn update_finished(&self, outcome: UpdateOutcome) {
        let slot = match outcome {
            UpdateOutcome::Succeeded => 0,
            UpdateOutcome::Failed => 1,
            UpdateOutcome::RolledBack => 2,
        };
        self.lock().updates[slot] += 1;
    }

    /// One request to registry `host` (as the user knows it, e.g. `docker.io`, `ghcr.io`) ended.
    pub fn registry_request(&self, host: &str, outcome: RegistryOutcome, duration: Duration) {
        let mut m = self.lock();
        let stats = m.registries.entry(host.to_string()).or_default();
        match outcome {
            RegistryOutcome::Ok => stats.ok += 1,
            RegistryOutcome::Error => stats.error += 1,
            RegistryOutcome::RateLimited => stats.rate_limited += 1,
        }
        stats.latency.observe(duration.as_secs_f64());
    }

    /// The last `ratelimit-remaining` a registry announced; `None` removes the series (the
    /// registry stopped sending it, or it was never known).
    pub fn set_ratelimit_remaining(&self, host: &str, remaining: Option<u64>) {
        let mut m = self.lock();
        match remaining {
            Some(n) => {
                m.ratelimit_remaining.insert(host.to_string(), n);
            }
            None => {
                m.ratelimit_remaining.remove(host);
            }
        }
    }

    /// A scheduler tick for `job` (`scan`, `update`) was skipped because the job was still running.
    pub fn skipped_tick(&self, job: &str) {
        *self
            .lock()
            .skipped_ticks
            .entry(job.to_string())
            .or_insert(0) += 1;
    }

    /// The whole registry in the Prometheus text format 0.0.4
    /// (`Content-Type: text/plain; version=0.0.4; charset=utf-8`).
    pub fn render(&self) -> String {
        let m = self.lock();
        let mut out = String::with_capacity(4096);

        family(
            &mut out,
            "watchdocker_build_info",
            "gauge",
            "Build information; always 1.",
        );
        let _ = writeln!(
            out,
            "watchdocker_build_info{{version=\"{}\"}} 1",
            escape_label(&self.version)
        );

        family(
            &mut out,
            "watchdocker_scans_total",
            "counter",
            "Scans finished, by outcome.",
        );
        let _ = writeln!(
            out,
            "watchdocker_scans_total{{outcome=\"failed\"}} {}",
            m.scans_failed
        );
        let _ = writeln!(
            out,
            "watchdocker_scans_total{{outcome=\"ok\"}} {}",
            m.scans_ok
        );

        family(
            &mut out,
            "watchdocker_scan_duration_seconds",
            "histogram",
            "Duration of scans.",
        );
        m.scan_duration
            .render(&mut out, "watchdocker_scan_duration_seconds", "");

        family(
            &mut out,
            "watchdocker_last_scan_timestamp_seconds",
            "gauge",
            "Unix time when the last scan finished.",
        );
        if let Some(at) = m.last_scan {
            let _ = writeln!(
                out,
                "watchdocker_last_scan_timestamp_seconds {}",
                fmt_float(at)
            );
        }

        family(
            &mut out,
            "watchdocker_containers",
            "gauge",
            "Containers by check status, from the last snapshot.",
        );
        let mut statuses: Vec<(&str, u64)> = STATUSES
            .iter()
            .map(|s| (s.as_str(), m.statuses.get(s).copied().unwrap_or(0)))
            .collect();
        statuses.sort();
        for (status, n) in statuses {
            let _ = writeln!(out, "watchdocker_containers{{status=\"{status}\"}} {n}");
        }

        family(
            &mut out,
            "watchdocker_container_update_available",
            "gauge",
            "1 for each container whose image has a newer build in its registry.",
        );
        for (name, image) in &m.update_available {
            let _ = writeln!(
                out,
                "watchdocker_container_update_available{{container=\"{}\",image=\"{}\"}} 1",
                escape_label(name),
                escape_label(image)
            );
        }

        family(
            &mut out,
            "watchdocker_updates_total",
            "counter",
            "Container updates finished, by outcome.",
        );
        for (outcome, n) in [
            (UpdateOutcome::Failed, m.updates[1]),
            (UpdateOutcome::RolledBack, m.updates[2]),
            (UpdateOutcome::Succeeded, m.updates[0]),
        ] {
            let _ = writeln!(
                out,
                "watchdocker_updates_total{{outcome=\"{}\"}} {n}",
                outcome.as_str()
            );
        }

        family(
            &mut out,
            "watchdocker_registry_requests_total",
            "counter",
            "Requests to registries, by registry and outcome.",
        );
        for (host, s) in &m.registries {
            let host = escape_label(host);
            for (outcome, n) in [
                (RegistryOutcome::Error, s.error),
                (RegistryOutcome::Ok, s.ok),
                (RegistryOutcome::RateLimited, s.rate_limited),
            ] {
                let _ = writeln!(
                    out,
                    "watchdocker_registry_requests_total{{outcome=\"{}\",registry=\"{host}\"}} {n}",
                    outcome.as_str()
                );
            }
        }

        family(
            &mut out,
            "watchdocker_registry_request_duration_seconds",
            "histogram",
            "Duration of registry requests, by registry.",
        );
        for (host, s) in &m.registries {
            let labels = format!("registry=\"{}\"", escape_label(host));
            s.latency.render(
                &mut out,
                "watchdocker_registry_request_duration_seconds",
                &labels,
            );
        }

        family(
            &mut out,
            "watchdocker_registry_ratelimit_remaining",
            "gauge",
            "The last ratelimit-remaining a registry announced.",
        );
        for (host, n) in &m.ratelimit_remaining {
            let _ = writeln!(
                out,
                "watchdocker_registry_ratelimit_remaining{{registry=\"{}\"}} {n}",
                escape_label(host)
            );
        }

        family(
            &mut out,
            "watchdocker_skipped_ticks_total",
            "counter",
            "Scheduler ticks skipped because the job was still running.",
        );
        for (job, n) in &m.skipped_ticks {
            let _ = writeln!(
                out,
                "watchdocker_skipped_ticks_total{{job=\"{}\"}} {n}",
                escape_label(job)
            );
        }

        out
    }
}

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value as the text format requires: backslash, double quote and line feed.
pub fn escape_label(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Formats a sample value the way Prometheus parses it: shortest round-trip decimal (`0.1`, `30`),
/// `+Inf`, `-Inf`, `NaN`.
fn fmt_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "\
# HELP watchdocker_build_info Build information; always 1.
# TYPE watchdocker_build_info gauge
watchdocker_build_info{version=\"0.1.0\"} 1
# HELP watchdocker_scans_total Scans finished, by outcome.
# TYPE watchdocker_scans_total counter
watchdocker_scans_total{outcome=\"failed\"} 0
watchdocker_scans_total{outcome=\"ok\"} 0
# HELP watchdocker_scan_duration_seconds Duration of scans.
# TYPE watchdocker_scan_duration_seconds histogram
watchdocker_scan_duration_seconds_bucket{le=\"0.1\"} 0
watchdocker_scan_duration_seconds_bucket{le=\"0.5\"} 0
watchdocker_scan_duration_seconds_bucket{le=\"1\"} 0
watchdocker_scan_duration_seconds_bucket{le=\"2\"} 0
watchdocker_scan_duration_seconds_bucket{le=\"5\"} 0
watchdocker_scan_duration_seconds_bucket{le=\"10\"} 0
watchdocker_scan_duration_seconds_bucket{le=\"30\"} 0
watchdocker_scan_duration_seconds_bucket{le=\"60\"} 0
watchdocker_scan_duration_seconds_bucket{le=\"+Inf\"} 0
watchdocker_scan_duration_seconds_sum 0
watchdocker_scan_duration_seconds_count 0
# HELP watchdocker_last_scan_timestamp_seconds Unix time when the last scan finished.
# TYPE watchdocker_last_scan_timestamp_seconds gauge
# HELP watchdocker_containers Containers by check status, from the last snapshot.
# TYPE watchdocker_containers gauge
watchdocker_containers{status=\"Error\"} 0
watchdocker_containers{status=\"Skipped\"} 0
watchdocker_containers{status=\"Unknown\"} 0
watchdocker_containers{status=\"UpToDate\"} 0
watchdocker_containers{status=\"UpdateAvailable\"} 0
# HELP watchdocker_container_update_available 1 for each container whose image has a newer build in its registry.
# TYPE watchdocker_container_update_available gauge
# HELP watchdocker_updates_total Container updates finished, by outcome.
# TYPE watchdocker_updates_total counter
watchdocker_updates_total{outcome=\"failed\"} 0
watchdocker_updates_total{outcome=\"rolled_back\"} 0
watchdocker_updates_total{outcome=\"succeeded\"} 0
# HELP watchdocker_registry_requests_total Requests to registries, by registry and outcome.
# TYPE watchdocker_registry_requests_total counter
# HELP watchdocker_registry_request_duration_seconds Duration of registry requests, by registry.
# TYPE watchdocker_registry_request_duration_seconds histogram
# HELP watchdocker_registry_ratelimit_remaining The last ratelimit-remaining a registry announced.
# TYPE watchdocker_registry_ratelimit_remaining gauge
# HELP watchdocker_skipped_ticks_total Scheduler ticks skipped because the job was still running.
# TYPE watchdocker_skipped_ticks_total counter
";

    #[test]
    fn a_fresh_registry_renders_every_family_with_zeroes() {
        assert_eq!(Metrics::new("0.1.0").render(), EMPTY);
    }

    #[test]
    fn a_populated_registry_renders_exactly() {
        let m = Metrics::new("0.1.0");
        m.scan_finished(true, Duration::from_millis(300), 1_764_398_265.5);
        m.scan_finished(false, Duration::from_secs(90), 1_764_398_300.0);
        m.set_container_statuses([
            ("web", "nginx:latest", Status::UpdateAvailable),
            ("db", "postgres:16", Status::UpToDate),
            ("cache", "redis:7", Status::UpdateAvailable),
            ("me", "watch-docker", Status::Skipped),
        ]);
        m.update_finished(UpdateOutcome::Succeeded);
        m.update_finished(UpdateOutcome::Succeeded);
        m.update_finished(UpdateOutcome::RolledBack);
        m.registry_request("ghcr.io", RegistryOutcome::Ok, Duration::from_millis(40));
        m.registry_request("docker.io", RegistryOutcome::Ok, Duration::from_millis(200));
        m.registry_request(
            "docker.io",
            RegistryOutcome::RateLimited,
            Duration::from_secs(3),
        );
        m.set_ratelimit_remaining("docker.io", Some(97));
        m.set_ratelimit_remaining("ghcr.io", None);
        m.skipped_tick("scan");
        m.skipped_tick("scan");

        let want = "\
# HELP watchdocker_build_info Build information; always 1.
# TYPE watchdocker_build_info gauge
watchdocker_build_info{version=\"0.1.0\"} 1
# HELP watchdocker_scans_total Scans finished, by outcome.
# TYPE watchdocker_scans_total counter
watchdocker_scans_total{outcome=\"failed\"} 1
watchdocker_scans_total{outcome=\"ok\"} 1
# HELP watchdocker_scan_duration_seconds Duration of scans.
# TYPE watchdocker_scan_duration_seconds histogram
watchdocker_scan_duration_seconds_bucket{le=\"0.1\"} 0
watchdocker_scan_duration_seconds_bucket{le=\"0.5\"} 1
watchdocker_scan_duration_seconds_bucket{le=\"1\"} 1
watchdocker_scan_duration_seconds_bucket{le=\"2\"} 1
watchdocker_scan_duration_seconds_bucket{le=\"5\"} 1
watchdocker_scan_duration_seconds_bucket{le=\"10\"} 1
watchdocker_scan_duration_seconds_bucket{le=\"30\"} 1
watchdocker_scan_duration_seconds_bucket{le=\"60\"} 1
watchdocker_scan_duration_seconds_bucket{le=\"+Inf\"} 2
watchdocker_scan_duration_seconds_sum 90.3
watchdocker_scan_duration_seconds_count 2
# HELP watchdocker_last_scan_timestamp_seconds Unix time when the last scan finished.
# TYPE watchdocker_last_scan_timestamp_seconds gauge
watchdocker_last_scan_timestamp_seconds 1764398300
# HELP watchdocker_containers Containers by check status, from the last snapshot.
# TYPE watchdocker_containers gauge
watchdocker_containers{status=\"Error\"} 0
watchdocker_containers{status=\"Skipped\"} 1
watchdocker_containers{status=\"Unknown\"} 0
watchdocker_containers{status=\"UpToDate\"} 1
watchdocker_containers{status=\"UpdateAvailable\"} 2
# HELP watchdocker_container_update_available 1 for each container whose image has a newer build in its registry.
# TYPE watchdocker_container_update_available gauge
watchdocker_container_update_available{container=\"cache\",image=\"redis:7\"} 1
watchdocker_container_update_available{container=\"web\",image=\"nginx:latest\"} 1
# HELP watchdocker_updates_total Container updates finished, by outcome.
# TYPE watchdocker_updates_total counter
watchdocker_updates_total{outcome=\"failed\"} 0
watchdocker_updates_total{outcome=\"rolled_back\"} 1
watchdocker_updates_total{outcome=\"succeeded\"} 2
# HELP watchdocker_registry_requests_total Requests to registries, by registry and outcome.
# TYPE watchdocker_registry_requests_total counter
watchdocker_registry_requests_total{outcome=\"error\",registry=\"docker.io\"} 0
watchdocker_registry_requests_total{outcome=\"ok\",registry=\"docker.io\"} 1
watchdocker_registry_requests_total{outcome=\"rate_limited\",registry=\"docker.io\"} 1
watchdocker_registry_requests_total{outcome=\"error\",registry=\"ghcr.io\"} 0
watchdocker_registry_requests_total{outcome=\"ok\",registry=\"ghcr.io\"} 1
watchdocker_registry_requests_total{outcome=\"rate_limited\",registry=\"ghcr.io\"} 0
# HELP watchdocker_registry_request_duration_seconds Duration of registry requests, by registry.
# TYPE watchdocker_registry_request_duration_seconds histogram
watchdocker_registry_request_duration_seconds_bucket{registry=\"docker.io\",le=\"0.05\"} 0
watchdocker_registry_request_duration_seconds_bucket{registry=\"docker.io\",le=\"0.1\"} 0
watchdocker_registry_request_duration_seconds_bucket{registry=\"docker.io\",le=\"0.25\"} 1
watchdocker_registry_request_duration_seconds_bucket{registry=\"docker.io\",le=\"0.5\"} 1
watchdocker_registry_request_duration_seconds_bucket{registry=\"docker.io\",le=\"1\"} 1
watchdocker_registry_request_duration_seconds_bucket{registry=\"docker.io\",le=\"2.5\"} 1
watchdocker_registry_request_duration_seconds_bucket{registry=\"docker.io\",le=\"5\"} 2
watchdocker_registry_request_duration_seconds_bucket{registry=\"docker.io\",le=\"10\"} 2
watchdocker_registry_request_duration_seconds_bucket{registry=\"docker.io\",le=\"+Inf\"} 2
watchdocker_registry_request_duration_seconds_sum{registry=\"docker.io\"} 3.2
watchdocker_registry_request_duration_seconds_count{registry=\"docker.io\"} 2
watchdocker_registry_request_duration_seconds_bucket{registry=\"ghcr.io\",le=\"0.05\"} 1
watchdocker_registry_request_duration_seconds_bucket{registry=\"ghcr.io\",le=\"0.1\"} 1
watchdocker_registry_request_duration_seconds_bucket{registry=\"ghcr.io\",le=\"0.25\"} 1
watchdocker_registry_request_duration_seconds_bucket{registry=\"ghcr.io\",le=\"0.5\"} 1
watchdocker_registry_request_duration_seconds_bucket{registry=\"ghcr.io\",le=\"1\"} 1
watchdocker_registry_request_duration_seconds_bucket{registry=\"ghcr.io\",le=\"2.5\"} 1
watchdocker_registry_request_duration_seconds_bucket{registry=\"ghcr.io\",le=\"5\"} 1
watchdocker_registry_request_duration_seconds_bucket{registry=\"ghcr.io\",le=\"10\"} 1
watchdocker_registry_request_duration_seconds_bucket{registry=\"ghcr.io\",le=\"+Inf\"} 1
watchdocker_registry_request_duration_seconds_sum{registry=\"ghcr.io\"} 0.04
watchdocker_registry_request_duration_seconds_count{registry=\"ghcr.io\"} 1
# HELP watchdocker_registry_ratelimit_remaining The last ratelimit-remaining a registry announced.
# TYPE watchdocker_registry_ratelimit_remaining gauge
watchdocker_registry_ratelimit_remaining{registry=\"docker.io\"} 97
# HELP watchdocker_skipped_ticks_total Scheduler ticks skipped because the job was still running.
# TYPE watchdocker_skipped_ticks_total counter
watchdocker_skipped_ticks_total{job=\"scan\"} 2
";
        let got = m.render();
        assert_eq!(got, want, "\n--- got ---\n{got}");
    }

    #[test]
    fn label_values_are_escaped() {
        for (raw, want) in [
            ("plain", "plain"),
            (r"a\b", r"a\\b"),
            ("say \"hi\"", r#"say \"hi\""#),
            ("two\nlines", r"two\nlines"),
            ("\\\"\n", r#"\\\"\n"#),
            ("tab\tstays", "tab\tstays"),
            ("ünïcode", "ünïcode"),
        ] {
            assert_eq!(escape_label(raw), want, "escape_label({raw:?})");
        }
        let m = Metrics::new("1.0 \"dev\"");
        m.set_container_statuses([("we\"ird\n", r"reg\img", Status::UpdateAvailable)]);
        let text = m.render();
        assert!(text.contains("watchdocker_build_info{version=\"1.0 \\\"dev\\\"\"} 1\n"));
        assert!(text.contains(
            "watchdocker_container_update_available{container=\"we\\\"ird\\n\",image=\"reg\\\\img\"} 1\n"
        ));
    }

    fn available_lines(m: &Metrics) -> Vec<String> {
        m.render()
            .lines()
            .filter(|l| l.starts_with("watchdocker_container_update_available{"))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn update_available_clears_when_the_next_snapshot_no_longer_has_it() {
        let m = Metrics::new("0.1.0");
        m.set_container_statuses([
            ("web", "nginx:latest", Status::UpdateAvailable),
            ("db", "postgres:16", Status::UpdateAvailable),
        ]);
        assert_eq!(
            available_lines(&m),
            [
                "watchdocker_container_update_available{container=\"db\",image=\"postgres:16\"} 1",
                "watchdocker_container_update_available{container=\"web\",image=\"nginx:latest\"} 1",
            ]
        );
        // web was updated and runs the new image; db is gone.
        m.set_container_statuses([("web", "nginx:latest", Status::UpToDate)]);
        assert!(available_lines(&m).is_empty());
        let text = m.render();
        assert!(text.contains("watchdocker_containers{status=\"UpToDate\"} 1\n"));
        assert!(text.contains("watchdocker_containers{status=\"UpdateAvailable\"} 0\n"));
        // An empty snapshot clears the counts too.
        m.set_container_statuses(Vec::<(String, String, Status)>::new());
        assert!(m
            .render()
            .contains("watchdocker_containers{status=\"UpToDate\"} 0\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        // (observations in seconds, expected cumulative counts for 0.1 0.5 1 2 5 10 30 60 +Inf)
        let table: &[(&[f64], [u64; 9])] = &[
            (&[], [0, 0, 0, 0, 0, 0, 0, 0, 0]),
            (&[0.1], [1, 1, 1, 1, 1, 1, 1, 1, 1]),
            (&[0.10001], [0, 1, 1, 1, 1, 1, 1, 1, 1]),
            (&[60.0, 61.0], [0, 0, 0, 0, 0, 0, 0, 1, 2]),
            (&[0.0, 1.5, 1.5, 7.0, 3600.0], [1, 1, 1, 3, 3, 4, 4, 4, 5]),
        ];
        for (observed, want) in table {
            let mut h = Histogram::new(SCAN_BUCKETS);
            for v in *observed {
                h.observe(*v);
            }
            let mut out = String::new();
            h.render(&mut out, "h", "");
            let got: Vec<u64> = out
                .lines()
                .filter(|l| l.starts_with("h_bucket"))
                .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                .collect();
            assert_eq!(got, want, "observations {observed:?}");
            assert!(got.windows(2).all(|w| w[0] <= w[1]));
            assert!(out.ends_with(&format!("h_count {}\n", observed.len())));
        }
    }

    #[test]
    fn ratelimit_remaining_none_removes_the_series() {
        let m = Metrics::new("0.1.0");
        m.set_ratelimit_remaining("docker.io", Some(10));
        assert!(m
            .render()
            .contains("watchdocker_registry_ratelimit_remaining{registry=\"docker.io\"} 10\n"));
        m.set_ratelimit_remaining("docker.io", None);
        assert!(!m.render().contains("ratelimit_remaining{"));
    }

    #[test]
    fn sample_values_use_prometheus_spellings() {
        for (v, want) in [
            (0.1, "0.1"),
            (30.0, "30"),
            (1_764_398_265.5, "1764398265.5"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(fmt_float(v), want);
        }
    }
}
