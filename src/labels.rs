//! Label names we read or write. One place, so the policy, discovery and updater agree.

pub const SKIP: &str = "watchdocker.skip";
pub const FORCE: &str = "watchdocker.force";
pub const ENABLE: &str = "watchdocker.enable";
pub const POLICY: &str = "watchdocker.policy";
pub const PREVIOUS_IMAGE: &str = "watchdocker.previous-image";
pub const UPDATED_AT: &str = "watchdocker.updated-at";

pub const WATCHTOWER_ENABLE: &str = "com.centurylinklabs.watchtower.enable";
pub const WATCHTOWER_MONITOR_ONLY: &str = "com.centurylinklabs.watchtower.monitor-only";
pub const WATCHTOWER_DEPENDS_ON: &str = "com.centurylinklabs.watchtower.depends-on";

pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
pub const COMPOSE_DEPENDS_ON: &str = "com.docker.compose.depends_on";
