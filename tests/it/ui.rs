//! The status page in a real browser: runs the Python suite in `tests/ui` (playwright driving
//! Debian's chromium) against the binary this build produced, so `cargo test` covers it too.
//! With `WATCH_IT_REQUIRE=1` a missing browser or playwright fails instead of skipping.

use crate::fixtures;
use std::process::Command;

fn browser_tools() -> Result<(), String> {
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        return Err("/usr/bin/chromium is missing (apt-get install chromium)".into());
    }
    let probe = Command::new("python3")
        .args(["-c", "import playwright, pytest"])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !probe.status.success() {
        return Err(
            "python3 lacks playwright/pytest (pip install -r tests/ui/requirements.txt)".into(),
        );
    }
    Ok(())
}

#[test]
fn status_page_in_a_real_browser() {
    if !fixtures::require_engine() || !fixtures::require_registry_tools() {
        return;
    }
    if let Err(why) = browser_tools() {
        if std::env::var("WATCH_IT_REQUIRE").as_deref() == Ok("1") {
            panic!("browser tests required but {why}");
        }
        eprintln!("note: skipping the browser tests: {why}");
        return;
    }
    // The suite starts daemons (crash recovery) and updates containers.
    let _one = fixtures::exclusive();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/ui"])
        .current_dir(root)
        .env("WATCH_BIN", env!("CARGO_BIN_EXE_watch-docker"))
        .env("WATCH_UI_FULL", "1")
        .output()
        .expect("run pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "browser tests failed:\n{text}");
    assert!(text.contains(" passed"), "no browser test ran:\n{text}");
}
