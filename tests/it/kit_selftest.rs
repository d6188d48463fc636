//! Proof that the fixture kit does what the other tests rely on: images build offline, containers
//! publish ports on loopback, the real registry takes pushes in all three auth modes, pulled images
//! carry RepoDigests, multi-platform indexes round-trip, and everything is removed afterwards.

use crate::fixtures::{
    self, containers_named, http_get, http_request, inspect, unique, ContainerBuilder, Image,
    Network, OciIndexBuilder, Registry, TokenOptions, Volume,
};
use std::time::Duration;

fn assert_no_containers(needle: &str) {
    let left = containers_named(needle);
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

#[test]
fn kit_image_and_container_with_env_label_and_port() {
    if !fixtures::require_engine() {
        return;
    }
    let prefix = unique("kitctr");
    let image_ref = format!("{prefix}:v1");
    {
        let image = Image::build(&image_ref)
            .env("GREETING", "hello world")
            .label("org.example.kit", "yes")
            .file("/etc/marker", "v1")
            .http(8080)
            .create();
        let config = &image.inspect()["Config"];
        assert!(
            config["Env"]
                .as_array()
                .is_some_and(|e| e.iter().any(|v| v == "GREETING=hello world")),
            "{config}"
        );
        assert_eq!(config["Labels"]["org.example.kit"], "yes");

        let ctr = ContainerBuilder::new(image.name_tag())
            .name(&format!("{prefix}-web"))
            .env("EXTRA", "1")
            .label("wdtest.role", "web")
            .publish("127.0.0.1::8080")
            .stop_timeout(5)
            .run();
        let v = ctr.inspect();
        assert_eq!(v["Config"]["Labels"]["wdtest.role"], "web");
        assert_eq!(v["Name"], format!("/{prefix}-web"));
        let port = ctr.host_port(8080);
        let addr = format!("127.0.0.1:{port}");
        let body = fixtures::wait_for("busybox httpd to answer", Duration::from_secs(20), || {
            http_get(&addr, "/index.html")
                .ok()
                .filter(|(s, _)| *s == 200)
                .map(|(_, b)| b)
        });
        assert_eq!(body, image_ref);

        // The trapped TERM ends PID 1 itself: exit code 0, not 137 (killed after the timeout).
        fixtures::docker_ok(&["stop", ctr.id()]);
        assert_eq!(ctr.inspect()["State"]["Running"], false);
        assert_eq!(ctr.inspect()["State"]["ExitCode"], 0);
    }
    assert_no_containers(&prefix);
    assert!(inspect("image", &image_ref).is_none(), "image left behind");
}

#[test]
fn kit_networks_volumes_and_static_ips() {
    if !fixtures::require_engine() {
        return;
    }
    let prefix = unique("kitnet");
    let (net_name, vol_name);
    {
        let image = Image::build(&format!("{prefix}:v1"))
            .volume("/data")
            .create();
        let net_a = Network::create();
        let net_b = Network::create();
        let vol = Volume::create();
        net_name = net_a.name().to_owned();
        vol_name = vol.name().to_owned();
        let ctr = ContainerBuilder::new(image.name_tag())
            .name(&format!("{prefix}-app"))
            .network(net_a.name(), Some("app"), Some(&net_a.ip(10)))
            .network(net_b.name(), Some("app-b"), None)
            .volume(&format!("{}:/named", vol.name()))
            .volume("/anon")
            .restart("unless-stopped")
            .run();
        let v = ctr.inspect();
        let nets = &v["NetworkSettings"]["Networks"];
        assert_eq!(nets[net_a.name()]["IPAddress"], net_a.ip(10));
        assert!(nets[net_a.name()]["Aliases"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "app")));
        assert!(nets[net_b.name()].is_object(), "{nets}");
        let mounts = v["Mounts"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            mounts.len(),
            3,
            "named + anonymous + image VOLUME: {mounts:?}"
        );

        let consumer = ContainerBuilder::new(image.name_tag())
            .name(&format!("{prefix}-sidecar"))
            .network_mode(&format!("container:{}", ctr.name()))
            .run();
        assert!(consumer.inspect()["HostConfig"]["NetworkMode"]
            .as_str()
            .is_some_and(|m| m.starts_with("container:")));

        let ephemeral = ContainerBuilder::new(image.name_tag())
            .name(&format!("{prefix}-rm"))
            .rm()
            .run();
        fixtures::docker_ok(&["stop", ephemeral.id()]);
        fixtures::wait_for("the --rm container to go", Duration::from_secs(20), || {
            ephemeral.inspect_current().is_none().then_some(())
        });
    }
    assert_no_containers(&prefix);
    assert!(
        inspect("network", &net_name).is_none(),
        "network left behind"
    );
    assert!(inspect("volume", &vol_name).is_none(), "volume left behind");
}

#[test]
fn kit_plain_registry_push_and_pull_back() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let prefix = unique("kitreg");
    let reference;
    {
        let registry = Registry::start();
        let image = Image::build(&format!("{prefix}:v1")).create();
        let pushed = image.push_to(&registry, &format!("{prefix}/app:1.0"));
        reference = pushed.reference().to_owned();
        assert!(pushed.digest().starts_with("sha256:"));
        pushed.pull_back();
        let expected = format!("{}@{}", pushed.repository(), pushed.digest());
        assert_eq!(pushed.repo_digests(), vec![expected]);
        let ctr = ContainerBuilder::new(pushed.reference()).run();
        ctr.wait_running(Duration::from_secs(20));
        assert!(registry.count_requests("PUT", "/manifests/1.0") >= 1);
        // The engine resolves the tag with HEAD, then fetches the manifest by digest.
        assert!(registry.count_requests("HEAD", "/manifests/1.0") >= 1);
        assert!(registry.count_requests("GET", "/manifests/sha256:") >= 1);
    }
    assert_no_containers(&prefix);
    assert!(
        inspect("image", &reference).is_none(),
        "pulled image left behind"
    );
}

#[test]
fn kit_basic_auth_registry_needs_and_takes_credentials() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let prefix = unique("kitbasic");
    let registry = Registry::start_basic_auth("alice", "s3cret");
    let (status, _) = http_get(&registry.host(), "/v2/").expect("GET /v2/");
    assert_eq!(status, 401);
    let auth = fixtures::basic_header("alice", "s3cret");
    let (status, _) = http_request(&registry.host(), "GET", "/v2/", &[("Authorization", &auth)])
        .expect("GET /v2/ with credentials");
    assert_eq!(status, 200);

    let image = Image::build(&format!("{prefix}:v1")).create();
    let pushed = image.push_to(&registry, &format!("{prefix}/app:v1"));
    pushed.pull_back();
    assert_eq!(
        pushed.repo_digests(),
        vec![format!("{}@{}", pushed.repository(), pushed.digest())]
    );
    let config = registry
        .docker_config_dir()
        .expect("a config dir for an auth registry");
    assert!(config.join("config.json").exists());

    // skopeo pushes indexes with the same credentials; the engine pulls them with its config.
    let layout = OciIndexBuilder::standard().write();
    let index = layout.push(&registry, &format!("{prefix}/multi:1"));
    index.pull();
    let digests = index.repo_digests();
    assert!(
        digests.iter().any(|d| d.ends_with(layout.index_digest())),
        "{digests:?}"
    );
}

#[test]
fn kit_token_auth_registry_round_trip_through_the_issuer() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let prefix = unique("kittoken");
    let registry = Registry::start_token_auth(TokenOptions::new().credentials("bob", "pw"));
    let issuer = registry.issuer().expect("token registry has an issuer");

    let (status, _) = http_get(&registry.host(), "/v2/").expect("GET /v2/");
    assert_eq!(status, 401, "token registry must challenge");

    let image = Image::build(&format!("{prefix}:v1")).create();
    let repo = format!("{prefix}/app");
    let pushed = image.push_to(&registry, &format!("{repo}:v1"));
    pushed.pull_back();
    assert_eq!(
        pushed.repo_digests(),
        vec![format!("{}@{}", pushed.repository(), pushed.digest())]
    );
    let layout = OciIndexBuilder::new()
        .platform("linux/amd64")
        .platform("linux/arm64")
        .write();
    let index = layout.push(&registry, &format!("{repo}:multi"));
    index.pull();
    assert_eq!(
        registry.head_digest(&repo, "multi").as_deref(),
        Some(layout.index_digest())
    );
    assert_eq!(
        registry.delete_manifest(&repo, layout.index_digest()),
        Ok(202)
    );
    assert_eq!(registry.head_digest(&repo, "multi"), None);
    assert!(issuer.requests() > 0);
    let scopes = issuer.scopes();
    assert!(
        scopes
            .iter()
            .flatten()
            .any(|s| s.starts_with(&format!("repository:{repo}:"))),
        "{scopes:?}"
    );

    // A minted token opens the manifest; a wrong password gets no token.
    let token = issuer.mint(&[&format!("repository:{repo}:pull")]);
    let bearer = format!("Bearer {token}");
    let (status, _) = http_request(
        &registry.host(),
        "GET",
        &format!("/v2/{repo}/manifests/v1"),
        &[
            ("Authorization", &bearer),
            (
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            ),
        ],
    )
    .expect("GET manifest with a token");
    assert_eq!(status, 200, "registry log:\n{}", registry.log());

    let realm = issuer.realm();
    let issuer_host = realm
        .trim_start_matches("http://")
        .trim_end_matches("/token")
        .to_owned();
    let wrong = fixtures::basic_header("bob", "nope");
    let query = format!(
        "/token?service={}&scope=repository:{repo}:pull",
        issuer.service()
    );
    let (status, _) = http_request(&issuer_host, "GET", &query, &[("Authorization", &wrong)])
        .expect("token request");
    assert_eq!(status, 401);

    // Multi-scope refusal, switched on at run time.
    let good = fixtures::basic_header("bob", "pw");
    let two = format!("{query}&scope=repository:{repo}-other:pull");
    let (status, body) =
        http_request(&issuer_host, "GET", &two, &[("Authorization", &good)]).expect("token");
    assert_eq!(status, 200, "{body}");
    issuer.set_refuse_multi_scope(true);
    let (status, _) =
        http_request(&issuer_host, "GET", &two, &[("Authorization", &good)]).expect("token");
    assert_eq!(status, 400);
    let (status, _) =
        http_request(&issuer_host, "GET", &query, &[("Authorization", &good)]).expect("token");
    assert_eq!(status, 200);
}

#[test]
fn kit_multi_platform_index_round_trip() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let prefix = unique("kitoci");
    let reference;
    {
        let registry = Registry::start();
        let repo_tag = format!("{prefix}/multi:1");
        let v1 = OciIndexBuilder::standard().write();
        let pushed = v1.push(&registry, &repo_tag);
        reference = pushed.reference().to_owned();
        let image = pushed.pull();
        assert_eq!(image["Architecture"], "amd64");
        let expected = format!("{}/{prefix}/multi@{}", registry.host(), v1.index_digest());
        assert_eq!(pushed.repo_digests(), vec![expected]);
        let ctr = ContainerBuilder::new(pushed.reference()).run();
        ctr.wait_running(Duration::from_secs(20));
        drop(ctr);

        let v2 = OciIndexBuilder::standard()
            .marker("linux/arm64", "v2")
            .write();
        assert_eq!(
            v1.manifest_digest("linux/amd64"),
            v2.manifest_digest("linux/amd64")
        );
        assert_ne!(
            v1.manifest_digest("linux/arm64"),
            v2.manifest_digest("linux/arm64")
        );
        assert_ne!(v1.index_digest(), v2.index_digest());
        assert_eq!(
            registry
                .head_digest(&format!("{prefix}/multi"), "1")
                .as_deref(),
            Some(v1.index_digest())
        );
        let pushed2 = v2.push(&registry, &repo_tag);
        assert_eq!(pushed2.index_digest(), v2.index_digest());
        assert_eq!(
            registry
                .head_digest(&format!("{prefix}/multi"), "1")
                .as_deref(),
            Some(v2.index_digest())
        );
        // Same amd64 image for the engine, but the tag now resolves to the new index.
        let again = pushed2.pull();
        assert_eq!(again["Id"], image["Id"]);
        let new_digest = format!("{}/{prefix}/multi@{}", registry.host(), v2.index_digest());
        // The classic image store keeps the old index digest beside the new one.
        let digests = pushed2.repo_digests();
        assert!(digests.contains(&new_digest), "{digests:?}");
        assert!(
            v2.manifest_digest("unknown/unknown").is_some(),
            "attestation entry"
        );
    }
    assert_no_containers(&prefix);
    assert!(
        inspect("image", &reference).is_none(),
        "pulled index left behind"
    );
}

#[test]
fn kit_token_registry_with_anonymous_pull() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let prefix = unique("kitanon");
    let registry = Registry::start_token_auth(
        TokenOptions::new()
            .credentials("carol", "pw")
            .anonymous_pull(true)
            .access_token_field(true),
    );
    let issuer = registry.issuer().expect("issuer");
    let image = Image::build(&format!("{prefix}:v1")).create();
    let pushed = image.push_to(&registry, &format!("{prefix}/app:v1"));

    // No credentials: the engine still pulls, with a pull-only token.
    fixtures::docker_ok(&["rmi", pushed.reference()]);
    fixtures::docker_ok(&["pull", pushed.reference()]);
    assert_eq!(
        pushed.repo_digests(),
        vec![format!("{}@{}", pushed.repository(), pushed.digest())]
    );

    // ...but cannot push with it.
    let other = registry.reference(&format!("{prefix}/app:v2"));
    fixtures::docker_ok(&["tag", image.name_tag(), &other]);
    let denied = fixtures::docker(&["push", &other]);
    let _ = fixtures::docker(&["rmi", &other]);
    assert!(denied.is_err(), "anonymous push must be refused");
    assert!(issuer.requests() > 0);
}

#[test]
fn kit_healthchecks_from_image_and_from_run_flags() {
    if !fixtures::require_engine() {
        return;
    }
    let prefix = unique("kithealth");
    {
        let image = Image::build(&format!("{prefix}:v1"))
            .healthcheck(
                "test -f /etc/wdtest-image",
                Duration::from_millis(200),
                3,
                Duration::ZERO,
            )
            .stop_signal("SIGTERM")
            .create();
        let healthy = ContainerBuilder::new(image.name_tag())
            .name(&format!("{prefix}-ok"))
            .run();
        healthy.wait_health("healthy", Duration::from_secs(30));

        let sick = ContainerBuilder::new(image.name_tag())
            .name(&format!("{prefix}-sick"))
            .healthcheck(
                "test -f /nonexistent",
                Duration::from_millis(200),
                1,
                Duration::ZERO,
            )
            .run();
        sick.wait_health("unhealthy", Duration::from_secs(30));
    }
    assert_no_containers(&prefix);
}
