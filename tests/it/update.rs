//! Safe updates against the real engine and a real registry (SPEC §6): a faithful recreate at two
//! API versions, rollback of a v2 that exits or is unhealthy, recovery after a crash at every
//! step, `--rm` containers, `network_mode: container:` consumers, dry run.
//!
//! This engine's newest API is 1.41, so the create-with-all-networks path of API 1.44 cannot run
//! here; it is covered by the table tests of `updater::recreate`. A crash is simulated with the
//! `with_crash_after` hook (update returns at that point without any cleanup), not a SIGKILL.

use crate::fixtures::{
    self, docker, docker_ok, inspect, unique, ContainerBuilder, ContainerGuard, Image, ImageGuard,
    Network, PushedImage, Registry, TempDir, Volume,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use watch_docker::config::{Config, RegistryAuth, Secret, UpdateConfig};
use watch_docker::docker::Engine;
use watch_docker::registry::{CredentialStore, LookupEnv};
use watch_docker::updater::{Outcome, Step, UpdateRequest, Updater};

const USER: &str = "wduser";
const PASS: &str = "wd-pass?1";
const HEALTHY: Duration = Duration::from_secs(30);

fn engine(api: (u32, u32)) -> Engine {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    Engine::new(&host, Some(api), Duration::from_secs(30)).expect("engine client")
}

fn update_config() -> UpdateConfig {
    let mut cfg = Config::default().update;
    cfg.stop_timeout = Duration::from_secs(5);
    cfg.health_timeout = Duration::from_secs(20);
    cfg.settle_time = Duration::from_millis(1500);
    cfg
}

fn updater_with(api: (u32, u32), registry: &Registry, cfg: UpdateConfig) -> Updater {
    let mut reg = Config::default().registry;
    reg.auth = vec![RegistryAuth {
        host: registry.host(),
        username: USER.into(),
        password: Secret::new(PASS),
    }];
    let store = CredentialStore::with_env(&reg, LookupEnv::default());
    Updater::new(engine(api), Arc::new(store), cfg)
}

fn request(container: &str) -> UpdateRequest {
    UpdateRequest {
        container: container.to_string(),
        image: None,
        rollback: false,
        dry_run: false,
    }
}

fn run(updater: &Updater, req: &UpdateRequest) -> Outcome {
    let outcome = updater.update(req, &AtomicBool::new(false));
    eprintln!("update {}: {outcome:?}", req.container);
    outcome
}

/// Anonymous volumes outlive the containers that name them in `Binds`; removed on Drop.
#[derive(Default)]
struct Volumes(Vec<String>);

impl Volumes {
    fn add_from(&mut self, container: &Value) {
        for m in container["Mounts"].as_array().into_iter().flatten() {
            if m["Type"] == "volume" {
                if let Some(n) = m["Name"].as_str() {
                    self.0.push(n.to_string());
                }
            }
        }
    }
}

impl Drop for Volumes {
    fn drop(&mut self) {
        for v in &self.0 {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
    }
}

/// Removes every container whose name starts with `prefix` (parked and kept ones included).
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        for name in fixtures::containers_named(&self.0) {
            let _ = docker(&["rm", "-f", &name]);
        }
    }
}

/// A registry with Basic auth, v1 pushed and pulled back (so the container names the registry
/// reference), and v2 pushed to the same tag with the local tag removed (so the update pulls).
struct World {
    registry: Registry,
    reference: String,
    v1: ImageGuard,
    v2: ImageGuard,
    _pushed: Vec<PushedImage>,
}

/// Held while this module builds images or removes them. The legacy builder shares cached
/// intermediate images between builds of the same first steps, and removing an image also removes
/// its unused parents: a removal racing a build can take the build's cached parent away under it.
static IMAGES: Mutex<()> = Mutex::new(());

fn images_lock() -> MutexGuard<'static, ()> {
    IMAGES.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Drop for World {
    fn drop(&mut self) {
        let _lock = images_lock();
        // By id: removes the tags and the digest references the pulls added.
        let _ = docker(&["rmi", "-f", self.v1.id(), self.v2.id()]);
    }
}

impl World {
    fn new(tag: &str, v1: fn(&str) -> ImageGuard, v2: fn(&str) -> ImageGuard) -> World {
        let registry = Registry::start_basic_auth(USER, PASS);
        let name = unique(tag);
        let (v1, v2) = {
            let _lock = images_lock();
            (v1(&format!("{name}:v1")), v2(&format!("{name}:v2")))
        };
        let pushed = v1.push_to(&registry, &format!("{name}:latest"));
        pushed.pull_back();
        World {
            reference: pushed.reference().to_string(),
            registry,
            v1,
            v2,
            _pushed: vec![pushed],
        }
    }

    /// Points the local tag at v1 again (for creating another container from it).
    fn retag_v1(&self) {
        docker_ok(&["tag", self.v1.name_tag(), &self.reference]);
    }

    /// Removes the local tag, so that the next update has to pull.
    fn untag(&self) {
        docker_ok(&["rmi", &self.reference]);
    }

    /// Moves the tag to v2 in the registry; the local tag keeps naming v1's content only through
    /// the container (it is removed, so the update must pull).
    fn publish_v2(&mut self) {
        let repo_tag = self
            .reference
            .split_once('/')
            .map(|(_, r)| r.to_string())
            .unwrap_or_default();
        let pushed = self.v2.push_to(&self.registry, &repo_tag);
        docker_ok(&["rmi", &self.reference]);
        self._pushed.push(pushed);
    }
}

fn image_v1(name_tag: &str) -> ImageGuard {
    Image::build(name_tag)
        .env("APP_VERSION", "1")
        .env("ONLY_V1", "yes")
        .label("org.example.version", "1")
        .volume("/data")
        .expose(80)
        .healthcheck("true", Duration::from_millis(300), 2, Duration::ZERO)
        .file("/version", "1")
        .create()
}

fn image_v2(name_tag: &str) -> ImageGuard {
    Image::build(name_tag)
        .env("APP_VERSION", "2")
        .env("ONLY_V2", "yes")
        .label("org.example.version", "2")
        .volume("/data")
        .expose(80)
        .healthcheck("true", Duration::from_millis(300), 2, Duration::ZERO)
        .file("/version", "2")
        .create()
}

fn image_exits(name_tag: &str) -> ImageGuard {
    Image::build(name_tag)
        .volume("/data")
        .cmd(&["/bin/sh", "-c", "exit 3"])
        .file("/version", "exits")
        .create()
}

fn image_unhealthy(name_tag: &str) -> ImageGuard {
    Image::build(name_tag)
        .volume("/data")
        .healthcheck("false", Duration::from_millis(200), 1, Duration::ZERO)
        .file("/version", "sick")
        .create()
}

fn plain(name_tag: &str) -> ImageGuard {
    Image::build(name_tag).volume("/data").create()
}

fn env_of(v: &Value) -> BTreeSet<String> {
    v["Config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect()
}

fn aliases(v: &Value, network: &str) -> BTreeSet<String> {
    let short: String = v["Id"].as_str().unwrap_or("").chars().take(12).collect();
    v["NetworkSettings"]["Networks"][network]["Aliases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .filter(|a| *a != short)
        .collect()
}

/// (destination → volume name or bind source) of every mount.
fn mounts(v: &Value) -> BTreeSet<(String, String, String)> {
    v["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let source = if m["Type"] == "volume" {
                &m["Name"]
            } else {
                &m["Source"]
            };
            (
                m["Destination"].as_str().unwrap_or("").to_string(),
                m["Type"].as_str().unwrap_or("").to_string(),
                source.as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn exec(container: &str, script: &str) -> String {
    docker_ok(&["exec", container, "sh", "-c", script])
}

fn containers_exactly(name: &str) -> Vec<String> {
    fixtures::containers_named(name)
        .into_iter()
        .filter(|n| n == name || n.starts_with(&format!("{name}-wd-")))
        .collect()
}

fn full_update_keeps_configuration(api: (u32, u32), remove_old: bool) {
    if !fixtures::require_registry_tools() {
        return;
    }
    let mut world = World::new("upd-full", image_v1, image_v2);
    let net1 = Network::create();
    let net2 = Network::create();
    let named = Volume::create();
    let bind = TempDir::new("upd-bind");
    bind.write("hello", "from the host");
    let mut volumes = Volumes::default();
    let name = unique("upd-full-ctr");
    let _sweep = Sweep(name.clone());
    let port = fixtures::free_port();
    let ctr = ContainerBuilder::new(&world.reference)
        .name(&name)
        .publish(&format!("127.0.0.1:{port}:80"))
        .env("USER_VAR", "u")
        .env("APP_VERSION", "user")
        .label("app.role", "web")
        .volume(&format!("{}:/named", named.name()))
        .volume("/anon")
        .bind(&bind.path().display().to_string(), "/bind")
        .network(net1.name(), Some("web"), Some(&net1.ip(10)))
        .network(net2.name(), Some("web2"), Some(&net2.ip(10)))
        .restart("unless-stopped")
        .log_opt("max-size", "1m")
        .stop_timeout(7)
        .healthcheck(
            "test -d /data",
            Duration::from_millis(400),
            3,
            Duration::ZERO,
        )
        .run();
    ctr.wait_health("healthy", HEALTHY);
    exec(&name, "echo anon > /anon/f && echo image-volume > /data/f");
    let old = ctr.inspect();
    volumes.add_from(&old);
    world.publish_v2();

    let mut cfg = update_config();
    cfg.remove_old_container = remove_old;
    let updater = updater_with(api, &world.registry, cfg);
    let outcome = run(&updater, &request(ctr.id()));
    let Outcome::Updated {
        from_image,
        to_image,
        new_id,
    } = outcome
    else {
        panic!("expected Updated, got {outcome:?}");
    };
    assert_eq!(from_image, world.v1.id());
    assert_eq!(to_image, world.v2.id());
    let new = ctr.inspect_current().expect("a container under the name");
    volumes.add_from(&new);
    assert_eq!(new["Id"], new_id.as_str());
    assert_ne!(new["Id"], old["Id"]);
    assert_eq!(new["Image"], world.v2.id());
    assert_eq!(new["State"]["Running"], true);
    assert_eq!(new["State"]["Health"]["Status"], "healthy");

    // Config: everything equal but the image's defaults, our labels and the hostname (the
    // engine's default, the short id).
    let changed = ["Env", "Labels", "Image", "Hostname"];
    let keys: BTreeSet<&String> = old["Config"]
        .as_object()
        .into_iter()
        .chain(new["Config"].as_object())
        .flat_map(|o| o.keys())
        .collect();
    for key in keys {
        if !changed.contains(&key.as_str()) {
            assert_eq!(old["Config"][key], new["Config"][key], "Config.{key}");
        }
    }
    assert_eq!(
        env_of(&new),
        [
            "APP_VERSION=user", // the user's -e wins over both images
            "ONLY_V2=yes",
            "USER_VAR=u",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]
        .into_iter()
        .map(String::from)
        .collect::<BTreeSet<_>>()
    );
    let labels = &new["Config"]["Labels"];
    assert_eq!(labels["app.role"], "web");
    assert_eq!(
        labels["org.example.version"], "2",
        "new image's label applies"
    );
    assert_eq!(labels["watchdocker.previous-image"], world.v1.id());
    assert!(labels["watchdocker.updated-at"].is_string());
    assert_eq!(new["Config"]["Hostname"], &new_id[..12]);

    // HostConfig: equal but Binds, which now name the anonymous volumes.
    let keys: BTreeSet<&String> = old["HostConfig"]
        .as_object()
        .into_iter()
        .chain(new["HostConfig"].as_object())
        .flat_map(|o| o.keys())
        .collect();
    for key in keys {
        if key != "Binds" {
            assert_eq!(
                old["HostConfig"][key], new["HostConfig"][key],
                "HostConfig.{key}"
            );
        }
    }
    assert_eq!(mounts(&old), mounts(&new), "same volumes and binds");
    for (file, want) in [
        ("/anon/f", "anon"),
        ("/data/f", "image-volume"),
        ("/bind/hello", "from the host"),
        ("/version", "2"),
    ] {
        assert_eq!(exec(&name, &format!("cat {file}")), want, "{file}");
    }

    // Networks: same networks, static addresses, user aliases.
    let networks = |v: &Value| -> BTreeSet<String> {
        v["NetworkSettings"]["Networks"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(networks(&old), networks(&new));
    for net in [&net1, &net2] {
        let n = net.name();
        assert_eq!(
            new["NetworkSettings"]["Networks"][n]["IPAddress"],
            net.ip(10)
        );
        assert_eq!(
            old["NetworkSettings"]["Networks"][n]["IPAMConfig"],
            new["NetworkSettings"]["Networks"][n]["IPAMConfig"]
        );
        assert_eq!(aliases(&old, n), aliases(&new, n), "aliases on {n}");
    }
    assert_eq!(
        old["NetworkSettings"]["Ports"], new["NetworkSettings"]["Ports"],
        "published ports"
    );

    // The old one: gone, or kept stopped under the -wd-prev- name.
    let old_id = old["Id"].as_str().unwrap_or_default();
    let left = inspect("container", old_id);
    if remove_old {
        assert!(left.is_none(), "old container still there");
    } else {
        let left = left.expect("old container kept");
        assert_eq!(left["Name"], format!("/{name}-wd-prev-{}", &old_id[..12]));
        assert_eq!(left["State"]["Running"], false);
        assert_eq!(left["HostConfig"]["RestartPolicy"]["Name"], "no");
        let down = timestamp(&new["State"]["StartedAt"])
            .duration_since(timestamp(&left["State"]["FinishedAt"]));
        eprintln!("downtime of the update (old stopped → new started): {down:?}");
    }
    assert_eq!(
        containers_exactly(&name).len(),
        if remove_old { 1 } else { 2 }
    );

    // Same image again: nothing to do.
    let again = run(&updater, &request(&new_id));
    assert!(matches!(again, Outcome::Unchanged { .. }), "{again:?}");
}

fn timestamp(v: &Value) -> jiff::Timestamp {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
}

#[test]
fn update_keeps_configuration_at_api_1_41() {
    // Daemons started by other tests recover every parked container on the engine.
    let _one = fixtures::exclusive();
    full_update_keeps_configuration((1, 41), true);
}

#[test]
fn update_keeps_configuration_at_api_1_40_and_keeps_the_old_one() {
    // Daemons started by other tests recover every parked container on the engine.
    let _one = fixtures::exclusive();
    full_update_keeps_configuration((1, 40), false);
}

/// A container on a user network with a static IP and a restart policy; v2 from `v2`.
fn simple_container(world: &World, net: &Network, name: &str) -> ContainerGuard {
    ContainerBuilder::new(&world.reference)
        .name(name)
        .env("USER_VAR", "u")
        .network(net.name(), Some("svc"), Some(&net.ip(20)))
        .restart("unless-stopped")
        .run()
}

/// One container under `name`, running, with the configuration of `simple_container`; the
/// same id when `same_id` is given.
fn assert_intact(name: &str, net: &Network, same_id: Option<&str>) -> Value {
    assert_eq!(
        containers_exactly(name),
        vec![name.to_string()],
        "exactly one container"
    );
    let v = fixtures::wait_for(&format!("{name} running"), HEALTHY, || {
        inspect("container", name).filter(|v| v["State"]["Running"] == true)
    });
    if let Some(id) = same_id {
        assert_eq!(v["Id"], id, "the old container itself is back");
    }
    assert_eq!(v["Name"], format!("/{name}"));
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    assert!(env_of(&v).contains("USER_VAR=u"), "{:?}", env_of(&v));
    assert_eq!(
        v["NetworkSettings"]["Networks"][net.name()]["IPAddress"],
        net.ip(20)
    );
    assert!(aliases(&v, net.name()).contains("svc"));
    v
}

fn rolled_back_when(v2: fn(&str) -> ImageGuard, tag: &str) {
    if !fixtures::require_registry_tools() {
        return;
    }
    let mut world = World::new(tag, image_v1, v2);
    let net = Network::create();
    let mut volumes = Volumes::default();
    let name = unique(tag);
    let _sweep = Sweep(name.clone());
    let ctr = simple_container(&world, &net, &name);
    ctr.wait_health("healthy", HEALTHY);
    volumes.add_from(&ctr.inspect());
    world.publish_v2();
    let updater = updater_with((1, 41), &world.registry, update_config());
    let outcome = run(&updater, &request(ctr.id()));
    assert!(matches!(outcome, Outcome::RolledBack { .. }), "{outcome:?}");
    let v = assert_intact(&name, &net, Some(ctr.id()));
    assert_eq!(v["Image"], world.v1.id());
}

#[test]
fn v2_that_exits_at_once_is_rolled_back() {
    // Daemons started by other tests recover every parked container on the engine.
    let _one = fixtures::exclusive();
    rolled_back_when(image_exits, "upd-exits");
}

#[test]
fn v2_that_is_unhealthy_is_rolled_back() {
    // Daemons started by other tests recover every parked container on the engine.
    let _one = fixtures::exclusive();
    rolled_back_when(image_unhealthy, "upd-sick");
}

#[test]
fn recovery_after_a_crash_at_each_step() {
    // Daemons started by other tests recover every parked container on the engine.
    let _one = fixtures::exclusive();
    if !fixtures::require_registry_tools() {
        return;
    }
    let mut world = World::new("upd-crash", plain, plain);
    world.publish_v2();
    let net = Network::create();
    let mut volumes = Volumes::default();
    let mut cfg = update_config();
    cfg.settle_time = Duration::from_millis(500);
    for step in [
        Step::Renamed,
        Step::PolicyCleared,
        Step::Stopped,
        Step::Created,
        Step::Connected,
        Step::Started,
    ] {
        let name = unique("upd-crash-ctr");
        let _sweep = Sweep(name.clone());
        world.retag_v1();
        let ctr = simple_container(&world, &net, &name);
        world.untag();
        ctr.wait_running(HEALTHY);
        exec(&name, "echo kept > /data/f");
        volumes.add_from(&ctr.inspect());
        let crashing = updater_with((1, 41), &world.registry, cfg.clone()).with_crash_after(step);
        let outcome = run(&crashing, &request(ctr.id()));
        assert!(
            matches!(outcome, Outcome::Failed { .. }),
            "{step:?}: {outcome:?}"
        );
        assert_eq!(
            fixtures::containers_named(&format!("{name}-wd-old-")).len(),
            1,
            "{step:?}: parked"
        );
        let lines =
            updater_with((1, 41), &world.registry, cfg.clone()).recover_where(&|n| n == name);
        eprintln!("recover after {step:?}: {lines:?}");
        assert!(
            lines.iter().any(|l| l.contains(&name)),
            "{step:?}: {lines:?}"
        );
        let v = assert_intact(&name, &net, (step != Step::Started).then_some(ctr.id()));
        volumes.add_from(&v);
        assert_eq!(exec(&name, "cat /data/f"), "kept", "{step:?}");
        let expected_image = if step == Step::Started {
            world.v2.id()
        } else {
            world.v1.id()
        };
        assert_eq!(v["Image"], expected_image, "{step:?}");
        // A second recovery finds nothing to do.
        let again =
            updater_with((1, 41), &world.registry, cfg.clone()).recover_where(&|n| n == name);
        assert!(!again.iter().any(|l| l.contains(&name)), "{again:?}");
    }
}

#[test]
fn rm_container_survives_a_failed_update() {
    // Daemons started by other tests recover every parked container on the engine.
    let _one = fixtures::exclusive();
    if !fixtures::require_registry_tools() {
        return;
    }
    let mut world = World::new("upd-rm", plain, image_exits);
    let net = Network::create();
    let mut volumes = Volumes::default();
    let name = unique("upd-rm-ctr");
    let _sweep = Sweep(name.clone());
    let ctr = ContainerBuilder::new(&world.reference)
        .name(&name)
        .env("USER_VAR", "u")
        .network(net.name(), Some("svc"), Some(&net.ip(30)))
        .rm()
        .run();
    ctr.wait_running(HEALTHY);
    exec(&name, "echo kept > /data/f");
    let old = ctr.inspect();
    volumes.add_from(&old);
    world.publish_v2();
    let updater = updater_with((1, 41), &world.registry, update_config());
    let outcome = run(&updater, &request(ctr.id()));
    assert!(matches!(outcome, Outcome::RolledBack { .. }), "{outcome:?}");
    assert_eq!(containers_exactly(&name), vec![name.clone()]);
    let v = fixtures::wait_for("re-created --rm container running", HEALTHY, || {
        inspect("container", &name).filter(|v| v["State"]["Running"] == true)
    });
    volumes.add_from(&v);
    assert_eq!(v["Image"], world.v1.id());
    assert_eq!(v["HostConfig"]["AutoRemove"], true);
    assert_eq!(
        v["NetworkSettings"]["Networks"][net.name()]["IPAddress"],
        net.ip(30)
    );
    assert!(aliases(&v, net.name()).contains("svc"));
    assert!(env_of(&v).contains("USER_VAR=u"));
    assert_eq!(
        exec(&name, "cat /data/f"),
        "kept",
        "the anonymous volume survived"
    );
    // The engine removes a --rm container itself when it is killed; wait for that before the
    // images go, or they are only untagged.
    let _ = docker(&["rm", "-f", &name]);
    fixtures::wait_for("the --rm container to be gone", HEALTHY, || {
        inspect("container", &name).is_none().then_some(())
    });
}

#[test]
fn network_consumer_is_recreated_after_its_provider() {
    // Daemons started by other tests recover every parked container on the engine.
    let _one = fixtures::exclusive();
    if !fixtures::require_registry_tools() {
        return;
    }
    let mut world = World::new("upd-prov", plain, plain);
    let net = Network::create();
    let mut volumes = Volumes::default();
    let name = unique("upd-prov-ctr");
    let consumer_name = unique("upd-cons-ctr");
    let _sweep = Sweep(name.clone());
    let _sweep_consumer = Sweep(consumer_name.clone());
    let provider = simple_container(&world, &net, &name);
    provider.wait_running(HEALTHY);
    let consumer = ContainerBuilder::new(world.v1.name_tag())
        .name(&consumer_name)
        .network_mode(&format!("container:{name}"))
        .label("app.role", "sidecar")
        .run();
    consumer.wait_running(HEALTHY);
    volumes.add_from(&provider.inspect());
    volumes.add_from(&consumer.inspect());
    assert!(exec(&consumer_name, "ip -4 addr").contains(&net.ip(20)));
    world.publish_v2();

    let updater = updater_with((1, 41), &world.registry, update_config());
    let outcome = run(&updater, &request(provider.id()));
    let Outcome::Updated { new_id, .. } = outcome else {
        panic!("expected Updated, got {outcome:?}");
    };
    let results = updater.restart_consumers(&name);
    eprintln!("consumers: {results:?}");
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].0, consumer_name);
    assert!(
        matches!(results[0].1, Outcome::Updated { .. }),
        "{results:?}"
    );
    let c = inspect("container", &consumer_name).expect("consumer exists");
    volumes.add_from(&c);
    assert_eq!(
        c["HostConfig"]["NetworkMode"],
        format!("container:{new_id}")
    );
    assert_eq!(c["State"]["Running"], true);
    assert_eq!(
        c["Config"]["Image"],
        world.v1.name_tag(),
        "kept on its own image"
    );
    assert_eq!(c["Config"]["Labels"]["app.role"], "sidecar");
    assert!(exec(&consumer_name, "ip -4 addr").contains(&net.ip(20)));
    assert_eq!(
        containers_exactly(&consumer_name),
        vec![consumer_name.clone()]
    );

    // A provider stopped and started again (as a rollback does) keeps its id; a restart of
    // the consumer is enough, and nothing else is touched.
    let consumer_id = c["Id"].as_str().unwrap_or_default().to_string();
    docker_ok(&["restart", "-t", "1", &name]);
    assert!(
        !exec(&consumer_name, "ip -4 addr").contains(&net.ip(20)),
        "namespace died"
    );
    let results = updater.restart_consumers(&name);
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(
        matches!(results[0].1, Outcome::Unchanged { .. }),
        "{results:?}"
    );
    assert!(exec(&consumer_name, "ip -4 addr").contains(&net.ip(20)));
    assert_eq!(
        inspect("container", &consumer_name).expect("consumer")["Id"],
        consumer_id.as_str()
    );
    assert!(
        updater.restart_consumers(&name).is_empty(),
        "nothing left to do"
    );
}

#[test]
fn dry_run_cancel_and_rollback_request() {
    // Daemons started by other tests recover every parked container on the engine.
    let _one = fixtures::exclusive();
    if !fixtures::require_registry_tools() {
        return;
    }
    let mut world = World::new("upd-dry", plain, plain);
    let net = Network::create();
    let mut volumes = Volumes::default();
    let name = unique("upd-dry-ctr");
    let _sweep = Sweep(name.clone());
    let ctr = simple_container(&world, &net, &name);
    ctr.wait_running(HEALTHY);
    volumes.add_from(&ctr.inspect());
    world.publish_v2();
    let updater = updater_with((1, 41), &world.registry, update_config());
    let before = ctr.inspect();

    let mut req = request(ctr.id());
    req.dry_run = true;
    let outcome = run(&updater, &req);
    let Outcome::Planned { steps } = outcome else {
        panic!("expected Planned, got {outcome:?}");
    };
    let text = steps.join("\n");
    for want in [
        "pull ",
        "rename ",
        "set the restart policy",
        "stop ",
        "create ",
        "start ",
        "wait ",
        "remove ",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    let after = ctr.inspect();
    for field in [
        "/Id",
        "/Name",
        "/State/StartedAt",
        "/HostConfig/RestartPolicy",
    ] {
        assert_eq!(before.pointer(field), after.pointer(field), "{field}");
    }
    assert!(
        inspect("image", &world.reference).is_none(),
        "a dry run pulled"
    );

    let outcome = updater.update(&request(ctr.id()), &AtomicBool::new(true));
    assert!(
        matches!(&outcome, Outcome::Failed { rolled_back: false, error }
            if error.contains("abandoned")),
        "{outcome:?}"
    );
    assert_eq!(
        ctr.inspect().pointer("/State/StartedAt"),
        before.pointer("/State/StartedAt")
    );

    let mut req = request(ctr.id());
    req.rollback = true;
    let outcome = run(&updater, &req);
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                rolled_back: false,
                ..
            }
        ),
        "no previous image: {outcome:?}"
    );

    let outcome = run(&updater, &request(ctr.id()));
    let Outcome::Updated { new_id, .. } = outcome else {
        panic!("expected Updated, got {outcome:?}");
    };
    volumes.add_from(&ctr.inspect_current().expect("updated"));
    let mut req = request(&new_id);
    req.rollback = true;
    let outcome = run(&updater, &req);
    assert!(
        matches!(&outcome, Outcome::Updated { to_image, .. } if to_image == world.v1.id()),
        "{outcome:?}"
    );
    let v = assert_intact(&name, &net, None);
    assert_eq!(v["Image"], world.v1.id());
    assert_eq!(
        v["Config"]["Labels"]["watchdocker.previous-image"],
        world.v2.id()
    );
}

/// Prints (does not assert) the downtime of an update next to `docker stop` + `docker run` of the
/// same container: engine timestamps, old `FinishedAt` → new `StartedAt`.
#[test]
fn downtime_of_an_update_next_to_stop_and_run() {
    // Daemons started by other tests recover every parked container on the engine.
    let _one = fixtures::exclusive();
    if !fixtures::require_registry_tools() {
        return;
    }
    let mut world = World::new("upd-time", plain, plain);
    let net = Network::create();
    let mut volumes = Volumes::default();
    let name = unique("upd-time-ctr");
    let _sweep = Sweep(name.clone());
    let manual = unique("upd-time-manual");
    let _sweep_manual = Sweep(manual.clone());

    let ctr = simple_container(&world, &net, &manual);
    ctr.wait_running(HEALTHY);
    volumes.add_from(&ctr.inspect());
    let started = Instant::now();
    docker_ok(&["stop", &manual]);
    let rerun = unique("upd-time-manual2");
    let _sweep_rerun = Sweep(rerun.clone());
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &rerun,
        "-e",
        "USER_VAR=u",
        "--network",
        net.name(),
        "--network-alias",
        "svc",
        "--ip",
        &net.ip(20),
        "--restart",
        "unless-stopped",
        &world.reference,
    ]);
    let wall_manual = started.elapsed();
    let stopped = inspect("container", &manual).expect("stopped");
    let rerun_v = inspect("container", &rerun).expect("rerun");
    volumes.add_from(&rerun_v);
    let manual_down = timestamp(&rerun_v["State"]["StartedAt"])
        .duration_since(timestamp(&stopped["State"]["FinishedAt"]));
    docker_ok(&["rm", "-f", &manual, &rerun]);

    let ctr = simple_container(&world, &net, &name);
    ctr.wait_running(HEALTHY);
    volumes.add_from(&ctr.inspect());
    world.publish_v2();
    let mut cfg = update_config();
    cfg.remove_old_container = false;
    let updater = updater_with((1, 41), &world.registry, cfg);
    let outcome = run(&updater, &request(ctr.id()));
    assert!(matches!(outcome, Outcome::Updated { .. }), "{outcome:?}");
    let new = ctr.inspect_current().expect("new");
    let old = ctr.inspect();
    let update_down = timestamp(&new["State"]["StartedAt"])
        .duration_since(timestamp(&old["State"]["FinishedAt"]));
    eprintln!(
        "DOWNTIME update (old FinishedAt → new StartedAt): {update_down:?}; \
         docker stop + docker run: {manual_down:?} (wall clock of both commands {wall_manual:?})"
    );
}

/// With `cleanupImages`, an update removes the image that nothing runs or names any more (the
/// one before the previous), and keeps the previous one for a rollback.
#[test]
fn cleanup_removes_only_images_nobody_needs() {
    // Daemons started by other tests recover every parked container on the engine.
    let _one = fixtures::exclusive();
    if !fixtures::require_registry_tools() {
        return;
    }
    let mut world = World::new("upd-clean", plain, plain);
    let v3 = {
        let _lock = images_lock();
        plain(&format!("{}:v3", unique("upd-clean")))
    };
    let net = Network::create();
    let mut volumes = Volumes::default();
    let name = unique("upd-clean-ctr");
    let _sweep = Sweep(name.clone());
    let ctr = simple_container(&world, &net, &name);
    ctr.wait_running(HEALTHY);
    volumes.add_from(&ctr.inspect());
    // As on a real host: the old images are known only by their registry digest.
    docker_ok(&["rmi", world.v1.name_tag()]);
    world.publish_v2();
    docker_ok(&["rmi", world.v2.name_tag()]);
    let mut cfg = update_config();
    cfg.cleanup_images = true;
    let updater = updater_with((1, 41), &world.registry, cfg);

    let outcome = run(&updater, &request(ctr.id()));
    let Outcome::Updated { new_id, .. } = outcome else {
        panic!("expected Updated, got {outcome:?}");
    };
    volumes.add_from(&ctr.inspect_current().expect("updated"));
    assert!(
        inspect("image", world.v1.id()).is_some(),
        "v1 is the previous image: kept"
    );

    let repo_tag = world
        .reference
        .split_once('/')
        .map(|(_, r)| r.to_string())
        .unwrap_or_default();
    let pushed = v3.push_to(&world.registry, &repo_tag);
    world.untag();
    // This update removes an image.
    let lock = images_lock();
    let outcome = run(&updater, &request(&new_id));
    drop(lock);
    assert!(matches!(outcome, Outcome::Updated { .. }), "{outcome:?}");
    volumes.add_from(&ctr.inspect_current().expect("updated"));
    assert!(
        inspect("image", world.v1.id()).is_none(),
        "v1: nothing runs or names it"
    );
    assert!(
        inspect("image", world.v2.id()).is_some(),
        "v2 is the previous image: kept"
    );
    drop(pushed);
    let _lock = images_lock();
    let _ = docker(&["rmi", "-f", v3.id()]);
}

/// `{"image": "repo:newtag"}`: the same safe sequence, and the new container names that reference.
#[test]
fn image_override_moves_to_another_reference() {
    // Daemons started by other tests recover every parked container on the engine.
    let _one = fixtures::exclusive();
    if !fixtures::require_registry_tools() {
        return;
    }
    let world = World::new("upd-move", plain, plain);
    let net = Network::create();
    let mut volumes = Volumes::default();
    let name = unique("upd-move-ctr");
    let _sweep = Sweep(name.clone());
    let ctr = simple_container(&world, &net, &name);
    ctr.wait_running(HEALTHY);
    volumes.add_from(&ctr.inspect());
    let repo = world
        .reference
        .split_once('/')
        .and_then(|(_, r)| r.rsplit_once(':'))
        .map(|(repo, _)| repo.to_string())
        .unwrap_or_default();
    let next = world.v2.push_to(&world.registry, &format!("{repo}:next"));
    docker_ok(&["rmi", next.reference()]);
    let updater = updater_with((1, 41), &world.registry, update_config());

    let mut req = request(ctr.id());
    req.image = Some(String::new());
    let outcome = run(&updater, &req);
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                rolled_back: false,
                ..
            }
        ),
        "{outcome:?}"
    );

    req.image = Some(next.reference().to_string());
    let outcome = run(&updater, &req);
    assert!(
        matches!(&outcome, Outcome::Updated { to_image, .. } if to_image == world.v2.id()),
        "{outcome:?}"
    );
    let v = assert_intact(&name, &net, None);
    volumes.add_from(&v);
    assert_eq!(v["Config"]["Image"], next.reference());
    assert_eq!(v["Image"], world.v2.id());
}

/// `--rm`: the replacement is created before the old one is stopped (the old one vanishes on
/// stop); a crash at each of those steps still leaves one running container under the name.
#[test]
fn recovery_of_an_rm_container_after_a_crash_at_each_step() {
    // Daemons started by other tests recover every parked container on the engine.
    let _one = fixtures::exclusive();
    if !fixtures::require_registry_tools() {
        return;
    }
    let mut world = World::new("upd-rmcrash", plain, plain);
    world.publish_v2();
    let mut volumes = Volumes::default();
    let mut cfg = update_config();
    cfg.settle_time = Duration::from_millis(500);
    for step in [
        Step::Renamed,
        Step::Created,
        Step::Connected,
        Step::Stopped,
        Step::Started,
    ] {
        let name = unique("upd-rmcrash-ctr");
        let _sweep = Sweep(name.clone());
        world.retag_v1();
        let ctr = ContainerBuilder::new(&world.reference)
            .name(&name)
            .env("USER_VAR", "u")
            .rm()
            .run();
        world.untag();
        ctr.wait_running(HEALTHY);
        exec(&name, "echo kept > /data/f");
        volumes.add_from(&ctr.inspect());
        let crashing = updater_with((1, 41), &world.registry, cfg.clone()).with_crash_after(step);
        let outcome = run(&crashing, &request(ctr.id()));
        assert!(
            matches!(outcome, Outcome::Failed { .. }),
            "{step:?}: {outcome:?}"
        );
        let lines =
            updater_with((1, 41), &world.registry, cfg.clone()).recover_where(&|n| n == name);
        eprintln!("recover after {step:?}: {lines:?}");
        if step != Step::Started {
            assert!(
                lines.iter().any(|l| l.contains(&name)),
                "{step:?}: {lines:?}"
            );
        }
        let v = fixtures::wait_for(&format!("{name} running"), HEALTHY, || {
            inspect("container", &name).filter(|v| v["State"]["Running"] == true)
        });
        assert_eq!(
            containers_exactly(&name),
            vec![name.clone()],
            "{step:?}: exactly one"
        );
        volumes.add_from(&v);
        assert!(env_of(&v).contains("USER_VAR=u"), "{step:?}");
        assert_eq!(v["HostConfig"]["AutoRemove"], true, "{step:?}");
        assert_eq!(exec(&name, "cat /data/f"), "kept", "{step:?}");
        let again =
            updater_with((1, 41), &world.registry, cfg.clone()).recover_where(&|n| n == name);
        assert!(!again.iter().any(|l| l.contains(&name)), "{again:?}");
        let _ = docker(&["rm", "-f", &name]);
        fixtures::wait_for("the --rm container to be gone", HEALTHY, || {
            inspect("container", &name).is_none().then_some(())
        });
    }
}
