//! Discovery: the engine's containers joined with their images into `ContainerInfo` (SPEC.md §4),
//! plus the local image list with the containers that use each image, and recognition of our own
//! container. Asks only the engine (through `docker::Engine`); knows nothing of registries or policy.

use crate::docker::model::{ContainerInspect, ImageInspect, ImageSummary};
use crate::docker::{Engine, EngineError};
use crate::labels;
use crate::model::{ContainerInfo, ImageInfo, Platform};
use std::collections::{BTreeMap, HashMap};

/// Everything one discovery pass found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Discovery {
    pub containers: Vec<ContainerInfo>,
    pub images: Vec<ImageInfo>,
}

/// Lists containers (running only unless `include_stopped`) and images, and joins them.
/// Containers that vanish between the list and their inspect are left out, not an error.
pub fn discover(
    engine: &Engine,
    include_stopped: bool,
    self_id: Option<&str>,
) -> Result<Discovery, EngineError> {
    let summaries = engine.list_containers(include_stopped)?;
    let mut inspects = Vec::with_capacity(summaries.len());
    for s in &summaries {
        match engine.inspect_container(&s.id) {
            Ok(c) => inspects.push(c),
            // Removed between list and inspect: it is simply gone.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    let images = engine.list_images()?;
    let mut image_inspects = HashMap::new();
    for c in &inspects {
        if image_inspects.contains_key(&c.image) {
            continue;
        }
        match engine.inspect_image(&c.image) {
            Ok(i) => {
                image_inspects.insert(c.image.clone(), i);
            }
            // An image removed while a container still references it (`docker rmi -f`): the
            // container is still listed, with what the container itself tells.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(join(&inspects, &images, &image_inspects, self_id))
}

/// The pure join of containers with images. `self_id` is our own container's full id, if any.
pub fn join(
    containers: &[ContainerInspect],
    images: &[ImageSummary],
    image_inspects: &HashMap<String, ImageInspect>,
    self_id: Option<&str>,
) -> Discovery {
    let mut out: Vec<ContainerInfo> = containers
        .iter()
        .map(|c| container_info(c, images, image_inspects.get(&c.image), self_id))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));

    let mut users: HashMap<&str, Vec<String>> = HashMap::new();
    for c in &out {
        users
            .entry(c.image_id.as_str())
            .or_default()
            .push(c.name.clone());
    }
    let mut imgs: Vec<ImageInfo> = images
        .iter()
        .map(|i| ImageInfo {
            id: i.id.clone(),
            repo_tags: i.repo_tags.clone(),
            repo_digests: i.repo_digests.clone(),
            size: i.size,
            created: unix_to_rfc3339(i.created),
            containers: users.get(i.id.as_str()).cloned().unwrap_or_default(),
        })
        .collect();
    imgs.sort_by(|a, b| a.repo_tags.cmp(&b.repo_tags).then(a.id.cmp(&b.id)));
    Discovery {
        containers: out,
        images: imgs,
    }
}

fn container_info(
    c: &ContainerInspect,
    images: &[ImageSummary],
    inspect: Option<&ImageInspect>,
    self_id: Option<&str>,
) -> ContainerInfo {
    let summary = images.iter().find(|i| i.id == c.image);
    // Prefer the image inspect (it has the platform); fall back to the list entry.
    let (repo_tags, repo_digests) = match (inspect, summary) {
        (Some(i), _) => (i.repo_tags.clone(), i.repo_digests.clone()),
        (None, Some(s)) => (s.repo_tags.clone(), s.repo_digests.clone()),
        (None, None) => (vec![], vec![]),
    };
    let platform = inspect
        .map(|i| Platform::normalised(&i.os, &i.architecture, Some(i.variant.as_str())))
        .unwrap_or_default();
    let labels: BTreeMap<String, String> = c.config.labels.clone();
    ContainerInfo {
        id: c.id.clone(),
        name: c.name.trim_start_matches('/').to_string(),
        image: c.config.image.clone(),
        image_id: c.image.clone(),
        repo_tags,
        repo_digests,
        compose_project: labels.get(labels::COMPOSE_PROJECT).cloned(),
        compose_service: labels.get(labels::COMPOSE_SERVICE).cloned(),
        labels,
        state: c.state.status.clone(),
        running: c.state.running,
        created: c.created.clone(),
        platform,
        is_self: self_id.is_some_and(|s| s == c.id),
    }
}

fn unix_to_rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Finds our own container id when we run inside a container, from what the kernel shows us:
/// cgroup v1 paths (`/docker/<id>`, `docker-<id>.scope`) and, on cgroup v2 where `/proc/self/cgroup`
/// is just `0::/`, the engine's bind mounts of `/etc/hostname` etc. from
/// `/var/lib/docker/containers/<id>/`. The hostname (the short id by default) is a last resort,
/// matched against the listed containers by the caller.
pub fn self_container_id(cgroup: &str, mountinfo: &str) -> Option<String> {
    cgroup
        .lines()
        .find_map(|l| l.rsplit(':').next().and_then(id_in_path))
        .or_else(|| {
            mountinfo
                .lines()
                .filter(|l| l.contains("/containers/"))
                .find_map(|l| {
                    l.split(' ').find_map(|field| {
                        let rest = field.split("/containers/").nth(1)?;
                        let id = rest.split('/').next()?;
                        is_full_id(id).then(|| id.to_string())
                    })
                })
        })
}

fn id_in_path(path: &str) -> Option<String> {
    path.split('/').rev().find_map(|seg| {
        let seg = seg
            .strip_prefix("docker-")
            .and_then(|s| s.strip_suffix(".scope"))
            .unwrap_or(seg);
        is_full_id(seg).then(|| seg.to_string())
    })
}

fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Reads the process's view of itself and returns our container id, if we are in one.
/// `hostname` is matched against container ids when the kernel files tell nothing.
pub fn detect_self(container_ids: &[&str]) -> Option<String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    if let Some(id) = self_container_id(&read("/proc/self/cgroup"), &read("/proc/self/mountinfo")) {
        return Some(id);
    }
    let host = read("/etc/hostname");
    let host = host.trim();
    // Docker's default hostname is the 12-character short id.
    if host.len() == 12 && host.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut matches = container_ids.iter().filter(|id| id.starts_with(host));
        if let (Some(id), None) = (matches.next(), matches.next()) {
            return Some(id.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5d6c7b8a99001122334455667788990011223344556677889900aabbccdd";

    #[test]
    fn self_id_from_cgroup_v1() {
        let cg = format!("12:pids:/docker/{ID}\n11:cpu:/docker/{ID}\n");
        assert_eq!(self_container_id(&cg, ""), Some(ID.to_string()));
        let cg = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(self_container_id(&cg, ""), Some(ID.to_string()));
    }

    #[test]
    fn self_id_from_mountinfo_on_cgroup_v2() {
        let mi = format!(
            "1 0 0:1 / / rw - overlay overlay rw\n\
             612 600 254:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw - ext4 /dev/vda1 rw\n"
        );
        assert_eq!(self_container_id("0::/\n", &mi), Some(ID.to_string()));
    }

    #[test]
    fn not_in_a_container() {
        let mi = "22 1 254:1 / / rw - ext4 /dev/vda1 rw\n";
        assert_eq!(
            self_container_id("0::/user.slice/session-1.scope\n", mi),
            None
        );
        assert_eq!(self_container_id("", ""), None);
        // Upper-case or short hex is not a container id.
        assert_eq!(self_container_id("0::/docker/ABC\n", ""), None);
    }
}
