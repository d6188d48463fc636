//! Job records: what `GET /api/jobs` and `GET /api/jobs/:id` show for the scheduled scan and update
//! jobs and for the runs started through the API. Pure bookkeeping owned by the daemon thread; the
//! records are copied into each snapshot.

use serde::Serialize;
use std::collections::VecDeque;

/// How many finished API-started runs are kept for `GET /api/jobs/:id`.
const KEEP_RUNS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Scan,
    Update,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Schedule,
    Api,
    Startup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobOutcome {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub checked: usize,
    pub updates_found: usize,
    pub updated: usize,
    pub failed: usize,
    pub rolled_back: usize,
}

/// The result of one container in an update run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResult {
    pub container: String,
    pub id: String,
    /// `updated`, `rolledBack`, `failed`, `unchanged`, `planned`.
    pub outcome: String,
    pub error: Option<String>,
    pub from_image: Option<String>,
    pub to_image: Option<String>,
    /// How long this container's update took (pull to proven or rolled back).
    pub duration_ms: u64,
    /// Dry run: the steps that would be taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    /// `scan`, `update` (the scheduled jobs) or `run-<n>` (one run started through the API).
    pub id: String,
    pub kind: JobKind,
    pub trigger: Trigger,
    /// `every 10m`, `cron 0 3 * * * (UTC)`, `after every scheduled scan`; None for API runs.
    pub schedule: Option<String>,
    pub next_run: Option<String>,
    pub running: bool,
    pub last_start: Option<String>,
    pub last_end: Option<String>,
    pub duration_ms: Option<u64>,
    pub outcome: Option<JobOutcome>,
    pub skipped_ticks: u64,
    pub counts: Counts,
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<ContainerResult>>,
}

impl JobRecord {
    pub fn new(id: impl Into<String>, kind: JobKind, trigger: Trigger) -> Self {
        JobRecord {
            id: id.into(),
            kind,
            trigger,
            schedule: None,
            next_run: None,
            running: false,
            last_start: None,
            last_end: None,
            duration_ms: None,
            outcome: None,
            skipped_ticks: 0,
            counts: Counts::default(),
            last_error: None,
            results: None,
        }
    }

    pub fn start(&mut self, now: &str) {
        self.running = true;
        self.last_start = Some(now.to_string());
    }

    /// Records the end of a run. `error` makes the outcome `failed`.
    pub fn finish(
        &mut self,
        now: &str,
        duration_ms: u64,
        counts: Counts,
        error: Option<String>,
        results: Option<Vec<ContainerResult>>,
    ) {
        self.running = false;
        self.last_end = Some(now.to_string());
        self.duration_ms = Some(duration_ms);
        self.outcome = Some(if error.is_some() {
            JobOutcome::Failed
        } else {
            JobOutcome::Succeeded
        });
        self.counts = counts;
        self.last_error = error;
        if results.is_some() {
            self.results = results;
        }
    }
}

/// The scheduled jobs and the recent API runs.
#[derive(Debug, Clone)]
pub struct JobBook {
    pub scan: JobRecord,
    pub update: Option<JobRecord>,
    runs: VecDeque<JobRecord>,
    next_run: u64,
}

impl JobBook {
    pub fn new(scan_schedule: String, update_schedule: Option<String>) -> Self {
        let mut scan = JobRecord::new("scan", JobKind::Scan, Trigger::Schedule);
        scan.schedule = Some(scan_schedule);
        let update = update_schedule.map(|s| {
            let mut u = JobRecord::new("update", JobKind::Update, Trigger::Schedule);
            u.schedule = Some(s);
            u
        });
        JobBook {
            scan,
            update,
            runs: VecDeque::new(),
            next_run: 1,
        }
    }

    /// A new API (or startup) run; returns its id.
    pub fn new_run(&mut self, kind: JobKind, trigger: Trigger, now: &str) -> String {
        let id = format!("run-{}", self.next_run);
        self.next_run += 1;
        let mut r = JobRecord::new(id.clone(), kind, trigger);
        r.start(now);
        self.runs.push_back(r);
        // Forget the oldest finished runs; running ones are always kept.
        while self.runs.len() > KEEP_RUNS {
            match self.runs.iter().position(|r| !r.running) {
                Some(i) => {
                    self.runs.remove(i);
                }
                None => break,
            }
        }
        id
    }

    pub fn get(&self, id: &str) -> Option<&JobRecord> {
        match id {
            "scan" => Some(&self.scan),
            "update" => self.update.as_ref(),
            _ => self.runs.iter().find(|r| r.id == id),
        }
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut JobRecord> {
        match id {
            "scan" => Some(&mut self.scan),
            "update" => self.update.as_mut(),
            _ => self.runs.iter_mut().find(|r| r.id == id),
        }
    }

    /// The scheduled jobs first, then the runs, newest first.
    pub fn all(&self) -> Vec<JobRecord> {
        let mut out = vec![self.scan.clone()];
        out.extend(self.update.clone());
        out.extend(self.runs.iter().rev().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_numbered_kept_and_found() {
        let mut b = JobBook::new("every 10m".into(), None);
        let a = b.new_run(JobKind::Scan, Trigger::Api, "t0");
        let c = b.new_run(JobKind::Update, Trigger::Api, "t1");
        assert_eq!((a.as_str(), c.as_str()), ("run-1", "run-2"));
        assert!(b.get("run-1").unwrap().running);
        b.get_mut("run-1")
            .unwrap()
            .finish("t2", 5, Counts::default(), Some("boom".into()), None);
        let r = b.get("run-1").unwrap();
        assert_eq!(
            (r.running, r.outcome, r.last_error.as_deref()),
            (false, Some(JobOutcome::Failed), Some("boom"))
        );
        let ids: Vec<String> = b.all().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["scan", "run-2", "run-1"]);
        assert!(b.get("update").is_none());
    }

    #[test]
    fn old_finished_runs_are_forgotten_but_running_ones_kept() {
        let mut b = JobBook::new("every 10m".into(), Some("cron 0 3 * * *".into()));
        let first = b.new_run(JobKind::Update, Trigger::Api, "t");
        for _ in 0..KEEP_RUNS + 5 {
            let id = b.new_run(JobKind::Scan, Trigger::Api, "t");
            b.get_mut(&id)
                .unwrap()
                .finish("t", 1, Counts::default(), None, None);
        }
        assert!(b.get(&first).is_some_and(|r| r.running));
        assert_eq!(b.all().len(), 2 + KEEP_RUNS);
    }
}
