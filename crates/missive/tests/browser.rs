//! The browser app end to end: runs the Playwright tests in `e2e/`
//! (Debian's Chromium, headless) against this build's binary. They start
//! their own `missive serve` on random ports; see e2e/chat.test.mjs.
//!
//! Needs `/usr/bin/chromium`, Node.js, `npm ci` in `e2e/` and the browser's
//! encryption module built into the binary (`scripts/build_web_e2ee.sh`
//! before `cargo build`; `.ci/run` does all four). Without them the test is
//! skipped with the reason, except under CI, where a skipped browser suite
//! would hide a broken app.

use std::path::Path;
use std::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";

#[test]
fn the_browser_app_passes_its_chromium_suite() {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e");
    let node = Command::new("node").arg("--version").output();
    let missing = if !Path::new(CHROMIUM).exists() {
        Some(format!(
            "{CHROMIUM} is not installed (apt-get install chromium)"
        ))
    } else if !node.is_ok_and(|output| output.status.success()) {
        Some("node is not installed".to_owned())
    } else if !e2e.join("node_modules/playwright-core").exists() {
        Some("e2e/node_modules is missing (npm ci --prefix e2e)".to_owned())
    } else if !e2e.join("../crates/server/web/e2ee/e2ee_bg.wasm").exists() {
        Some("the encryption module is not built (scripts/build_web_e2ee.sh)".to_owned())
    } else {
        None
    };
    if let Some(reason) = missing {
        assert!(
            std::env::var_os("CI").is_none(),
            "the browser suite cannot run under CI: {reason}"
        );
        eprintln!("skipping the browser suite: {reason}");
        return;
    }
    let output = Command::new("node")
        .args(["--test", "--test-concurrency=1", "--test-reporter=tap", "."])
        .current_dir(&e2e)
        .env("MISSIVE_BIN", env!("CARGO_BIN_EXE_missive"))
        .output()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser suite failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A suite that found no test files also exits 0.
    let passed = stdout
        .lines()
        .find_map(|line| line.strip_prefix("# pass "))
        .and_then(|count| count.trim().parse::<u32>().ok());
    assert!(
        passed.is_some_and(|n| n > 0),
        "no browser test ran:\n{stdout}"
    );
}
