//! The order of a batch of updates (SPEC §6 "Order and concurrency"): one group per image, so one
//! pull serves all its containers, updated one after another; providers before consumers.
//!
//! Pure: the caller supplies what it knows of each container, including two `HostConfig` facts
//! from the container's inspect data (`NetworkMode` and `Links`), which discovery does not keep.

use crate::labels;
use std::collections::{BTreeMap, BTreeSet};

/// One container of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderItem {
    /// Full id; `order` returns these.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// The reference it will be updated to (`Config.Image`, or the override): the group key.
    pub image: String,
    /// `HostConfig.NetworkMode` (`container:<id or name>` makes it a consumer).
    pub network_mode: String,
    /// `HostConfig.Links` as inspected (`/db:/app/db`).
    pub links: Vec<String>,
    /// Its labels (compose `depends_on`, project and service; watchtower's `depends-on`).
    pub labels: BTreeMap<String, String>,
}

/// Groups of container ids. Each group holds the containers of one image, to be updated one after
/// another in the given order, after one pull. A group never depends on a later one: run the
/// groups in order. Groups whose containers depend on each other in a cycle (through several
/// images) are merged into one. Dependencies outside the batch are ignored.
pub fn order(batch: &[OrderItem]) -> Vec<Vec<String>> {
    plan(batch).into_iter().map(|(group, _)| group).collect()
}

/// The groups of [`order`] in waves: a group depends only on groups of earlier waves, so the
/// groups of one wave may be updated side by side (`update.concurrency`).
pub fn waves(batch: &[OrderItem]) -> Vec<Vec<Vec<String>>> {
    let plan = plan(batch);
    // A group's wave is one past the latest wave of what it needs (groups come in dependency
    // order, so those waves are known when it is reached).
    let mut wave_of = vec![0usize; plan.len()];
    let mut waves: Vec<Vec<Vec<String>>> = Vec::new();
    for (g, (group, needs)) in plan.into_iter().enumerate() {
        let w = needs.iter().map(|&d| wave_of[d] + 1).max().unwrap_or(0);
        wave_of[g] = w;
        if waves.len() <= w {
            waves.resize_with(w + 1, Vec::new);
        }
        waves[w].push(group);
    }
    waves
}

/// The ordered groups, each with the positions (in the returned list) of the groups it needs.
fn plan(batch: &[OrderItem]) -> Vec<(Vec<String>, BTreeSet<usize>)> {
    let n = batch.len();
    // deps[i]: indices that i needs first.
    let deps: Vec<BTreeSet<usize>> = batch
        .iter()
        .enumerate()
        .map(|(i, item)| {
            providers(item, batch)
                .into_iter()
                .filter(|&j| j != i)
                .collect()
        })
        .collect();

    // Groups by image, in order of first appearance.
    let mut group_of = vec![0usize; n];
    let mut keys: Vec<&str> = Vec::new();
    for (i, item) in batch.iter().enumerate() {
        let g = match keys.iter().position(|k| *k == item.image) {
            Some(g) => g,
            None => {
                keys.push(&item.image);
                keys.len() - 1
            }
        };
        group_of[i] = g;
    }
    let groups = keys.len();
    let mut group_deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); groups];
    for (i, d) in deps.iter().enumerate() {
        for &j in d {
            if group_of[j] != group_of[i] {
                group_deps[group_of[i]].insert(group_of[j]);
            }
        }
    }

    // Merge groups on a cycle: components of mutual reachability.
    let reach = reachability(&group_deps);
    let mut component = vec![usize::MAX; groups];
    let mut components: Vec<Vec<usize>> = Vec::new();
    for g in 0..groups {
        if component[g] != usize::MAX {
            continue;
        }
        let members: Vec<usize> = (0..groups)
            .filter(|&h| h == g || (reach[g].contains(&h) && reach[h].contains(&g)))
            .collect();
        for &m in &members {
            component[m] = components.len();
        }
        components.push(members);
    }
    let mut component_deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); components.len()];
    for (g, d) in group_deps.iter().enumerate() {
        for &h in d {
            if component[h] != component[g] {
                component_deps[component[g]].insert(component[h]);
            }
        }
    }

    let sorted = topological(&component_deps);
    let mut position = vec![0usize; sorted.len()];
    for (p, &c) in sorted.iter().enumerate() {
        position[c] = p;
    }
    let mut out = Vec::new();
    for &c in &sorted {
        let members: Vec<usize> = (0..n).filter(|&i| component[group_of[i]] == c).collect();
        let local: Vec<BTreeSet<usize>> = members
            .iter()
            .map(|&i| {
                deps[i]
                    .iter()
                    .filter_map(|j| members.iter().position(|m| m == j))
                    .collect()
            })
            .collect();
        let ids = topological(&local)
            .into_iter()
            .map(|k| batch[members[k]].id.clone())
            .collect();
        let needs = component_deps[c].iter().map(|&d| position[d]).collect();
        out.push((ids, needs));
    }
    out
}

/// Indices of the items `item` needs first.
fn providers(item: &OrderItem, batch: &[OrderItem]) -> Vec<usize> {
    let by_name = |name: &str| {
        let name = name.trim().trim_start_matches('/');
        batch.iter().position(|c| c.name == name)
    };
    let by_name_or_id = |s: &str| {
        by_name(s).or_else(|| {
            (s.len() >= 12)
                .then(|| batch.iter().position(|c| c.id.starts_with(s)))
                .flatten()
        })
    };
    let mut out = Vec::new();
    if let Some(p) = item.network_mode.strip_prefix("container:") {
        out.extend(by_name_or_id(p));
    }
    for link in &item.links {
        let target = link.split(':').next().unwrap_or(link);
        out.extend(by_name_or_id(target));
    }
    if let Some(names) = item.labels.get(labels::WATCHTOWER_DEPENDS_ON) {
        out.extend(names.split(',').filter_map(by_name));
    }
    if let Some(deps) = item.labels.get(labels::COMPOSE_DEPENDS_ON) {
        let project = item.labels.get(labels::COMPOSE_PROJECT);
        // `service:condition:restart,...` (older compose: `service:condition` or `service`).
        for service in deps.split(',').filter_map(|d| d.split(':').next()) {
            let service = service.trim();
            out.extend(batch.iter().enumerate().filter_map(|(j, c)| {
                (c.labels.get(labels::COMPOSE_PROJECT) == project
                    && c.labels.get(labels::COMPOSE_SERVICE).map(String::as_str) == Some(service))
                .then_some(j)
            }));
        }
    }
    out
}

/// For each node, every node it reaches through `deps`.
fn reachability(deps: &[BTreeSet<usize>]) -> Vec<BTreeSet<usize>> {
    (0..deps.len())
        .map(|start| {
            let mut seen = BTreeSet::new();
            let mut todo: Vec<usize> = deps[start].iter().copied().collect();
            while let Some(x) = todo.pop() {
                if seen.insert(x) {
                    todo.extend(deps[x].iter().copied());
                }
            }
            seen
        })
        .collect()
}

/// Providers first; among ready nodes the lowest index (input order) first; a cycle is broken at
/// its lowest index.
fn topological(deps: &[BTreeSet<usize>]) -> Vec<usize> {
    let n = deps.len();
    let mut done = vec![false; n];
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let ready = (0..n).find(|&i| !done[i] && deps[i].iter().all(|&d| done[d]));
        let next = ready.unwrap_or_else(|| (0..n).find(|&i| !done[i]).unwrap_or(0));
        done[next] = true;
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, image: &str) -> OrderItem {
        OrderItem {
            id: format!("{id}0000000000000000"),
            name: id.to_string(),
            image: image.to_string(),
            network_mode: "bridge".into(),
            links: Vec::new(),
            labels: BTreeMap::new(),
        }
    }

    fn names(groups: Vec<Vec<String>>) -> Vec<Vec<String>> {
        groups
            .into_iter()
            .map(|g| {
                g.into_iter()
                    .map(|id| id.trim_end_matches('0').to_string())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn one_group_per_image_in_input_order() {
        let batch = [item("a", "x:1"), item("b", "y:1"), item("c", "x:1")];
        assert_eq!(names(order(&batch)), vec![vec!["a", "c"], vec!["b"]]);
        assert!(order(&[]).is_empty());
    }

    #[test]
    fn network_providers_and_links_come_first() {
        let mut consumer = item("cons", "x:1");
        consumer.network_mode = "container:prov0000000000000000".into();
        let mut app = item("app", "y:1");
        app.links = vec!["/db:/app/db".into()];
        let batch = [consumer, app, item("prov", "z:1"), item("db", "x:1")];
        // x's group holds cons (needs prov) and db (needed by app): x needs z, y needs x.
        assert_eq!(
            names(order(&batch)),
            vec![vec!["prov"], vec!["cons", "db"], vec!["app"]]
        );
    }

    #[test]
    fn independent_groups_share_a_wave() {
        let mut app = item("app", "y:1");
        app.links = vec!["/db:/app/db".into()];
        let mut worker = item("worker", "k:1");
        worker.network_mode = "container:app".into();
        let batch = [app, item("db", "x:1"), item("cache", "c:1"), worker];
        let got: Vec<_> = waves(&batch).into_iter().map(names).collect();
        assert_eq!(
            got,
            vec![
                vec![vec!["db"], vec!["cache"]],
                vec![vec!["app"]],
                vec![vec!["worker"]]
            ]
        );
        assert!(waves(&[]).is_empty());
    }

    #[test]
    fn compose_and_watchtower_dependencies() {
        let mut web = item("web", "w:1");
        web.labels = BTreeMap::from([
            (labels::COMPOSE_PROJECT.into(), "p".into()),
            (labels::COMPOSE_SERVICE.into(), "web".into()),
            (
                labels::COMPOSE_DEPENDS_ON.into(),
                "db:service_started:false".into(),
            ),
        ]);
        let mut db = item("p-db-1", "d:1");
        db.labels = BTreeMap::from([
            (labels::COMPOSE_PROJECT.into(), "p".into()),
            (labels::COMPOSE_SERVICE.into(), "db".into()),
        ]);
        let mut worker = item("worker", "k:1");
        worker.labels = BTreeMap::from([(labels::WATCHTOWER_DEPENDS_ON.into(), "web, /x".into())]);
        let batch = [worker, web, db];
        assert_eq!(
            names(order(&batch)),
            vec![vec!["p-db-1"], vec!["web"], vec!["worker"]]
        );
    }

    #[test]
    fn cycles_across_images_merge_and_never_loop() {
        let mut a = item("a", "x:1");
        a.links = vec!["/b:/a/b".into()];
        let mut b = item("b", "y:1");
        b.network_mode = "container:c".into();
        let mut c = item("c", "x:1");
        c.links = vec!["/a:/c/a".into()];
        let groups = names(order(&[a, b, c]));
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].len(), 3);
        let mut self_dep = item("s", "x:1");
        self_dep.network_mode = "container:s".into();
        assert_eq!(names(order(&[self_dep])), vec![vec!["s"]]);
    }
}
