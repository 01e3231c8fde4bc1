//! A real headless Chromium driven over the W3C WebDriver protocol
//! (`chromedriver`, Debian packages `chromium` and `chromium-driver`, which
//! `.ci/setup` installs). The protocol is a handful of JSON calls, made
//! here with the tests' HTTP client rather than another crate.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// W3C's key for an element reference in WebDriver JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    base: String,
    driver: Child,
    agent: ureq::Agent,
}

/// An element on the current page.
#[derive(Clone)]
pub struct Element(String);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of `width` ×
    /// `height` CSS pixels.
    pub fn start(width: u32, height: u32) -> Browser {
        Browser::with(json!({}), width, height)
    }

    /// A phone: Chromium's mobile emulation of a 390 × 844 screen (an
    /// iPhone 12 to 15), touch and a mobile user agent.
    pub fn phone() -> Browser {
        let metrics =
            json!({"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 1.0, "touch": true}});
        Browser::with(json!({ "mobileEmulation": metrics }), 390, 844)
    }

    fn with(mut options: Value, width: u32, height: u32) -> Browser {
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "Chromium is not installed: run `bash .ci/setup` (Debian packages chromium, chromium-driver)",
            );
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is not installed: run `bash .ci/setup` (Debian package chromium-driver)");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let mut browser = Browser { base: format!("http://127.0.0.1:{port}"), driver, agent };
        let start = Instant::now();
        while browser.agent.get(&format!("{}/status", browser.base)).call().is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        options["binary"] = json!(binary);
        options["args"] = json!([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            format!("--window-size={width},{height}"),
        ]);
        let session = browser.call(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": options,
            }}}),
        );
        let id = session["sessionId"].as_str().expect("a session id").to_string();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let mut response = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.post(&url).send_json(&body),
        }
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status().as_u16();
        let value: Value = response.body_mut().read_json().unwrap();
        assert!(status == 200, "WebDriver {method} {path}: {status} {value}");
        value["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", Value::Null).as_str().unwrap().to_string()
    }

    pub fn title(&self) -> String {
        self.call("GET", "/title", Value::Null).as_str().unwrap().to_string()
    }

    /// Every element matching CSS `selector`.
    pub fn all(&self, selector: &str) -> Vec<Element> {
        let found = self.call("POST", "/elements", json!({"using": "css selector", "value": selector}));
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|e| Element(e[ELEMENT].as_str().unwrap_or_else(|| panic!("{e}")).to_string()))
            .collect()
    }

    /// The one element matching `selector`.
    pub fn one(&self, selector: &str) -> Element {
        let mut found = self.all(selector);
        assert_eq!(found.len(), 1, "`{selector}` matches {} elements on {}", found.len(), self.url());
        found.remove(0)
    }

    /// Rendered text.
    pub fn text(&self, e: &Element) -> String {
        self.call("GET", &format!("/element/{}/text", e.0), Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn attr(&self, e: &Element, name: &str) -> Option<String> {
        self.call("GET", &format!("/element/{}/attribute/{name}", e.0), Value::Null)
            .as_str()
            .map(str::to_string)
    }

    pub fn type_into(&self, e: &Element, text: &str) {
        self.call("POST", &format!("/element/{}/clear", e.0), json!({}));
        self.call("POST", &format!("/element/{}/value", e.0), json!({ "text": text }));
    }

    pub fn click(&self, e: &Element) {
        self.call("POST", &format!("/element/{}/click", e.0), json!({}));
    }

    /// Clicks `e` and waits until the page it leads to has loaded.
    pub fn click_to_load(&self, e: &Element) {
        self.script("window.engageLeaving = true; return 0");
        self.click(e);
        let start = Instant::now();
        let loaded = "return window.engageLeaving === undefined && document.readyState === 'complete'";
        while self.script(loaded) != Value::Bool(true) {
            assert!(start.elapsed() < Duration::from_secs(30), "no page loaded after the click");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub fn script(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", json!({ "script": script, "args": [] }))
    }

    pub fn cookies(&self) -> Vec<Value> {
        self.call("GET", "/cookie", Value::Null).as_array().unwrap().clone()
    }

    /// A PNG of the whole page (beyond the window's height), written to
    /// `path`; Chromium's DevTools command, as WebDriver's screenshot
    /// stops at the window.
    pub fn screenshot(&self, path: &Path) {
        let width = self.script("return document.documentElement.scrollWidth").as_f64().unwrap();
        let height = self.script("return document.documentElement.scrollHeight").as_f64().unwrap();
        let shot = self.call(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": "Page.captureScreenshot", "params": {
                "format": "png", "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            }}),
        );
        let png = decode_base64(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.agent.delete(&self.base).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    } as u32;
    let bytes: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, c)| n | value(*c) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes_what_it_should() {
    assert_eq!(decode_base64("aGVsbG8="), b"hello");
    assert_eq!(decode_base64("aGVsbG8h"), b"hello!");
    assert_eq!(decode_base64("aGk="), b"hi");
}
