//! When jobs fire: interval and cron schedules, time zone resolution, jitter, and the per-job clock
//! that keeps a job from overlapping itself (SPEC.md §7).
//!
//! Pure: no I/O and no clock. `now` is always a parameter and randomness is passed in, so the daemon
//! thread owns time and this module is tested in microseconds. It knows nothing of what a job does.
//!
//! Rules it enforces:
//! - a job never overlaps itself: a tick that arrives while it runs is skipped and counted;
//! - the next fire is recomputed from the wall clock after every start, skip and finish (never from
//!   the previous planned time), so a clock jump or an overrun gives one run, never a burst;
//! - DST is croner's (OCPS / Vixie cron semantics, checked by the tests below): a fixed-time job whose
//!   time falls in a spring-forward gap runs at the first instant after the gap on the same day; on
//!   fall-back it runs once, at the first (pre-transition) occurrence; wildcard and step jobs skip
//!   the gap and fire on both passes of a repeated hour, at strictly increasing instants.

use std::fmt;
use std::time::Duration;

use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// The shortest interval honoured. A zero interval would make a job due again the instant it
/// started, spinning the event loop on skipped ticks.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// When a job fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Every `Duration` from the last start (see [`Schedule::next_after`]).
    Interval(Duration),
    /// A validated cron expression evaluated in `tz`. Build it with [`Schedule::cron`] or
    /// [`Schedule::cron_in`]; an invalid `expr` put here by hand never fires.
    Cron { expr: String, tz: TimeZone },
}

impl Schedule {
    /// Parses a cron expression: 5 fields, or 6 with leading seconds; POSIX weekdays (0 and 7 are
    /// Sunday); month and weekday names (`JAN`, `MON`); croner's extensions (`L`, `W`, `#`, `?`,
    /// `@daily`). `tz_name` is an IANA zone name; `None` means UTC.
    pub fn cron(expr: &str, tz_name: Option<&str>) -> Result<Schedule, ScheduleError> {
        let tz = match tz_name {
            None => TimeZone::UTC,
            Some(name) => zone_by_name(name)?,
        };
        Schedule::cron_in(expr, tz)
    }

    /// Like [`Schedule::cron`], in an already resolved zone (from [`resolve_timezone`]).
    pub fn cron_in(expr: &str, tz: TimeZone) -> Result<Schedule, ScheduleError> {
        let expr = expr.trim();
        let cron = parse_cron(expr).map_err(|source| ScheduleError::InvalidCron {
            expr: expr.to_string(),
            source,
        })?;
        // An expression such as `0 0 30 2 *` parses but never matches; say so now rather than
        // leave a job that silently never runs. The probe instant is arbitrary and fixed.
        let probe = Timestamp::UNIX_EPOCH.to_zoned(tz.clone());
        if cron.find_next_occurrence(&probe, false).is_err() {
            return Err(ScheduleError::NeverFires {
                expr: expr.to_string(),
            });
        }
        Ok(Schedule::Cron {
            expr: expr.to_string(),
            tz,
        })
    }

    /// The next fire:
    ///
    /// - `Interval`: `last_start + interval`, but never before `now` (the job overran or the clock
    ///   jumped forward: it fires once, now, without catch-up runs) and never after
    ///   `now + interval` (the clock jumped back). A job that never ran fires at `now + interval`:
    ///   the run at start-up is `scan.initialScanOnStart`, a trigger of its own.
    /// - `Cron`: the first fire strictly after `now`, in the schedule's zone. `last_start` is not
    ///   used: the wall clock decides.
    ///
    /// `None` when there is no next fire (beyond the representable time range).
    pub fn next_after(&self, now: Timestamp, last_start: Option<Timestamp>) -> Option<Timestamp> {
        match self {
            Schedule::Interval(every) => {
                let every = (*every).max(MIN_INTERVAL);
                let latest = now.checked_add(every).ok()?;
                let Some(last) = last_start else {
                    return Some(latest);
                };
                // Past the representable range, the clamp below decides.
                let planned = last.checked_add(every).unwrap_or(latest);
                Some(planned.clamp(now, latest))
            }
            Schedule::Cron { expr, tz } => {
                let cron = parse_cron(expr).ok()?;
                let next = cron
                    .find_next_occurrence(&now.to_zoned(tz.clone()), false)
                    .ok()?
                    .timestamp();
                // croner steps whole seconds from `now` truncated; the guard keeps "strictly
                // after" true whatever the sub-second part of `now`.
                (next > now).then_some(next)
            }
        }
    }

    /// A short human form for logs and `/api/jobs`: `every 10m`, `cron 0 3 * * * (Europe/Berlin)`.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Interval(every) => format!("every {}", format_duration(*every)),
            Schedule::Cron { expr, tz } => {
                format!("cron {expr} ({})", tz.iana_name().unwrap_or("TZ rule"))
            }
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The zone cron schedules use: `configured` (an IANA name; invalid is an error), else the `TZ`
/// environment value the caller read (`Europe/Paris`, `:Europe/Paris`, a `…/zoneinfo/…` path or a
/// POSIX rule such as `CET-1CEST,M3.5.0,M10.5.0/3`), else UTC.
///
/// An unusable `TZ` is not fatal, since the operator did not ask for it in watch-docker's own
/// config: it falls back to UTC and the second value is a warning for the caller to log.
pub fn resolve_timezone(
    configured: Option<&str>,
    tz_env: Option<&str>,
) -> Result<(TimeZone, Option<String>), ScheduleError> {
    if let Some(name) = configured {
        return Ok((zone_by_name(name)?, None));
    }
    let Some(raw) = tz_env else {
        return Ok((TimeZone::UTC, None));
    };
    match zone_from_tz_env(raw) {
        Some(tz) => Ok((tz, None)),
        None => Ok((
            TimeZone::UTC,
            Some(format!(
                "TZ={raw:?} is not a known time zone or POSIX TZ rule; using UTC"
            )),
        )),
    }
}

/// Reads a `TZ` value the way the C library does, minus reading files: the scratch image has no
/// zoneinfo, so a path is reduced to the zone name after `zoneinfo/` and looked up in the bundled
/// database. An empty `TZ` means UTC by long-standing Unix convention.
fn zone_from_tz_env(raw: &str) -> Option<TimeZone> {
    let value = raw.trim();
    let value = value.strip_prefix(':').unwrap_or(value);
    if value.is_empty() {
        return Some(TimeZone::UTC);
    }
    let name = match value.rfind("zoneinfo/") {
        Some(at) => &value[at + "zoneinfo/".len()..],
        None => value,
    };
    TimeZone::get(name).or_else(|_| TimeZone::posix(value)).ok()
}

fn zone_by_name(name: &str) -> Result<TimeZone, ScheduleError> {
    TimeZone::get(name).map_err(|source| ScheduleError::UnknownTimeZone {
        name: name.to_string(),
        source,
    })
}

/// A delay uniform in `[0, max)` from a random `u64` the caller drew (the daemon owns the RNG).
/// `max` zero gives zero.
pub fn jitter(max: Duration, random: u64) -> Duration {
    // Multiply-shift maps the full u64 range onto [0, max) without the bias of a modulo. Capping
    // `max` at u64::MAX nanoseconds (584 years) keeps the product inside u128.
    let max_nanos = max.as_nanos().min(u128::from(u64::MAX));
    let nanos = (u128::from(random) * max_nanos) >> 64;
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 1e9, so it always fits.
    Duration::new(secs, (nanos % 1_000_000_000) as u32)
}

/// What the daemon should do with a tick of a job's timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickOutcome {
    /// Run the job now; the clock marks it running.
    Start,
    /// The job is still running: this fire is skipped, counted, and the next one planned.
    SkippedBecauseRunning,
    /// Nothing is due yet (the timer woke early, or the wall clock moved back).
    NotDue,
}

/// One job's timing: its schedule, whether it runs, how many fires it skipped, its last start and
/// end, and its next fire. Owned by the daemon thread.
#[derive(Debug, Clone)]
pub struct JobClock {
    schedule: Schedule,
    running: bool,
    skipped: u64,
    last_start: Option<Timestamp>,
    last_end: Option<Timestamp>,
    next_fire: Option<Timestamp>,
    /// The latest `now` seen, to notice the wall clock moving back.
    seen: Timestamp,
}

impl JobClock {
    /// A job that has not run yet; its first fire follows [`Schedule::next_after`] with no last start.
    pub fn new(schedule: Schedule, now: Timestamp) -> Self {
        let next_fire = schedule.next_after(now, None);
        JobClock {
            schedule,
            running: false,
            skipped: 0,
            last_start: None,
            last_end: None,
            next_fire,
            seen: now,
        }
    }

    /// Whether the next fire is at or before `now`.
    pub fn due(&self, now: Timestamp) -> bool {
        self.next_fire.is_some_and(|at| at <= now)
    }

    /// The timer fired (or the loop woke): start the job, skip a fire that lands while it runs, or
    /// do nothing. After a start or a skip the next fire is already in the future, so the loop
    /// never spins on a long job.
    pub fn on_tick(&mut self, now: Timestamp) -> TickOutcome {
        self.observe(now);
        if !self.due(now) {
            return TickOutcome::NotDue;
        }
        if self.running {
            self.skipped = self.skipped.saturating_add(1);
            self.next_fire = self.plan(now);
            return TickOutcome::SkippedBecauseRunning;
        }
        self.start(now);
        TickOutcome::Start
    }

    /// Starts the job outside its schedule (start-up scan, `POST /api/scan`). `false` when it is
    /// already running: the caller reports the running job instead. Not counted as a skip.
    pub fn try_start(&mut self, now: Timestamp) -> bool {
        self.observe(now);
        if self.running {
            return false;
        }
        self.start(now);
        true
    }

    /// The job ended (whatever its outcome): it no longer runs and the next fire is recomputed from
    /// the wall clock.
    pub fn on_finished(&mut self, now: Timestamp) {
        self.observe(now);
        self.running = false;
        self.last_end = Some(now);
        self.next_fire = self.plan(now);
    }

    /// Pushes the planned fire back by `delay` (`scan.jitter`, drawn with [`jitter`]). Forgotten at
    /// the next recompute, so it never accumulates.
    pub fn delay_next(&mut self, delay: Duration) {
        if let Some(at) = self.next_fire {
            self.next_fire = at.checked_add(delay).ok().or(Some(at));
        }
    }

    /// How long the event loop may sleep before this job needs a tick: zero when already due,
    /// `None` when the job never fires again.
    pub fn until_next(&self, now: Timestamp) -> Option<Duration> {
        let at = self.next_fire?;
        Some(Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO))
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn next_fire(&self) -> Option<Timestamp> {
        self.next_fire
    }

    /// Fires skipped because the job was still running, since the clock was made.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    pub fn running(&self) -> bool {
        self.running
    }

    pub fn last_start(&self) -> Option<Timestamp> {
        self.last_start
    }

    /// When the last run ended; `None` until one has ended.
    pub fn last_end(&self) -> Option<Timestamp> {
        self.last_end
    }

    /// Duration of the last finished run. `None` while the first run is going, or if the clock
    /// moved back across the run.
    pub fn last_duration(&self) -> Option<Duration> {
        let (start, end) = (self.last_start?, self.last_end?);
        Duration::try_from(end.duration_since(start)).ok()
    }

    fn start(&mut self, now: Timestamp) {
        self.running = true;
        self.last_start = Some(now);
        self.last_end = None;
        self.next_fire = self.plan(now);
    }

    /// The next fire from the wall clock. While running, it lies strictly ahead of `now` (as if the
    /// job had started now) so that a long run meets each later fire once, as a counted skip.
    fn plan(&self, now: Timestamp) -> Option<Timestamp> {
        let from = if self.running {
            Some(now)
        } else {
            self.last_start
        };
        self.schedule.next_after(now, from)
    }

    /// A wall clock that moved back would leave the planned fire far ahead (a day for a daily
    /// cron): replan from the new time.
    fn observe(&mut self, now: Timestamp) {
        if now < self.seen {
            self.next_fire = self.plan(now);
        }
        self.seen = now;
    }
}

/// A schedule that cannot be built. Each names what was given.
#[derive(Debug)]
pub enum ScheduleError {
    InvalidCron {
        expr: String,
        source: CronError,
    },
    /// The expression is valid but matches no date (`0 0 30 2 *`).
    NeverFires {
        expr: String,
    },
    UnknownTimeZone {
        name: String,
        source: jiff::Error,
    },
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleError::InvalidCron { expr, .. } => write!(
                f,
                "cron expression {expr:?} is invalid (5 fields, or 6 with leading seconds; \
                 example: 0 3 * * *)"
            ),
            ScheduleError::NeverFires { expr } => {
                write!(f, "cron expression {expr:?} never matches a date")
            }
            ScheduleError::UnknownTimeZone { name, .. } => write!(
                f,
                "time zone {name:?} is unknown (examples: UTC, Europe/Berlin, America/New_York)"
            ),
        }
    }
}

impl std::error::Error for ScheduleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ScheduleError::InvalidCron { source, .. } => Some(source),
            ScheduleError::NeverFires { .. } => None,
            ScheduleError::UnknownTimeZone { source, .. } => Some(source),
        }
    }
}

/// SPEC.md §4 cron: 5 fields or 6 with leading seconds. croner would also take a trailing year
/// field; refusing it keeps the accepted language the documented one.
fn parse_cron(expr: &str) -> Result<Cron, CronError> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
}

/// `90s` → `1m30s`, `600s` → `10m`, `2d`: the config's duration syntax, largest units first.
fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return if d.is_zero() {
            "0s".to_string()
        } else {
            format!("{}ms", d.as_millis())
        };
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse()
            .unwrap_or_else(|e| panic!("bad test timestamp {s}: {e}"))
    }

    /// One cron case: the first fire of `expr` in `zone` strictly after `now`. Instants carry their
    /// UTC offset, so DST expectations are explicit.
    fn next(expr: &str, zone: &str, now: &str, expected: &str) {
        let schedule =
            Schedule::cron(expr, Some(zone)).unwrap_or_else(|e| panic!("{expr} in {zone}: {e}"));
        let got = schedule.next_after(ts(now), None);
        assert_eq!(
            got,
            Some(ts(expected)),
            "{expr} in {zone} after {now}: got {}",
            got.map(|t| t.to_zoned(TimeZone::get(zone).unwrap()).to_string())
                .unwrap_or_default()
        );
    }

    /// Successive fires of `expr` starting after `now`.
    fn fires(expr: &str, zone: &str, now: &str, count: usize) -> Vec<Timestamp> {
        let schedule = Schedule::cron(expr, Some(zone)).unwrap();
        let mut at = ts(now);
        let mut out = Vec::new();
        for _ in 0..count {
            at = schedule.next_after(at, None).unwrap();
            out.push(at);
        }
        out
    }

    #[test]
    #[rustfmt::skip] // one case a line
    fn cron_next_fire() {
        // Month ends and leap days.
        next("0 0 31 * *", "UTC", "2025-04-15T00:00:00Z", "2025-05-31T00:00:00Z");
        next("0 0 31 * *", "UTC", "2025-05-31T00:00:00Z", "2025-07-31T00:00:00Z");
        next("0 12 29 2 *", "UTC", "2025-03-01T00:00:00Z", "2028-02-29T12:00:00Z");
        next("0 0 L * *", "UTC", "2024-02-10T00:00:00Z", "2024-02-29T00:00:00Z");
        // Strictly after `now`, whatever its sub-second part.
        next("0 3 * * *", "UTC", "2025-06-01T03:00:00Z", "2025-06-02T03:00:00Z");
        next("0 3 * * *", "UTC", "2025-06-01T03:00:00.5Z", "2025-06-02T03:00:00Z");
        next("0 3 * * *", "UTC", "2025-06-01T02:59:59.9Z", "2025-06-01T03:00:00Z");
        // 6 fields: leading seconds.
        next("*/15 * * * * *", "UTC", "2025-06-01T10:00:00Z", "2025-06-01T10:00:15Z");
        next("*/15 * * * * *", "UTC", "2025-06-01T10:00:46Z", "2025-06-01T10:01:00Z");
        next("30 0 3 * * *", "UTC", "2025-06-01T04:00:00Z", "2025-06-02T03:00:30Z");
        // POSIX weekdays: 2025-06-07 is a Saturday; 0 and 7 are Sunday.
        next("0 9 * * 1-5", "UTC", "2025-06-07T12:00:00Z", "2025-06-09T09:00:00Z");
        next("0 9 * * 0", "UTC", "2025-06-07T12:00:00Z", "2025-06-08T09:00:00Z");
        next("0 9 * * 7", "UTC", "2025-06-07T12:00:00Z", "2025-06-08T09:00:00Z");
        next("0 9 * * 5-7", "UTC", "2025-06-02T12:00:00Z", "2025-06-06T09:00:00Z");
        // Names.
        next("0 9 * * MON", "UTC", "2025-06-07T12:00:00Z", "2025-06-09T09:00:00Z");
        next("0 9 * * sun", "UTC", "2025-06-07T12:00:00Z", "2025-06-08T09:00:00Z");
        next("0 0 1 JAN *", "UTC", "2025-06-07T12:00:00Z", "2026-01-01T00:00:00Z");
        // The zone decides the wall clock.
        next("0 3 * * *", "Europe/Berlin", "2025-06-01T00:00:00Z", "2025-06-01T03:00:00+02:00");
        next("0 3 * * *", "Asia/Kolkata", "2025-06-01T00:00:00Z", "2025-06-02T03:00:00+05:30");
    }

    #[test]
    #[rustfmt::skip] // one case a line
    fn cron_dst_spring_forward() {
        // Europe/Berlin 2025-03-30: 02:00 CET -> 03:00 CEST; 02:30 does not exist.
        // A fixed-time job in the gap runs at the first instant after it, that day.
        next("30 2 * * *", "Europe/Berlin", "2025-03-30T00:00:00+01:00", "2025-03-30T03:00:00+02:00");
        next("30 2 * * *", "Europe/Berlin", "2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00");
        next("0 2 * * *", "Europe/Berlin", "2025-03-30T01:00:00+01:00", "2025-03-30T03:00:00+02:00");
        // Wildcard and step jobs skip the missing hour.
        next("30 * * * *", "Europe/Berlin", "2025-03-30T01:40:00+01:00", "2025-03-30T03:30:00+02:00");
        next("*/30 * * * *", "Europe/Berlin", "2025-03-30T01:30:00+01:00", "2025-03-30T03:00:00+02:00");
        // America/New_York 2025-03-09: 02:00 EST -> 03:00 EDT.
        next("30 2 * * *", "America/New_York", "2025-03-09T00:00:00-05:00", "2025-03-09T03:00:00-04:00");
        next("30 2 * * *", "America/New_York", "2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00");
        next("*/30 * * * *", "America/New_York", "2025-03-09T01:30:00-05:00", "2025-03-09T03:00:00-04:00");
    }

    #[test]
    #[rustfmt::skip] // one case a line
    fn cron_dst_fall_back_fixed_time_runs_once() {
        // Europe/Berlin 2025-10-26: 03:00 CEST -> 02:00 CET; 02:00-02:59 happens twice.
        next("30 2 * * *", "Europe/Berlin", "2025-10-26T00:00:00+02:00", "2025-10-26T02:30:00+02:00");
        next("30 2 * * *", "Europe/Berlin", "2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00");
        // America/New_York 2025-11-02: 02:00 EDT -> 01:00 EST; 01:00-01:59 happens twice.
        next("30 1 * * *", "America/New_York", "2025-11-02T00:00:00-04:00", "2025-11-02T01:30:00-04:00");
        next("30 1 * * *", "America/New_York", "2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00");
        // Planned from inside the repeated hour (a restart, a finished run): still not a second run.
        next("30 1 * * *", "America/New_York", "2025-11-02T01:45:00-04:00", "2025-11-03T01:30:00-05:00");
        next("30 1 * * *", "America/New_York", "2025-11-02T01:15:00-05:00", "2025-11-03T01:30:00-05:00");
        next("30 2 * * *", "Europe/Berlin", "2025-10-26T02:15:00+01:00", "2025-10-27T02:30:00+01:00");
        // A job that does not fall in the repeated hour is unaffected.
        next("30 1 * * *", "Europe/Berlin", "2025-10-25T12:00:00+02:00", "2025-10-26T01:30:00+02:00");
    }

    #[test]
    fn cron_dst_fall_back_step_job_strictly_increasing() {
        for (zone, start, expected) in [
            (
                "Europe/Berlin",
                "2025-10-26T01:00:00+02:00",
                [
                    "2025-10-26T01:30:00+02:00",
                    "2025-10-26T02:00:00+02:00",
                    "2025-10-26T02:30:00+02:00",
                    "2025-10-26T02:00:00+01:00",
                    "2025-10-26T02:30:00+01:00",
                    "2025-10-26T03:00:00+01:00",
                ],
            ),
            (
                "America/New_York",
                "2025-11-02T00:00:00-04:00",
                [
                    "2025-11-02T00:30:00-04:00",
                    "2025-11-02T01:00:00-04:00",
                    "2025-11-02T01:30:00-04:00",
                    "2025-11-02T01:00:00-05:00",
                    "2025-11-02T01:30:00-05:00",
                    "2025-11-02T02:00:00-05:00",
                ],
            ),
        ] {
            let got = fires("*/30 * * * *", zone, start, expected.len());
            let expected: Vec<Timestamp> = expected.iter().map(|s| ts(s)).collect();
            assert_eq!(got, expected, "{zone}");
            assert!(got.windows(2).all(|w| w[0] < w[1]), "{zone}: {got:?}");
        }
    }

    #[test]
    fn cron_errors_name_their_subject() {
        for (expr, zone, wanted) in [
            ("0 3 * *", None, "\"0 3 * *\""),
            ("61 * * * *", None, "\"61 * * * *\""),
            ("0 3 * * * * 2030", None, "\"0 3 * * * * 2030\""),
            ("every day", None, "\"every day\""),
            ("", None, "\"\""),
            ("0 0 30 2 *", None, "never matches"),
            ("0 3 * * *", Some("Mars/Olympus"), "\"Mars/Olympus\""),
        ] {
            match Schedule::cron(expr, zone) {
                Ok(s) => panic!("{expr:?} {zone:?} accepted as {s:?}"),
                Err(e) => assert!(e.to_string().contains(wanted), "{expr:?}: {e}"),
            }
        }
        let err = Schedule::cron("0 3 * *", None).unwrap_err();
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn describe() {
        for (schedule, wanted) in [
            (Schedule::Interval(Duration::from_secs(600)), "every 10m"),
            (Schedule::Interval(Duration::from_secs(5400)), "every 1h30m"),
            (
                Schedule::Interval(Duration::from_secs(2 * 86_400)),
                "every 2d",
            ),
            (Schedule::Interval(Duration::from_secs(90)), "every 1m30s"),
            (
                Schedule::cron("0 3 * * *", None).unwrap(),
                "cron 0 3 * * * (UTC)",
            ),
            (
                Schedule::cron(" 0 3 * * * ", Some("Europe/Berlin")).unwrap(),
                "cron 0 3 * * * (Europe/Berlin)",
            ),
        ] {
            assert_eq!(schedule.describe(), wanted);
        }
    }

    #[test]
    fn interval_next_fire() {
        let every = Schedule::Interval(Duration::from_secs(600));
        let now = ts("2025-06-01T10:00:00Z");
        for (last_start, expected, why) in [
            (
                None,
                "2025-06-01T10:10:00Z",
                "never ran: one interval from now",
            ),
            (
                Some("2025-06-01T09:55:00Z"),
                "2025-06-01T10:05:00Z",
                "from the last start",
            ),
            (
                Some("2025-06-01T09:40:00Z"),
                "2025-06-01T10:00:00Z",
                "overran: now, once",
            ),
            (
                Some("2025-05-01T00:00:00Z"),
                "2025-06-01T10:00:00Z",
                "clock jumped ahead: now",
            ),
            (
                Some("2025-06-02T10:00:00Z"),
                "2025-06-01T10:10:00Z",
                "clock went back: capped",
            ),
        ] {
            let got = every.next_after(now, last_start.map(ts));
            assert_eq!(got, Some(ts(expected)), "{why}");
        }
        // A zero interval cannot make a job due again the instant it starts.
        let zero = Schedule::Interval(Duration::ZERO);
        assert_eq!(
            zero.next_after(now, Some(now)),
            Some(ts("2025-06-01T10:00:01Z"))
        );
    }

    #[test]
    fn timezone_resolution() {
        let name = |configured: Option<&str>, env: Option<&str>| {
            let (tz, warning) = resolve_timezone(configured, env).unwrap();
            (tz.iana_name().map(str::to_string), warning.is_some())
        };
        let some = |s: &str| (Some(s.to_string()), false);
        assert_eq!(name(None, None), some("UTC"));
        assert_eq!(
            name(Some("Europe/Berlin"), Some("Asia/Tokyo")),
            some("Europe/Berlin")
        );
        assert_eq!(name(None, Some("Asia/Tokyo")), some("Asia/Tokyo"));
        assert_eq!(name(None, Some(":Europe/Paris")), some("Europe/Paris"));
        assert_eq!(
            name(None, Some(":/usr/share/zoneinfo/America/New_York")),
            some("America/New_York")
        );
        assert_eq!(name(None, Some("")), some("UTC"));
        assert_eq!(name(None, Some("Nowhere/Land")), (Some("UTC".into()), true));
        // A POSIX rule has no name but the right offsets.
        let (tz, warning) = resolve_timezone(None, Some("CET-1CEST,M3.5.0,M10.5.0/3")).unwrap();
        assert!(warning.is_none());
        let summer = ts("2025-07-01T00:00:00Z");
        assert_eq!(tz.to_offset(summer).seconds(), 7200);
        // A bad configured zone is the operator's error, not a fallback.
        let err = resolve_timezone(Some("Nowhere/Land"), None).unwrap_err();
        assert!(err.to_string().contains("\"Nowhere/Land\""), "{err}");
    }

    #[test]
    fn jitter_bounds() {
        let max = Duration::from_secs(30);
        for (random, wanted) in [
            (0, Duration::ZERO),
            (u64::MAX / 2 + 1, Duration::from_secs(15)),
            (u64::MAX / 4 + 1, Duration::from_millis(7500)),
        ] {
            assert_eq!(jitter(max, random), wanted);
        }
        assert!(jitter(max, u64::MAX) < max);
        assert_eq!(jitter(Duration::ZERO, u64::MAX), Duration::ZERO);
        assert!(jitter(Duration::from_nanos(1), u64::MAX) < Duration::from_nanos(1));
        assert!(jitter(Duration::MAX, u64::MAX) < Duration::MAX);
    }

    fn clock(every_secs: u64, now: &str) -> JobClock {
        JobClock::new(Schedule::Interval(Duration::from_secs(every_secs)), ts(now))
    }

    #[test]
    fn job_clock_skips_and_counts_ticks_while_running() {
        let mut job = clock(60, "2025-06-01T10:00:00Z");
        assert_eq!(job.next_fire(), Some(ts("2025-06-01T10:01:00Z")));
        assert_eq!(job.on_tick(ts("2025-06-01T10:00:59Z")), TickOutcome::NotDue);
        assert_eq!(
            job.until_next(ts("2025-06-01T10:00:59Z")),
            Some(Duration::from_secs(1))
        );

        assert_eq!(job.on_tick(ts("2025-06-01T10:01:00Z")), TickOutcome::Start);
        assert!(job.running());
        assert_eq!(job.next_fire(), Some(ts("2025-06-01T10:02:00Z")));

        // The run lasts 2.5 intervals: each fire in between is skipped once, never piled up.
        assert_eq!(
            job.on_tick(ts("2025-06-01T10:02:00Z")),
            TickOutcome::SkippedBecauseRunning
        );
        assert_eq!(job.next_fire(), Some(ts("2025-06-01T10:03:00Z")));
        assert_eq!(job.on_tick(ts("2025-06-01T10:02:30Z")), TickOutcome::NotDue);
        assert_eq!(
            job.on_tick(ts("2025-06-01T10:03:05Z")),
            TickOutcome::SkippedBecauseRunning
        );
        assert_eq!(job.skipped(), 2);
        assert!(
            !job.try_start(ts("2025-06-01T10:03:10Z")),
            "no overlap from the API either"
        );
        assert_eq!(
            job.skipped(),
            2,
            "a refused manual start is not a skipped tick"
        );

        // It overran: the next fire is now, once, then one interval after that start.
        job.on_finished(ts("2025-06-01T10:03:30Z"));
        assert!(!job.running());
        assert_eq!(job.last_duration(), Some(Duration::from_secs(150)));
        assert_eq!(job.next_fire(), Some(ts("2025-06-01T10:03:30Z")));
        assert_eq!(
            job.until_next(ts("2025-06-01T10:03:30Z")),
            Some(Duration::ZERO)
        );
        assert_eq!(job.on_tick(ts("2025-06-01T10:03:30Z")), TickOutcome::Start);
        job.on_finished(ts("2025-06-01T10:03:40Z"));
        assert_eq!(job.next_fire(), Some(ts("2025-06-01T10:04:30Z")));
    }

    #[test]
    fn job_clock_recomputes_cron_from_the_wall_clock() {
        let daily = Schedule::cron("0 3 * * *", None).unwrap();
        let mut job = JobClock::new(daily, ts("2025-06-01T12:00:00Z"));
        assert_eq!(job.next_fire(), Some(ts("2025-06-02T03:00:00Z")));

        // The wall clock jumped five days ahead: one run, not five.
        assert_eq!(job.on_tick(ts("2025-06-07T12:00:00Z")), TickOutcome::Start);
        job.on_finished(ts("2025-06-07T12:05:00Z"));
        assert_eq!(job.next_fire(), Some(ts("2025-06-08T03:00:00Z")));
        assert!(!job.due(ts("2025-06-07T12:05:00Z")));

        // The wall clock went back two days: replanned from the new time, not a three-day wait.
        assert_eq!(job.on_tick(ts("2025-06-05T12:00:00Z")), TickOutcome::NotDue);
        assert_eq!(job.next_fire(), Some(ts("2025-06-06T03:00:00Z")));
    }

    #[test]
    fn job_clock_manual_start_and_jitter() {
        let mut job = clock(600, "2025-06-01T10:00:00Z");
        // Start-up scan: runs at once, and the schedule counts from it.
        assert!(job.try_start(ts("2025-06-01T10:00:00Z")));
        job.on_finished(ts("2025-06-01T10:00:20Z"));
        assert_eq!(job.next_fire(), Some(ts("2025-06-01T10:10:00Z")));
        job.delay_next(jitter(Duration::from_secs(30), u64::MAX / 2 + 1));
        assert_eq!(job.next_fire(), Some(ts("2025-06-01T10:10:15Z")));
        assert_eq!(job.on_tick(ts("2025-06-01T10:10:10Z")), TickOutcome::NotDue);
        assert_eq!(job.on_tick(ts("2025-06-01T10:10:15Z")), TickOutcome::Start);
        assert_eq!(job.last_start(), Some(ts("2025-06-01T10:10:15Z")));
        assert_eq!(job.last_end(), None, "cleared while a run is going");
    }
}
