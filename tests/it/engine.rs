//! The Engine API client against the real engine (`DOCKER_HOST`, else /var/run/docker.sock).
//! Without an engine these tests print a note and pass, unless `WATCH_IT_REQUIRE_ENGINE=1`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use watch_docker::docker::{query, Engine, API_MAX};

fn host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

/// A client for the engine, or None (with a note) when there is none and none is required.
fn engine_with(cap: Option<(u32, u32)>) -> Option<Engine> {
    let engine = Engine::new(&host(), cap, Duration::from_secs(30)).expect("valid DOCKER_HOST");
    match engine.ping() {
        Ok(()) => Some(engine),
        Err(e) if std::env::var("WATCH_IT_REQUIRE_ENGINE").as_deref() == Ok("1") => {
            panic!("WATCH_IT_REQUIRE_ENGINE=1 but the engine is unreachable: {e}")
        }
        Err(e) => {
            eprintln!("note: no Docker engine, skipping: {e}");
            None
        }
    }
}

fn engine() -> Option<Engine> {
    engine_with(None)
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:08x}", std::process::id())
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"));
    assert!(out.status.success(), "docker {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes what a test created, even when it fails.
enum Cleanup {
    Container(String),
    Image(String),
    Dir(PathBuf),
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let args: Vec<&str> = match self {
            Cleanup::Container(name) => vec!["rm", "-f", name],
            Cleanup::Image(name) => vec!["rmi", "-f", name],
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
                return;
            }
        };
        let _ = Command::new("docker")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// An image holding only busybox (Debian's busybox-static), made with `docker import`.
fn busybox_image(name: &str) -> Cleanup {
    let dir = std::env::temp_dir().join(unique("wdtest-engine-rootfs"));
    let dir_guard = Cleanup::Dir(dir.clone());
    std::fs::create_dir_all(dir.join("bin")).expect("rootfs dir");
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("copy /bin/busybox");
    let tar = dir.join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&tar)
        .arg("bin")
        .status()
        .expect("tar");
    assert!(status.success(), "tar failed");
    let guard = Cleanup::Image(name.to_string());
    docker(&["import", &tar.to_string_lossy(), name]);
    drop(dir_guard);
    guard
}

#[test]
fn engine_ping_version_info() {
    let Some(engine) = engine() else { return };
    let version = engine.version().expect("version");
    assert!(!version.version.is_empty());
    assert!(!version.os.is_empty());
    let info = engine.info().expect("info");
    assert!(!info.id.is_empty());
    assert!(!info.server_version.is_empty());
    assert!(!info.driver.is_empty());
    // Every engine treats loopback registries as insecure.
    assert!(
        info.registry_config
            .insecure_registry_cidrs
            .iter()
            .any(|c| c.starts_with("127.")),
        "{:?}",
        info.registry_config
    );
    let _ = info.uses_containerd_store();
}

#[test]
fn engine_negotiates_min_of_engine_max_and_cap() {
    let Some(engine) = engine() else { return };
    let version = engine.version().expect("version");
    let engine_max = watch_docker::docker::parse_api_version(&version.api_version)
        .expect("engine reports ApiVersion");
    assert_eq!(
        engine.negotiate().expect("negotiate"),
        engine_max.min(API_MAX)
    );
    assert_eq!(engine.api_version(), Some(engine_max.min(API_MAX)));

    let Some(capped) = engine_with(Some((1, 40))) else {
        return;
    };
    let min = watch_docker::docker::parse_api_version(&version.min_api_version).unwrap_or((1, 0));
    match capped.negotiate() {
        Ok(v) => assert_eq!(v, engine_max.min((1, 40))),
        // Docker 29+ refuses anything below 1.44: the cap must be refused, clearly.
        Err(e) => {
            assert!(min > (1, 40), "unexpected refusal: {e}");
            assert!(e.to_string().contains("1.40"), "{e}");
        }
    }
}

#[test]
fn engine_lists_containers_and_images() {
    let Some(engine) = engine() else { return };
    let all = engine.list_containers(true).expect("list all containers");
    let running = engine
        .list_containers(false)
        .expect("list running containers");
    // Other tests run in parallel, so only check what must hold for any snapshot.
    assert!(running.iter().all(|c| !c.id.is_empty()));
    assert!(all.iter().all(|c| !c.id.is_empty()));
    let images = engine.list_images().expect("list images");
    assert!(images.iter().all(|i| !i.id.is_empty()));
}

#[test]
fn engine_inspects_a_running_container() {
    let Some(engine) = engine() else { return };
    let name = unique("wdtest-engine");
    let image = format!("{name}:v1");
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_sub(1))
        .unwrap_or(0);
    let _image_guard = busybox_image(&image);
    let _container_guard = Cleanup::Container(name.clone());
    let id = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "wdtest=engine",
        &image,
        "/bin/busybox",
        "sleep",
        "300",
    ]);

    let by_name = engine.inspect_container(&name).expect("inspect by name");
    let (by_id, raw) = engine
        .inspect_container_with_raw(&id)
        .expect("inspect by id");
    assert_eq!(by_name, by_id);
    assert_eq!(by_id.id, id);
    assert_eq!(by_id.name(), name);
    assert_eq!(by_id.config.image, image);
    assert_eq!(
        by_id.config.labels.get("wdtest").map(String::as_str),
        Some("engine")
    );
    assert_eq!(by_id.state.status, "running");
    assert!(by_id.state.running);
    assert!(by_id.state.health.is_none(), "no healthcheck configured");
    assert_eq!(raw["Id"], Value::String(id.clone()));
    assert_eq!(
        engine
            .inspect_container_raw(&format!("/{name}"))
            .expect("raw")["Id"],
        raw["Id"]
    );

    let listed = engine.list_containers(false).expect("list containers");
    let summary = listed
        .iter()
        .find(|c| c.id == id)
        .expect("listed while running");
    assert_eq!(summary.name(), name);
    assert_eq!(summary.image_id, by_id.image);

    let inspected = engine
        .inspect_image(&image)
        .expect("inspect image by reference");
    assert_eq!(inspected.id, by_id.image);
    assert_eq!(inspected.repo_tags, std::slice::from_ref(&image));
    assert!(inspected.repo_digests.is_empty(), "never pushed or pulled");
    assert!(!inspected.os.is_empty());
    assert_eq!(
        engine.inspect_image(&by_id.image).expect("by id").id,
        inspected.id
    );
    let images = engine.list_images().expect("list images");
    let listed = images
        .iter()
        .find(|i| i.id == inspected.id)
        .expect("image listed");
    assert!(listed.repo_tags.contains(&image));

    // Body-less POSTs: 204, then JSON from /wait, then 204 and 304 from start.
    let kill: Option<Value> = engine
        .post_json(&format!("/containers/{id}/kill"), None)
        .expect("kill");
    assert!(kill.is_none());
    let waited: Option<Value> = engine
        .post_json(&format!("/containers/{id}/wait"), None)
        .expect("wait");
    assert!(waited.expect("wait answers JSON")["StatusCode"].is_i64());
    assert!(engine.inspect_container(&id).expect("inspect").state.status == "exited");
    let started = engine
        .request("POST", &format!("/containers/{id}/start"), None, &[], None)
        .expect("start");
    assert_eq!(started.status, 204);
    let again = engine
        .request("POST", &format!("/containers/{id}/start"), None, &[], None)
        .expect("start again");
    assert_eq!(again.status, 304, "already started");

    // A finite event stream (`until` in the past ends it) carrying this container's events.
    let until = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
        .unwrap_or_default();
    let filters = format!(r#"{{"container":["{id}"]}}"#);
    let path = format!(
        "/events{}",
        query(&[
            ("since", &since.to_string()),
            ("until", &until),
            ("filters", &filters)
        ])
    );
    let actions: Vec<String> = engine
        .stream("GET", &path, &[], Duration::from_secs(30))
        .expect("events")
        .map(|e| e.expect("event"))
        .filter_map(|e| e["Action"].as_str().map(str::to_string))
        .collect();
    for action in ["create", "start", "kill", "die"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} missing in {actions:?}"
        );
    }
}

#[test]
fn engine_missing_things_are_not_found() {
    let Some(engine) = engine() else { return };
    let name = unique("wdtest-engine-missing");
    let e = engine.inspect_container(&name).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert_eq!(e.status(), Some(404));
    assert!(e.to_string().contains(&name), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("inspect container {name}: ")),
        "{e}"
    );
    let e = engine.inspect_image(&format!("{name}:v1")).unwrap_err();
    assert!(e.is_not_found(), "{e}");
}
