//! Headless Chromium driven through WebDriver (Debian `chromium-driver`'s
//! chromedriver), over the plain HTTP client of `scrape.rs`: open a page,
//! run scripts in it, click elements, switch into frames, take screenshots.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::{Running, chromium, installed};
use crate::scrape_common::{free_port, http_request};

/// The key WebDriver names an element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver with one browser session; both end when dropped.
pub struct Browser {
    driver: Option<Running>,
    addr: SocketAddr,
    session: String,
}

fn chromedriver() -> PathBuf {
    installed("CHROMEDRIVER", "/usr/bin/chromedriver", "chromium-driver")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width` x `height`
    /// with its profile under `dir`.
    pub fn start(dir: &Path, width: u32, height: u32) -> Browser {
        let port = free_port();
        let mut cmd = Command::new(chromedriver());
        cmd.arg(format!("--port={port}"));
        let driver = Running::start(cmd);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http_request(addr, "GET", "/status", &[], None).is_ok_and(|r| r.status == 200) {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            thread::sleep(Duration::from_millis(100));
        }
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).expect("create the chromium profile dir");
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": chromium(),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", format!("--window-size={width},{height}"),
                format!("--user-data-dir={}", profile.display()),
            ],
        }}}});
        let mut b = Browser {
            driver: Some(driver),
            addr,
            session: String::new(),
        };
        let created = b.call("POST", "/session", Some(caps));
        b.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        b
    }

    /// A WebDriver command; returns its `value`, panicking on an error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string());
        let r = http_request(self.addr, method, path, &[], body.as_deref())
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&r.body)
            .map_err(|e| format!("{e}: {}", crate::common::truncate(&r.body, 500)))?;
        if r.status != 200 {
            return Err(format!("{}: {}", r.status, v["value"]));
        }
        Ok(v["value"].clone())
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(json!({ "url": url })),
        );
    }

    /// Runs `script` (a function body; `return` gives the value).
    pub fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Runs `script` until it returns something other than null or false,
    /// at most `timeout`; returns that, or the last value on timeout.
    pub fn wait_for(&self, script: &str, timeout: Duration) -> Result<Value, Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(script);
            if !v.is_null() && v != Value::Bool(false) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(v);
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The element `xpath` finds, or why none.
    pub fn find(&self, xpath: &str) -> Result<String, String> {
        let v = self.try_call(
            "POST",
            &self.session_path("/element"),
            Some(json!({ "using": "xpath", "value": xpath })),
        )?;
        v[ELEMENT]
            .as_str()
            .map(String::from)
            .ok_or_else(|| format!("no element reference in {v}"))
    }

    /// Clicks element `id` as a user would (scrolled into view first).
    pub fn click(&self, id: &str) -> Result<(), String> {
        self.try_call(
            "POST",
            &self.session_path(&format!("/element/{id}/click")),
            Some(json!({})),
        )
        .map(drop)
    }

    /// Opens a new tab and makes it the current one.
    pub fn new_tab(&self) {
        let tab = self.call(
            "POST",
            &self.session_path("/window/new"),
            Some(json!({ "type": "tab" })),
        );
        let handle = tab["handle"]
            .as_str()
            .expect("a new tab's handle")
            .to_string();
        self.call(
            "POST",
            &self.session_path("/window"),
            Some(json!({ "handle": handle })),
        );
    }

    /// Runs the next commands in iframe element `id`; `None`: the page again.
    pub fn frame(&self, id: Option<&str>) {
        let target = id.map_or(Value::Null, |id| json!({ ELEMENT: id }));
        self.call(
            "POST",
            &self.session_path("/frame"),
            Some(json!({ "id": target })),
        );
    }

    /// Saves a PNG of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        self.save_png("/screenshot", path);
    }

    /// Saves a PNG of the element `xpath` finds (scrolled into view) to `path`.
    pub fn screenshot_element(&self, xpath: &str, path: &Path) {
        let id = self.find(xpath).unwrap_or_else(|e| panic!("{xpath}: {e}"));
        self.save_png(&format!("/element/{id}/screenshot"), path);
    }

    fn save_png(&self, what: &str, path: &Path) {
        let b64 = self.call("GET", &self.session_path(what), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("the screenshot is base64");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_call("DELETE", &self.session_path(""), None);
        }
        if let Some(mut driver) = self.driver.take() {
            let _ = driver.child.kill();
            let _ = driver.finish(Duration::from_secs(600));
        }
    }
}
