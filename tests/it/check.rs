//! `watch-docker check` end to end: the built binary against the real engine and a real registry,
//! its JSON and table output, and the exit codes of SPEC.md §2 (0, 3 with --fail-on-update,
//! 4 with --fail-on-error, 1 for an unknown name).

use crate::fixtures::{self, free_port, unique, ContainerBuilder, Image, Registry};
use serde_json::Value;
use std::process::{Command, Output};

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_watch-docker"))
        .arg("check")
        .args([
            "--set",
            "registry.timeout=2s",
            "--set",
            "registry.maxRetries=0",
        ])
        .args(args)
        .output()
        .expect("run watch-docker check")
}

fn statuses(out: &Output) -> Vec<Value> {
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|e| {
            panic!(
                "check --json printed no JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn by_name<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list:?}"))
}

#[test]
fn check_reports_statuses_and_exit_codes() {
    if !fixtures::require_engine() || !fixtures::require_registry_tools() {
        return;
    }
    let prefix = unique("check");
    let registry = Registry::start();
    let v1 = Image::build(&format!("{prefix}-img:v1"))
        .file("/etc/version", "1")
        .create();
    let pushed = v1.push_to(&registry, &format!("{prefix}/app:latest"));
    pushed.pull_back();
    let app = ContainerBuilder::new(pushed.reference())
        .name(&format!("{prefix}-app"))
        .run();
    let skipped = ContainerBuilder::new(pushed.reference())
        .name(&format!("{prefix}-skipped"))
        .label("watchdocker.skip", "true")
        .run();

    // Up to date: exit 0 even with --fail-on-update.
    let out = check(&["--json", "--fail-on-update", app.name(), skipped.name()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let list = statuses(&out);
    assert_eq!(list.len(), 2, "only the named containers: {list:?}");
    let a = by_name(&list, app.name());
    assert_eq!(a["status"], "UpToDate", "{a}");
    assert_eq!(a["currentDigest"], pushed.digest());
    assert_eq!(a["remoteDigest"], pushed.digest());
    assert_eq!(a["id"], app.id());
    assert!(a["lastCheckedAt"].is_string(), "{a}");
    let s = by_name(&list, skipped.name());
    assert_eq!(s["status"], "Skipped");
    assert_eq!(s["skipped"], true);
    assert_eq!(s["skipReason"], "label watchdocker.skip=true");

    // The tag moves: UpdateAvailable, exit 3 with --fail-on-update, 0 without.
    let v2 = Image::build(&format!("{prefix}-img:v2"))
        .file("/etc/version", "2")
        .create();
    let pushed2 = v2.push_to(&registry, &format!("{prefix}/app:latest"));
    let out = check(&["--json", "--fail-on-update", app.name()]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let list = statuses(&out);
    let a = by_name(&list, app.name());
    assert_eq!(a["status"], "UpdateAvailable", "{a}");
    assert_eq!(a["currentDigest"], pushed.digest());
    assert_eq!(a["remoteDigest"], pushed2.digest());
    let out = check(&[app.name()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(app.name()) && l.contains("UpdateAvailable")),
        "{table}"
    );

    // A registry that does not answer: Error with a message, exit 4 with --fail-on-error, and the
    // container of the healthy registry in the same scan is still checked.
    let dead = format!("127.0.0.1:{}/{prefix}/gone:latest", free_port());
    fixtures::docker_ok(&["tag", v1.name_tag(), &dead]);
    let orphan = ContainerBuilder::new(&dead)
        .name(&format!("{prefix}-orphan"))
        .run();
    let out = check(&[
        "--json",
        "--fail-on-error",
        "--set",
        "policy.skipLocalBuild=false",
        orphan.name(),
        app.name(),
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let list = statuses(&out);
    let o = by_name(&list, orphan.name());
    assert_eq!(o["status"], "Error", "{o}");
    assert!(
        o["error"]
            .as_str()
            .is_some_and(|e| e.contains("gone:latest")),
        "the error names the reference: {o}"
    );
    assert_eq!(by_name(&list, app.name())["status"], "UpdateAvailable");
    let _ = fixtures::docker(&["rmi", &dead]);

    // An unknown name: exit 1 and a message naming it.
    let out = check(&[&format!("{prefix}-nope")]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{prefix}-nope")));
}
