//! What the browser tests need: node, `npm ci --prefix tests/browser` and Chromium.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The scripts' folder and Chromium's path; fails naming whatever is missing and how to get it.
pub fn prerequisites() -> (PathBuf, String) {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing: Vec<&str> = [
        (
            Command::new("node").arg("--version").output().is_err(),
            "node",
        ),
        (
            !scripts.join("node_modules/playwright-core").exists(),
            "tests/browser/node_modules (npm ci --prefix tests/browser)",
        ),
        (!Path::new(&chromium).exists(), "chromium"),
    ]
    .iter()
    .filter(|(m, _)| *m)
    .map(|(_, w)| *w)
    .collect();
    assert!(
        missing.is_empty(),
        "the browser test needs {missing:?} (apt install chromium fonts-noto-color-emoji nodejs npm; npm ci --prefix tests/browser)"
    );
    (scripts, chromium)
}
