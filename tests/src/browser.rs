//! Headless Chromium driven over WebDriver (chromedriver), for tests of the
//! dashboard as a browser runs it: its script, its fetches, its refreshes.
//!
//! Debian's `chromium` and `chromium-driver` packages provide the two
//! binaries; `cargo xtask test` installs them on a machine without.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::{free_port, temp_dir, try_call, wait_until};

/// Where chromedriver is: `CAIRN_CHROMEDRIVER`, else Debian's path.
fn chromedriver() -> PathBuf {
    std::env::var_os("CAIRN_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"))
}

/// Where Chromium is: `CAIRN_CHROMIUM`, else Debian's path.
fn chromium() -> PathBuf {
    std::env::var_os("CAIRN_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// One browser session; the driver and the browser stop when it drops.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile and
    /// a `width`×`height` window. Panics, saying how to install them, when
    /// they are missing.
    pub fn start(width: u32, height: u32) -> Browser {
        let (driver_path, browser_path) = (chromedriver(), chromium());
        assert!(
            driver_path.exists() && browser_path.exists(),
            "the dashboard test needs Chromium and chromedriver ({} and {}): `cargo xtask test` installs them, or `apt-get install chromium chromium-driver`",
            browser_path.display(),
            driver_path.display()
        );
        let port = free_port(1);
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        wait_until(Duration::from_secs(20), "chromedriver to be ready", || {
            let status = try_call("GET", &format!("{base}/status"), &[], b"").ok()?;
            (status.json()["value"]["ready"] == true).then_some(())
        });
        let profile = temp_dir("chromium-profile");
        // The flags a closed network needs: no background connections, no
        // component updates, no sync.
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": browser_path, "args": args}
        }}});
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
        };
        let created = browser.command("POST", "/session", &capabilities);
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        browser
    }

    /// Sends a WebDriver command; its `value`.
    fn command(&self, method: &str, path: &str, body: &Value) -> Value {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let reply = crate::call(
            method,
            &format!("{}{path}", self.base),
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        let value = reply.json()["value"].clone();
        assert!(
            reply.status == 200,
            "WebDriver {method} {path}: {} {value}",
            reply.status
        );
        value
    }

    fn session_path(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.command("POST", &self.session_path("/url"), &json!({ "url": url }));
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.command(
            "POST",
            &self.session_path("/execute/sync"),
            &json!({ "script": script, "args": [] }),
        )
    }

    /// Waits until `script` returns something other than `null`/`false`,
    /// and returns it.
    pub fn wait_for(&self, timeout: Duration, what: &str, script: &str) -> Value {
        wait_until(timeout, what, || {
            let value = self.eval(script);
            (!value.is_null() && value != false).then_some(value)
        })
    }

    /// Saves a PNG of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        let encoded = self.command("GET", &self.session_path("/screenshot"), &Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = try_call(
                "DELETE",
                &format!("{}/session/{}", self.base, self.session),
                &[],
                b"",
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
