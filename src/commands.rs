//! The one-shot commands (`list`, `config`, `healthcheck`) and the dispatch to the daemon (`serve`).
//! Each returns the process exit code of SPEC.md §2; errors are printed as one line with their causes.

use crate::cli::Command;
use crate::config::{self, Config, Loaded};
use crate::discovery::{self, Discovery};
use crate::docker::Engine;
use std::error::Error;
use std::fmt::Write as _;
use std::time::Duration;

pub const EXIT_OK: u8 = 0;
pub const EXIT_RUN: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UPDATES: u8 = 3;
pub const EXIT_FAILED: u8 = 4;

/// Runs a command (not help/version, which need no config) and returns its exit code.
pub fn run(command: &Command, loaded: &Loaded) -> u8 {
    let cfg = &loaded.config;
    let result = match command {
        Command::Serve => crate::daemon::run(loaded.clone())
            .map(|_| EXIT_OK)
            .map_err(Into::into),
        Command::List { json } => list(cfg, *json),
        Command::Config => {
            if let Some(p) = &loaded.source {
                eprintln!("# from {}", p.display());
            }
            print!("{}", config::render_effective(cfg));
            Ok(EXIT_OK)
        }
        Command::Healthcheck => healthcheck(cfg),
        Command::Check {
            json,
            fail_on_update,
            fail_on_error,
            names,
        } => check(cfg, *json, *fail_on_update, *fail_on_error, names),
        Command::Update {
            dry_run,
            all,
            names,
        } => update(cfg, *dry_run, *all, names),
        Command::Help | Command::Version => Ok(EXIT_OK),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("watch-docker: {}", error_chain(e.as_ref()));
            EXIT_RUN
        }
    }
}

/// `err: cause: cause`, without repeating a cause already in the message.
pub fn error_chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            let _ = write!(s, ": {c}");
        }
        src = cause.source();
    }
    s
}

pub fn engine(cfg: &Config) -> Result<Engine, Box<dyn Error>> {
    Ok(Engine::new(
        &cfg.docker.host,
        cfg.docker.api_version,
        Duration::from_secs(30),
    )?)
}

fn list(cfg: &Config, json: bool) -> Result<u8, Box<dyn Error>> {
    let engine = engine(cfg)?;
    let ids: Vec<String> = engine
        .list_containers(true)?
        .into_iter()
        .map(|c| c.id)
        .collect();
    let self_id = discovery::detect_self(&ids.iter().map(String::as_str).collect::<Vec<_>>());
    let d = discovery::discover(&engine, cfg.docker.include_stopped, self_id.as_deref())?;
    if json {
        let out = serde_json::json!({ "containers": list_views(&d, cfg), "images": d.images });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", list_table(&d));
    }
    Ok(EXIT_OK)
}

/// The containers as `list --json` prints them: what `GET /api/containers` shows before any
/// check, update policy included (a compose container is `notify` unless allowed).
pub fn list_views(d: &Discovery, cfg: &Config) -> Vec<crate::state::ContainerView> {
    d.containers
        .iter()
        .map(|c| crate::daemon::view(c, None, cfg))
        .collect()
}

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

/// The human table of `list`: containers, then images.
pub fn list_table(d: &Discovery) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "STATE".into(),
        "IMAGE".into(),
        "IMAGE ID".into(),
        "DIGEST".into(),
        "COMPOSE".into(),
    ]];
    for c in &d.containers {
        let digest = c
            .repo_digests
            .first()
            .and_then(|d| d.split_once('@'))
            .map(|(_, d)| short(d).to_string())
            .unwrap_or_else(|| "-".into());
        let compose = match (&c.compose_project, &c.compose_service) {
            (Some(p), Some(s)) => format!("{p}/{s}"),
            (Some(p), None) => p.clone(),
            _ => "-".into(),
        };
        let name = if c.is_self {
            format!("{} (self)", c.name)
        } else {
            c.name.clone()
        };
        rows.push([
            name,
            c.state.clone(),
            c.image.clone(),
            short(&c.image_id).to_string(),
            digest,
            compose,
        ]);
    }
    let mut out = table(&rows);
    out.push('\n');
    let mut irows = vec![[
        "IMAGE ID".to_string(),
        "TAGS".into(),
        "SIZE".into(),
        "USED BY".into(),
    ]];
    for i in &d.images {
        irows.push([
            short(&i.id).to_string(),
            if i.repo_tags.is_empty() {
                "<none>".into()
            } else {
                i.repo_tags.join(",")
            },
            format!("{:.1}MB", i.size as f64 / 1e6),
            if i.containers.is_empty() {
                "-".into()
            } else {
                i.containers.join(",")
            },
        ]);
    }
    out.push_str(&table(&irows));
    out
}

/// Left-aligned columns separated by two spaces.
pub fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The address a local client uses to reach our own API, from `server.addr`.
pub fn local_api_addr(addr: &str) -> String {
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (h, p),
        None => ("", addr),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1".to_string(),
        "::" => "[::1]".to_string(),
        h if h.contains(':') => format!("[{h}]"),
        h => h.to_string(),
    };
    format!("{host}:{port}")
}

fn healthcheck(cfg: &Config) -> Result<u8, Box<dyn Error>> {
    let url = format!("http://{}/healthz", local_api_addr(&cfg.server.addr));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(3)))
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into();
    let resp = agent
        .get(&url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    if resp.status() == 200 {
        Ok(EXIT_OK)
    } else {
        Err(format!("GET {url}: answered {}", resp.status()).into())
    }
}

/// Picks the named containers (name, full id or unique id prefix); every one when `names` is empty.
fn select<'a>(
    containers: &'a [crate::model::ContainerInfo],
    names: &[String],
) -> Result<Vec<&'a crate::model::ContainerInfo>, Box<dyn Error>> {
    if names.is_empty() {
        return Ok(containers.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            let n = n.trim_start_matches('/');
            containers
                .iter()
                .find(|c| c.name == n || c.id == n)
                .or_else(|| {
                    let mut m = containers.iter().filter(|c| c.id.starts_with(n));
                    match (m.next(), m.next()) {
                        (Some(c), None) => Some(c),
                        _ => None,
                    }
                })
                .ok_or_else(|| format!("no container {n:?} among the discovered containers").into())
        })
        .collect()
}

fn check(
    cfg: &Config,
    json: bool,
    fail_on_update: bool,
    fail_on_error: bool,
    names: &[String],
) -> Result<u8, Box<dyn Error>> {
    let engine = engine(cfg)?;
    let d = crate::daemon::discover_now(&engine, cfg.docker.include_stopped)?;
    let chosen: Vec<crate::model::ContainerInfo> =
        select(&d.containers, names)?.into_iter().cloned().collect();
    let scanner = crate::daemon::build_scanner(cfg, &engine, None)?;
    let (checks, _) = scanner.scan(&chosen, &jiff::Timestamp::now().to_string());
    let views: Vec<crate::state::ContainerView> = chosen
        .iter()
        .map(|c| crate::daemon::view(c, checks.iter().find(|k| k.container_id == c.id), cfg))
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else {
        print!("{}", check_table(&views));
    }
    let errors = views
        .iter()
        .any(|v| v.status == crate::model::Status::Error);
    let updates = views
        .iter()
        .any(|v| v.status == crate::model::Status::UpdateAvailable);
    Ok(if fail_on_error && errors {
        EXIT_FAILED
    } else if fail_on_update && updates {
        EXIT_UPDATES
    } else {
        EXIT_OK
    })
}

/// The human table of `check`.
pub fn check_table(views: &[crate::state::ContainerView]) -> String {
    let digest = |d: &Option<String>| {
        d.as_deref()
            .map(|d| short(d).to_string())
            .unwrap_or_else(|| "-".into())
    };
    let mut rows = vec![[
        "NAME".to_string(),
        "STATUS".into(),
        "IMAGE".into(),
        "CURRENT".into(),
        "REMOTE".into(),
        "POLICY".into(),
        "NOTE".into(),
    ]];
    for v in views {
        rows.push([
            v.name.clone(),
            v.status.as_str().to_string(),
            v.image.clone(),
            digest(&v.current_digest),
            digest(&v.remote_digest),
            serde_json::to_value(v.update_policy)
                .ok()
                .and_then(|p| p.as_str().map(str::to_string))
                .unwrap_or_default(),
            v.error
                .clone()
                .or_else(|| v.skip_reason.clone())
                .or_else(|| v.update_policy_reason.clone())
                .unwrap_or_default(),
        ]);
    }
    table(&rows)
}

fn update(cfg: &Config, dry_run: bool, all: bool, names: &[String]) -> Result<u8, Box<dyn Error>> {
    let engine = engine(cfg)?;
    let scanner = std::sync::Arc::new(std::sync::OnceLock::new());
    let env = crate::daemon::JobEnv::new(cfg, engine.clone(), scanner, None);
    // A crash of an earlier run is mended before anything else is touched.
    let startup = env.run(&crate::daemon::Work::Startup { scan: false }, false);
    if let Some(e) = startup.error {
        return Err(e.into());
    }
    let out = if all {
        env.run(
            &crate::daemon::Work::Batch {
                dry_run,
                avoid: vec![],
            },
            true,
        )
    } else {
        let d = crate::daemon::discover_now(&engine, true)?;
        let reqs = select(&d.containers, names)?
            .into_iter()
            .map(|c| crate::updater::UpdateRequest {
                container: c.id.clone(),
                image: None,
                rollback: false,
                dry_run,
            })
            .collect();
        env.run(&crate::daemon::Work::Update(reqs), true)
    };
    if let Some(e) = &out.error {
        return Err(e.clone().into());
    }
    let mut rows = vec![["NAME".to_string(), "RESULT".into(), "DETAIL".into()]];
    for r in &out.results {
        let detail = match (&r.steps, &r.error) {
            (Some(steps), _) => steps.join("; "),
            (None, Some(e)) => e.clone(),
            (None, None) => format!(
                "{} -> {}",
                r.from_image.as_deref().map(short).unwrap_or("-"),
                r.to_image.as_deref().map(short).unwrap_or("-")
            ),
        };
        rows.push([r.container.clone(), r.outcome.clone(), detail]);
    }
    if out.results.is_empty() {
        println!("nothing to update");
    } else {
        print!("{}", table(&rows));
    }
    let failed = out
        .results
        .iter()
        .any(|r| r.outcome == "failed" || r.outcome == "rolledBack");
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_api_addr_for_each_bind_form() {
        assert_eq!(local_api_addr(":8080"), "127.0.0.1:8080");
        assert_eq!(local_api_addr("0.0.0.0:9"), "127.0.0.1:9");
        assert_eq!(local_api_addr("[::]:9"), "[::1]:9");
        assert_eq!(local_api_addr("127.0.0.2:9"), "127.0.0.2:9");
        assert_eq!(local_api_addr("[::1]:9"), "[::1]:9");
        assert_eq!(local_api_addr("localhost:9"), "localhost:9");
    }

    #[test]
    fn list_views_carry_the_update_policy() {
        let mut c = crate::model::ContainerInfo {
            id: "a".repeat(64),
            name: "web".into(),
            image: "registry.test/app:1".into(),
            image_id: "sha256:01".into(),
            repo_tags: vec![],
            repo_digests: vec![],
            labels: Default::default(),
            state: "running".into(),
            running: true,
            created: "2026-01-01T00:00:00Z".into(),
            compose_project: Some("proj".into()),
            compose_service: Some("web".into()),
            platform: Default::default(),
            is_self: false,
        };
        c.labels
            .insert(crate::labels::COMPOSE_PROJECT.into(), "proj".into());
        let d = Discovery {
            containers: vec![c],
            images: vec![],
        };
        let mut cfg = Config::default();
        let v = &list_views(&d, &cfg)[0];
        assert_eq!(v.update_policy, crate::model::UpdatePolicy::Notify);
        assert!(v.update_policy_reason.is_some());
        assert_eq!(v.status, crate::model::Status::Unknown);
        cfg.update.allow_compose_update = true;
        let v = &list_views(&d, &cfg)[0];
        assert_eq!(v.update_policy, crate::model::UpdatePolicy::Auto);
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&[
            ["A".to_string(), "BB".into()],
            ["ccc".to_string(), "d".into()],
        ]);
        assert_eq!(t, "A    BB\nccc  d\n");
    }
}
