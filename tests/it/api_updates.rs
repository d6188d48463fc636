//! The update endpoints and the `update` command through the built binary, against the real
//! engine and registry (SPEC §6, §8): the admin token, body validation, dry runs, moving a
//! container to another reference, in-place updates answered at once (202 + job) or at the end
//! (`?wait=true`), the conflict of two updates of one container, a failing update rolled back
//! (`50002`), manual rollback, stop/start/remove, and batch runs that leave compose containers
//! alone.

use crate::daemon::{exclusive, id_of, image_of, running, App, Receiver, Serve, BIN};
use crate::fixtures::{
    self, unique, wait_for, ContainerBuilder, ContainerGuard, Image, ImageGuard,
};
use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const TOKEN: &str = "T0ken-for-tests";

/// Settings of every daemon here: manual updates only, and only this test's containers.
fn serve_for(run: &str, extra: &[(&str, &str)]) -> Serve {
    let only = format!("wdtest.run={run}");
    let mut sets: Vec<(&str, &str)> = vec![
        ("server.token", TOKEN),
        ("update.enabled", "false"),
        ("scan.interval", "1h"),
        ("policy.onlyLabels", &only),
    ];
    sets.extend_from_slice(extra);
    Serve::start(&sets)
}

fn app_container(app: &App, run: &str) -> ContainerGuard {
    ContainerBuilder::new(&app.reference("latest"))
        .label("wdtest.run", run)
        .run()
}

fn post(serve: &Serve, path: &str, body: Option<&str>) -> (u16, Value) {
    serve.call("POST", path, Some(TOKEN), body)
}

/// v2 that becomes healthy only a few seconds after it starts, so an update of it takes a while.
fn slow_image() -> ImageGuard {
    Image::build(&format!("{}:slow", unique("src")))
        .file("/version", "slow")
        .healthcheck(
            "test -f /ready",
            Duration::from_millis(300),
            40,
            Duration::ZERO,
        )
        .cmd(&[
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM INT; (sleep 3; touch /ready) & while :; do sleep 3600 & wait $!; done",
        ])
        .create()
}

/// v2 whose process exits at once.
fn exiting_image() -> ImageGuard {
    Image::build(&format!("{}:exits", unique("src")))
        .file("/version", "exits")
        .cmd(&["/bin/sh", "-c", "exit 3"])
        .create()
}

/// `watch-docker <args>` with an empty config file and quick update settings.
fn cli(args: &[&str]) -> Output {
    let dir = fixtures::TempDir::new("cli");
    let config = dir.write("config.yaml", "");
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&config)
        .args([
            "--set",
            "update.settleTime=1s",
            "--set",
            "update.stopTimeout=5s",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run watch-docker")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn api_token_validation_dry_run_move_rollback_and_lifecycle() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let _one = exclusive();
    let run = unique("run");
    let mut app = App::new(&run);
    let (v1_id, _) = app.push_and_pull(App::plain("1"), "latest");
    let (v2_id, _) = app.push(App::plain("2"), "v2");
    let ctr = app_container(&app, &run);
    let name = ctr.name().to_string();

    // Without a configured token, mutations are refused with a way out.
    let open = Serve::start(&[
        ("update.enabled", "false"),
        ("scan.interval", "1h"),
        ("scan.initialScanOnStart", "false"),
    ]);
    open.wait_container(&name, "listed", Duration::from_secs(20), |_| true);
    let (status, v) = open.call(
        "POST",
        &format!("/api/containers/{name}/update"),
        None,
        None,
    );
    assert_eq!((status, v["code"].as_i64()), (403, Some(40300)), "{v}");
    assert!(
        v["msg"]
            .as_str()
            .is_some_and(|m| m.contains("server.token")),
        "{v}"
    );
    drop(open);

    let serve = serve_for(&run, &[]);
    serve.wait_container(&name, "checked", Duration::from_secs(20), |v| {
        v["status"] == "UpToDate"
    });
    let update = format!("/api/containers/{name}/update");
    for token in [None, Some("wrong")] {
        let (status, v) = serve.call("POST", &update, token, None);
        assert_eq!((status, v["code"].as_i64()), (401, Some(40100)), "{v}");
    }

    // A dry run plans and changes nothing.
    let (status, v) = post(&serve, &format!("{update}?dryRun=true&wait=true"), None);
    assert_eq!(status, 200, "{v}");
    let result = &v["data"]["results"][0];
    assert_eq!(result["outcome"], "planned", "{v}");
    assert!(
        result["steps"].as_array().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    assert_eq!(id_of(&name).as_deref(), Some(ctr.id()));
    assert_eq!(image_of(&name).as_deref(), Some(v1_id.as_str()));

    // Body validation.
    let (status, v) = post(&serve, &update, Some(r#"{"image": ""}"#));
    assert_eq!((status, v["code"].as_i64()), (400, Some(40001)), "{v}");
    let (status, v) = post(&serve, &update, Some(r#"{"image": "Bad::ref"}"#));
    assert_eq!((status, v["code"].as_i64()), (400, Some(40000)), "{v}");
    assert_eq!(id_of(&name).as_deref(), Some(ctr.id()));

    // Moving to another tag goes through the safe sequence and leaves the new reference.
    let body = format!(r#"{{"image": "{}"}}"#, app.reference("v2"));
    let (status, v) = post(&serve, &format!("{update}?wait=true"), Some(&body));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["results"][0]["outcome"], "updated", "{v}");
    let moved = fixtures::inspect("container", &name).expect("container after the move");
    assert_eq!(moved["Config"]["Image"], app.reference("v2").as_str());
    assert_eq!(moved["Image"], v2_id.as_str());
    assert_eq!(moved["State"]["Running"], true);
    assert_ne!(moved["Id"], ctr.id());
    assert_eq!(
        moved["Config"]["Labels"]["watchdocker.previous-image"],
        v1_id.as_str()
    );
    assert_eq!(fixtures::containers_named(&name), vec![name.clone()]);
    let view = serve.wait_container(&name, "moved", Duration::from_secs(20), |v| {
        v["image"] == app.reference("v2").as_str()
    });
    assert_eq!(view["previousImage"], v1_id.as_str(), "{view}");

    // Rollback: back to the previous image through the same sequence.
    let (status, v) = post(
        &serve,
        &format!("/api/containers/{name}/rollback?wait=true"),
        None,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["results"][0]["outcome"], "updated", "{v}");
    assert_eq!(image_of(&name).as_deref(), Some(v1_id.as_str()));
    assert!(running(&name));
    assert_ne!(id_of(&name), moved["Id"].as_str().map(str::to_string));
    assert_eq!(fixtures::containers_named(&name), vec![name.clone()]);

    // Stop, start, remove.
    let (status, v) = post(&serve, &format!("/api/containers/{name}/stop"), None);
    assert_eq!(status, 200, "{v}");
    assert!(!running(&name));
    let (status, v) = post(&serve, &format!("/api/containers/{name}/start"), None);
    assert_eq!(status, 200, "{v}");
    assert!(running(&name));
    serve.wait_container(&name, "listed again", Duration::from_secs(20), |v| {
        v["running"] == true
    });
    let (status, v) = serve.call(
        "DELETE",
        &format!("/api/containers/{name}"),
        Some(TOKEN),
        None,
    );
    assert_eq!((status, v["code"].as_i64()), (409, Some(40900)), "{v}");
    assert!(running(&name));
    let (status, v) = serve.call(
        "DELETE",
        &format!("/api/containers/{name}?force=true"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{v}");
    assert!(id_of(&name).is_none(), "removed");
}

#[test]
fn api_update_in_place_async_with_conflict_then_with_wait() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let _one = exclusive();
    let run = unique("run");
    let mut app = App::new(&run);
    app.push_and_pull(App::plain("1"), "latest");
    let slow = slow_image();
    let v3 = App::plain("3");
    let ctr = app_container(&app, &run);
    let name = ctr.name().to_string();
    let serve = serve_for(&run, &[("scan.cacheTTL", "1s")]);
    serve.wait_container(&name, "checked", Duration::from_secs(20), |v| {
        v["status"] == "UpToDate"
    });

    // No wait: 202 and a job id; a second request meanwhile is a conflict.
    let (slow_id, _) = app.push(slow, "latest");
    let update = format!("/api/containers/{name}/update");
    let (status, v) = post(&serve, &update, None);
    assert_eq!(status, 202, "{v}");
    let job_id = v["data"]["jobId"].as_str().expect("jobId").to_string();
    let (status, v) = post(&serve, &update, None);
    assert_eq!((status, v["code"].as_i64()), (409, Some(40900)), "{v}");
    let job = wait_for("the update job to end", Duration::from_secs(60), || {
        let j = serve.job(&job_id);
        (j["running"] == false).then_some(j)
    });
    assert_eq!(job["outcome"], "succeeded", "{job}");
    assert_eq!(job["kind"], "update", "{job}");
    assert_eq!(job["trigger"], "api", "{job}");
    assert_eq!(job["results"][0]["outcome"], "updated", "{job}");
    assert_eq!(job["counts"]["updated"], 1, "{job}");
    let view = serve.wait_container(&name, "UpToDate", Duration::from_secs(20), |v| {
        v["status"] == "UpToDate" && v["imageId"] == slow_id.as_str()
    });
    let second_id = view["id"].as_str().expect("id").to_string();
    assert_ne!(second_id, ctr.id());
    assert_eq!(id_of(&name).as_deref(), Some(second_id.as_str()));

    // With wait: the finished job record, and the status is current at once.
    let (v3_id, _) = app.push(v3, "latest");
    let (status, v) = post(&serve, &format!("{update}?wait=true"), None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["results"][0]["outcome"], "updated", "{v}");
    assert_eq!(v["data"]["results"][0]["toImage"], v3_id.as_str(), "{v}");
    assert_eq!(v["data"]["running"], false, "{v}");
    let view = serve.container(&name).expect("listed after the update");
    assert_eq!(view["status"], "UpToDate", "{view}");
    assert_eq!(view["imageId"], v3_id.as_str(), "{view}");
    assert_ne!(view["id"], second_id.as_str());
    assert_eq!(id_of(&name), view["id"].as_str().map(str::to_string));
}

#[test]
fn api_failed_update_is_rolled_back_with_50002_and_cli_exit_codes() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let _one = exclusive();
    let run = unique("run");
    let mut app = App::new(&run);
    let (v1_id, _) = app.push_and_pull(App::plain("1"), "latest");
    let exits = exiting_image();
    let v2 = App::plain("2");
    let ctr = app_container(&app, &run);
    let name = ctr.name().to_string();

    let hook = Receiver::start();
    let url = hook.url();
    let serve = serve_for(
        &run,
        &[("scan.cacheTTL", "1s"), ("notify.webhooks[0].url", &url)],
    );
    serve.wait_container(&name, "checked", Duration::from_secs(20), |v| {
        v["status"] == "UpToDate"
    });
    app.push(exits, "latest");
    let (status, v) = post(
        &serve,
        &format!("/api/containers/{name}/update?wait=true"),
        None,
    );
    assert_eq!((status, v["code"].as_i64()), (500, Some(50002)), "{v}");
    assert_eq!(v["data"]["rolledBack"], true, "{v}");
    assert_eq!(v["data"]["results"][0]["outcome"], "rolledBack", "{v}");
    assert_eq!(
        id_of(&name).as_deref(),
        Some(ctr.id()),
        "the old container is back"
    );
    assert!(running(&name));
    assert_eq!(image_of(&name).as_deref(), Some(v1_id.as_str()));
    assert_eq!(fixtures::containers_named(&name), vec![name.clone()]);
    let view = serve.container(&name).expect("listed");
    assert_eq!(view["status"], "Error", "{view}");
    assert!(view["error"].is_string(), "{view}");
    let job_id = v["data"]["id"].as_str().expect("the job's id");
    let job = serve.job(job_id);
    assert_eq!(job["outcome"], "failed", "{job}");
    assert!(job["lastError"].is_string(), "{job}");
    assert_eq!(job["counts"]["rolledBack"], 1, "{job}");
    let failed = wait_for("the failed webhook", Duration::from_secs(15), || {
        let f = hook.events("failed", &name);
        (!f.is_empty()).then_some(f)
    });
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["rolledBack"], true, "{failed:?}");
    assert!(failed[0]["error"].is_string(), "{failed:?}");
    assert!(hook.events("updated", &name).is_empty());
    drop(serve);

    // The command line: a dry run plans (0); a failing update is rolled back (4).
    let out = cli(&["update", "--dry-run", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("planned"),
        "{}",
        text(&out)
    );
    assert_eq!(id_of(&name).as_deref(), Some(ctr.id()));
    let out = cli(&["update", &name]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rolledBack"),
        "{}",
        text(&out)
    );
    assert_eq!(id_of(&name).as_deref(), Some(ctr.id()));
    assert!(running(&name));

    // And a good image is applied (0).
    let (v2_id, _) = app.push(v2, "latest");
    let out = cli(&["update", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("updated"),
        "{}",
        text(&out)
    );
    assert_eq!(image_of(&name).as_deref(), Some(v2_id.as_str()));
    assert_ne!(id_of(&name).as_deref(), Some(ctr.id()));
    assert!(running(&name));
}

#[test]
fn api_batch_run_updates_plain_containers_and_reports_compose_ones() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let _one = exclusive();
    let run = unique("run");
    let mut app = App::new(&run);
    let (v1_id, _) = app.push_and_pull(App::plain("1"), "latest");
    let v2 = App::plain("2");
    let plain = app_container(&app, &run);
    let compose = ContainerBuilder::new(&app.reference("latest"))
        .label("wdtest.run", &run)
        .label("com.docker.compose.project", "wdtest-proj")
        .label("com.docker.compose.service", "web")
        .run();
    let serve = serve_for(&run, &[("scan.cacheTTL", "1s")]);
    for c in [&plain, &compose] {
        serve.wait_container(c.name(), "checked", Duration::from_secs(20), |v| {
            v["status"] == "UpToDate"
        });
    }
    let (v2_id, _) = app.push(v2, "latest");
    let (status, v) = post(&serve, "/api/scan?wait=true&force=true", None);
    assert_eq!(status, 200, "{v}");
    for c in [&plain, &compose] {
        let view = serve.container(c.name()).expect("listed");
        assert_eq!(view["status"], "UpdateAvailable", "{view}");
    }
    let view = serve.container(compose.name()).expect("listed");
    assert_eq!(view["updatePolicy"], "notify", "{view}");
    assert_eq!(
        serve.container(plain.name()).expect("listed")["updatePolicy"],
        "auto"
    );

    let (status, v) = post(&serve, "/api/updates/run?wait=true", None);
    assert_eq!(status, 200, "{v}");
    let results = v["data"]["results"].as_array().cloned().unwrap_or_default();
    let ours: Vec<&Value> = results
        .iter()
        .filter(|r| r["container"] == plain.name() || r["container"] == compose.name())
        .collect();
    assert_eq!(ours.len(), 1, "only the plain container: {v}");
    assert_eq!(ours[0]["container"], plain.name());
    assert_eq!(ours[0]["outcome"], "updated");

    let view = serve.container(plain.name()).expect("listed");
    assert_eq!(view["status"], "UpToDate", "{view}");
    assert_eq!(view["imageId"], v2_id.as_str());
    assert_ne!(view["id"], plain.id());
    let view = serve.container(compose.name()).expect("listed");
    assert_eq!(view["status"], "UpdateAvailable", "{view}");
    assert_eq!(view["id"], compose.id());
    assert_eq!(image_of(compose.name()).as_deref(), Some(v1_id.as_str()));
}
