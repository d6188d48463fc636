//! Discovery against the real engine and registry (SPEC §4): containers with published ports,
//! env, labels, a named volume and a user network, running an image pushed to the registry and
//! pulled back, are reported field by field, identically, by `watch-docker list --json` and by
//! `GET /api/containers` of a running `serve`; lookups by full id, id prefix and name; the image
//! list with sizes and users; stopped containers only with `docker.includeStopped`.
//!
//! Every expected value comes from `docker inspect` or from what the test itself set, so a field
//! that discovery loses or garbles fails here.

use crate::daemon::{exclusive, App, Serve, BIN};
use crate::fixtures::{self, docker_ok, unique, wait_for, ContainerBuilder, Network, Volume};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `watch-docker list --json` with an empty config file and `sets`; the parsed output.
fn list_json(sets: &[(&str, &str)]) -> Value {
    let dir = fixtures::TempDir::new("list");
    let config = dir.write("config.yaml", "");
    let mut cmd = Command::new(BIN);
    cmd.args(["list", "--json", "--config"]).arg(&config);
    for (k, v) in sets {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    let out = cmd
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run watch-docker list");
    assert!(
        out.status.success(),
        "list --json: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "list --json is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn find<'a>(list: &'a Value, id: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|c| c["id"] == id)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// What a container is expected to look like, from the engine and from the test's own settings.
struct Expect {
    id: String,
    name: String,
    image: String,
    labels: BTreeMap<String, String>,
    compose: (Option<&'static str>, Option<&'static str>),
    running: bool,
    state: &'static str,
    repo_digests: Vec<String>,
}

/// Checks one container view field by field against `docker inspect` and `want`.
fn assert_container(view: &Value, want: &Expect, source: &str) {
    let ctx = format!("{source}: {view:#}");
    let c = fixtures::inspect("container", &want.id).expect("container inspect");
    let image_id = c["Image"].as_str().expect("Image").to_string();
    let img = fixtures::inspect("image", &image_id).expect("image inspect");

    assert_eq!(view["id"], want.id.as_str(), "full id; {ctx}");
    assert_eq!(view["id"].as_str().map(str::len), Some(64), "{ctx}");
    assert_eq!(view["name"], want.name.as_str(), "name; {ctx}");
    assert_eq!(view["image"], want.image.as_str(), "reference; {ctx}");
    assert_eq!(view["image"], c["Config"]["Image"], "reference; {ctx}");
    assert_eq!(view["imageId"], image_id.as_str(), "image id; {ctx}");
    let mut tags = strings(&view["repoTags"]);
    let mut want_tags = strings(&img["RepoTags"]);
    tags.sort();
    want_tags.sort();
    assert_eq!(tags, want_tags, "repoTags; {ctx}");
    assert!(
        tags.contains(&want.image),
        "repoTags name the reference; {ctx}"
    );
    assert_eq!(
        strings(&view["repoDigests"]),
        want.repo_digests,
        "repoDigests; {ctx}"
    );
    assert_eq!(labels(&view["labels"]), want.labels, "labels; {ctx}");
    assert_eq!(
        labels(&view["labels"]),
        labels(&c["Config"]["Labels"]),
        "labels as the engine has them; {ctx}"
    );
    assert_eq!(view["state"], want.state, "state; {ctx}");
    assert_eq!(view["running"], want.running, "running; {ctx}");
    assert_eq!(view["created"], c["Created"], "created; {ctx}");
    assert_eq!(
        view["composeProject"],
        json!(want.compose.0),
        "composeProject; {ctx}"
    );
    assert_eq!(
        view["composeService"],
        json!(want.compose.1),
        "composeService; {ctx}"
    );
    assert_eq!(view["platform"]["os"], "linux", "platform; {ctx}");
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(view["platform"]["architecture"], "amd64", "platform; {ctx}");
    }
    assert_eq!(
        view["platform"]["architecture"], img["Architecture"],
        "platform; {ctx}"
    );
    assert!(view["platform"].get("variant").is_none(), "{ctx}");
    // Before any registry check.
    assert_eq!(view["status"], "Unknown", "status; {ctx}");
    assert_eq!(view["skipped"], false, "{ctx}");
    assert_eq!(view["skipReason"], Value::Null, "{ctx}");
    assert_eq!(view["currentDigest"], Value::Null, "{ctx}");
    assert_eq!(view["remoteDigest"], Value::Null, "{ctx}");
    assert_eq!(view["lastCheckedAt"], Value::Null, "{ctx}");
    assert_eq!(view["error"], Value::Null, "{ctx}");
    assert_eq!(view["previousImage"], Value::Null, "{ctx}");
    assert_eq!(view["lastUpdatedAt"], Value::Null, "{ctx}");
    let policy = if want.compose.0.is_some() {
        "notify"
    } else {
        "auto"
    };
    if source.starts_with("GET") {
        assert_eq!(view["updatePolicy"], policy, "updatePolicy; {ctx}");
    }
}

#[test]
fn discovery_reports_real_containers_exactly_in_list_and_api() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let _one = exclusive();
    let run = unique("run");
    let mut app = App::new(&run);
    let image = fixtures::Image::build(&format!("{}:1", unique("src")))
        .label("org.example.from-image", "yes")
        .env("FROM_IMAGE", "1")
        .http(8080)
        .create();
    let (image_id, digest) = app.push_and_pull(image, "latest");
    let reference = app.reference("latest");
    let repo_digest = format!("{}@{digest}", reference.trim_end_matches(":latest"));
    assert_eq!(
        fixtures::repo_digests(&reference),
        vec![repo_digest.clone()]
    );

    let net = Network::create();
    let vol = Volume::create();
    let web = ContainerBuilder::new(&reference)
        .publish("127.0.0.1::8080")
        .env("APP_MODE", "test")
        .env("WITH_SPACES", "a b c")
        .label("wdtest.run", &run)
        .label("org.example.role", "web server")
        .label("empty", "")
        .volume(&format!("{}:/data", vol.name()))
        .network(net.name(), Some("web-alias"), None)
        .run();
    let compose = ContainerBuilder::new(&reference)
        .label("wdtest.run", &run)
        .label("com.docker.compose.project", "wdtest-proj")
        .label("com.docker.compose.service", "api")
        .run();
    let stopped = ContainerBuilder::new(&reference)
        .label("wdtest.run", &run)
        .run();
    docker_ok(&["stop", "-t", "5", stopped.id()]);
    // The published port is real: the container's server answers on it.
    let port = web.host_port(8080);
    let (status, body) = wait_for(
        "the web container to answer",
        Duration::from_secs(10),
        || fixtures::http_get(&format!("127.0.0.1:{port}"), "/").ok(),
    );
    assert_eq!(status, 200, "{body}");

    let base = |extra: &[(&str, &str)]| -> BTreeMap<String, String> {
        [
            ("wdtest.run", run.as_str()),
            ("org.example.from-image", "yes"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let expect = |ctr: &fixtures::ContainerGuard,
                  extra: &[(&str, &str)],
                  compose: (Option<&'static str>, Option<&'static str>),
                  running: bool| Expect {
        id: ctr.id().to_string(),
        name: ctr.name().to_string(),
        image: reference.clone(),
        labels: base(extra),
        compose,
        running,
        state: if running { "running" } else { "exited" },
        repo_digests: vec![repo_digest.clone()],
    };
    let want_web = expect(
        &web,
        &[("org.example.role", "web server"), ("empty", "")],
        (None, None),
        true,
    );
    let want_compose = expect(
        &compose,
        &[
            ("com.docker.compose.project", "wdtest-proj"),
            ("com.docker.compose.service", "api"),
        ],
        (Some("wdtest-proj"), Some("api")),
        true,
    );
    let want_stopped = expect(&stopped, &[], (None, None), false);

    // The command line.
    let listed = list_json(&[]);
    for want in [&want_web, &want_compose] {
        let v = find(&listed["containers"], &want.id)
            .unwrap_or_else(|| panic!("{} missing from list --json", want.name));
        assert_container(v, want, "list --json");
    }
    assert!(
        find(&listed["containers"], stopped.id()).is_none(),
        "a stopped container is listed only with docker.includeStopped"
    );
    let all = list_json(&[("docker.includeStopped", "true")]);
    let v = find(&all["containers"], stopped.id()).expect("stopped container with includeStopped");
    assert_container(v, &want_stopped, "list --json (includeStopped)");

    // The API.
    let serve = Serve::start(&[
        ("scan.initialScanOnStart", "false"),
        ("scan.interval", "1h"),
        ("update.enabled", "false"),
    ]);
    let containers = wait_for("discovery in serve", Duration::from_secs(20), || {
        let (status, v) = serve.get("/api/containers");
        (status == 200
            && find(&v["data"], web.id()).is_some()
            && find(&v["data"], compose.id()).is_some())
        .then(|| v["data"].clone())
    });
    for want in [&want_web, &want_compose] {
        let v = find(&containers, &want.id).expect("listed");
        assert_container(v, want, "GET /api/containers");
        let from_list = find(&listed["containers"], &want.id).expect("listed");
        assert_eq!(v, from_list, "the CLI and the API agree");
    }
    assert!(find(&containers, stopped.id()).is_none());

    // Lookups: full id, unique prefix, name, and a leading slash.
    let short = &web.id()[..16];
    for key in [web.id(), short, web.name(), &format!("%2F{}", web.name())] {
        let (status, v) = serve.get(&format!("/api/containers/{key}"));
        assert_eq!(status, 200, "{key}: {v}");
        assert_container(&v["data"], &want_web, &format!("GET /api/containers/{key}"));
    }
    let (status, v) = serve.get(&format!("/api/containers/{}-nope", web.name()));
    assert_eq!((status, v["code"].as_i64()), (404, Some(40400)), "{v}");

    // Images: tags, digests, size and the containers using it.
    let (status, v) = serve.get("/api/images");
    assert_eq!(status, 200, "{v}");
    let img = v["data"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["id"] == image_id.as_str()))
        .unwrap_or_else(|| panic!("image {image_id} not in {v}"))
        .clone();
    let inspect = fixtures::inspect("image", &image_id).expect("image inspect");
    assert_eq!(img["size"], inspect["Size"], "{img}");
    assert!(img["size"].as_i64().is_some_and(|s| s > 0), "{img}");
    assert_eq!(strings(&img["repoDigests"]), vec![repo_digest.clone()]);
    let mut tags = strings(&img["repoTags"]);
    tags.sort();
    let mut want_tags = strings(&inspect["RepoTags"]);
    want_tags.sort();
    assert_eq!(tags, want_tags, "{img}");
    let mut users = vec![web.name().to_string(), compose.name().to_string()];
    users.sort();
    assert_eq!(strings(&img["containers"]), users, "{img}");
    let from_list = listed["images"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["id"] == image_id.as_str()))
        .expect("image in list --json");
    assert_eq!(from_list["containers"], img["containers"]);
    assert_eq!(from_list["size"], img["size"]);
    drop(serve);

    // A daemon with includeStopped lists the stopped one too.
    let serve = Serve::start(&[
        ("scan.initialScanOnStart", "false"),
        ("scan.interval", "1h"),
        ("update.enabled", "false"),
        ("docker.includeStopped", "true"),
    ]);
    let view = serve.wait_container(stopped.id(), "listed", Duration::from_secs(20), |_| true);
    assert_container(&view, &want_stopped, "GET (includeStopped)");
    let (status, v) = serve.get("/api/images");
    assert_eq!(status, 200);
    let img = v["data"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["id"] == image_id.as_str()))
        .expect("image listed")
        .clone();
    let mut users = vec![
        web.name().to_string(),
        compose.name().to_string(),
        stopped.name().to_string(),
    ];
    users.sort();
    assert_eq!(strings(&img["containers"]), users, "{img}");
    drop(serve);
    drop((web, compose, stopped));
    drop((net, vol));
}
