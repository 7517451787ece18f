//! A real browser for end-to-end tests: Debian's headless Chromium driven over W3C WebDriver
//! by chromedriver, both from `/usr/bin` (`TESSERA_TEST_CHROMIUM`, `TESSERA_TEST_CHROMEDRIVER`
//! override). Nothing downloads a browser of its own.
//!
//! [`Browser::command`] issues any WebDriver command on the session as raw JSON, so
//! extensions such as the virtual authenticator (`POST webauthn/authenticator`) need no new
//! code here; [`Browser::goto`], [`Browser::execute`], [`Browser::wait_for`] and friends are
//! the common ones. Each browser has a fresh profile directory and resolves no host name but
//! `localhost` (to 127.0.0.1), so a page can only reach loopback addresses.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use serde_json::{Value, json};

/// The key WebDriver wraps element references in.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long [`Browser::wait_for`] waits unless told otherwise.
pub const WAIT: Duration = Duration::from_secs(20);

/// A failed WebDriver command: the protocol's `error` code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebDriverError {
    /// `no such element`, `javascript error`, …
    pub error: String,
    /// The driver's message.
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// A running chromedriver with one Chromium session.
pub struct Browser {
    driver: std::process::Child,
    driver_addr: SocketAddr,
    session: String,
    http: reqwest::Client,
    profile: PathBuf,
    quit: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn binary(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.into())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a fresh profile.
    pub async fn start() -> Self {
        let chromedriver = binary("TESSERA_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = binary("TESSERA_TEST_CHROMIUM", "/usr/bin/chromium");
        let profile =
            std::env::temp_dir().join(format!("chromium_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).expect("profile dir");
        let port = free_port();
        let driver = std::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{chromedriver}: {e} (apt-get install chromium chromium-driver; .ci/run does)"
                )
            });
        let driver_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let http = reqwest::Client::new();
        let base = format!("http://{driver_addr}");
        let mut ready = false;
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "chromedriver did not come up on {base}");
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            // No name resolves but `localhost` (to 127.0.0.1, where pages are served: a
            // WebAuthn RP id cannot be an IP): nothing but loopback is reachable from a page.
            "--host-resolver-rules=MAP localhost 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
                .into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        } } });
        let response: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("JSON answer");
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {response}"))
            .to_string();
        let browser = Self {
            driver,
            driver_addr,
            session,
            http,
            profile,
            quit: false,
        };
        browser
            .command(
                reqwest::Method::POST,
                "timeouts",
                json!({ "script": 30_000, "pageLoad": 30_000 }),
            )
            .await
            .expect("timeouts");
        browser
    }

    /// Any WebDriver command on this session: `path` is relative to `/session/{id}/`
    /// (`"url"`, `"execute/sync"`, `"webauthn/authenticator"`; `""` is the session itself).
    /// Returns `value`.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, WebDriverError> {
        let mut url = format!("http://{}/session/{}", self.driver_addr, self.session);
        if !path.is_empty() {
            url.push('/');
            url.push_str(path);
        }
        let mut request = self.http.request(method.clone(), url);
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| WebDriverError {
            error: "transport".into(),
            message: e.to_string(),
        })?;
        // Failures are told by the status: a script's own result may well hold "error".
        let failed = !response.status().is_success();
        let value: Value = response.json().await.map_err(|e| WebDriverError {
            error: "transport".into(),
            message: e.to_string(),
        })?;
        if failed {
            return Err(WebDriverError {
                error: value["value"]["error"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_string(),
                message: value["value"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        Ok(value["value"].clone())
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "url", json!({ "url": url }))
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; its return
    /// value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs `script` asynchronously: it finishes by calling the last of `arguments` with its
    /// result.
    pub async fn execute_async(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "execute/async",
            json!({ "script": script, "args": args }),
        )
        .await
        .unwrap_or_else(|e| panic!("async script failed: {e}\n{script}"))
    }

    /// Runs `script` until it returns something other than `null`/`false`, for at most
    /// `timeout`; that value.
    pub async fn wait_for(&self, script: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let value = self.execute(script, json!([])).await;
            if !value.is_null() && value != Value::Bool(false) {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for: {script}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match self
                .command(
                    reqwest::Method::POST,
                    "element",
                    json!({ "using": "css selector", "value": css }),
                )
                .await
            {
                Ok(element) => return element[ELEMENT].as_str().expect("element id").into(),
                Err(e) if e.error == "no such element" => {
                    assert!(tokio::time::Instant::now() < deadline, "no {css} appeared");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("find {css}: {e}"),
            }
        }
    }

    /// Clicks an element as a user would (the driver scrolls to it and sends the events).
    pub async fn click(&self, element: &str) {
        self.command(
            reqwest::Method::POST,
            &format!("element/{element}/click"),
            json!({}),
        )
        .await
        .unwrap_or_else(|e| panic!("click: {e}"));
    }

    /// Clicks the first element matching `css`, waiting for it to appear.
    pub async fn click_css(&self, css: &str) {
        let element = self.find(css).await;
        self.click(&element).await;
    }

    /// Types `text` into the first element matching `css` (waiting for it), after clearing
    /// it: the driver sends key events, as a user's typing would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("element/{element}/clear"),
            json!({}),
        )
        .await
        .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        self.command(
            reqwest::Method::POST,
            &format!("element/{element}/value"),
            json!({ "text": text }),
        )
        .await
        .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Waits until an element matching `css` is shown (rendered, not `hidden`), within
    /// [`WAIT`].
    pub async fn wait_for_visible(&self, css: &str) {
        self.wait_for(
            &format!(
                "const e = document.querySelector({}); return !!e && e.getClientRects().length > 0;",
                json!(css)
            ),
            WAIT,
        )
        .await;
    }

    /// Waits until the text of the first element matching `css` contains `text`, within
    /// [`WAIT`]; that element's whole text.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> String {
        let found = self
            .wait_for(
                &format!(
                    "const e = document.querySelector({}); const t = e ? e.textContent : '';
                     return t.includes({}) ? t : null;",
                    json!(css),
                    json!(text)
                ),
                WAIT,
            )
            .await;
        found.as_str().unwrap_or_default().to_string()
    }

    /// The text of the first element matching `css` (`None`: no such element).
    pub async fn text(&self, css: &str) -> Option<String> {
        self.execute(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )
        .await
        .as_str()
        .map(str::to_string)
    }

    /// Sets the window to `width`×`height` CSS pixels (desktop [`DESKTOP`], phone [`PHONE`]):
    /// the window itself, and the viewport exactly through DevTools' device metrics (a
    /// window cannot shrink below Chromium's minimum width; a phone width is also `mobile`).
    pub async fn set_window_size(&self, (width, height): (u32, u32)) {
        // Best effort: the override below is what sets the size pages see.
        let _ = self
            .command(
                reqwest::Method::POST,
                "window/rect",
                json!({ "width": width, "height": height }),
            )
            .await;
        self.command(
            reqwest::Method::POST,
            "goog/cdp/execute",
            json!({ "cmd": "Emulation.setDeviceMetricsOverride", "params": {
                "width": width, "height": height, "deviceScaleFactor": 1,
                "mobile": width < 600,
            } }),
        )
        .await
        .unwrap_or_else(|e| panic!("window size {width}x{height}: {e}"));
    }

    /// Writes a screenshot of the viewport to `target/ui-screenshots/<name>.png`; its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let png = self
            .command(reqwest::Method::GET, "screenshot", json!({}))
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("write screenshot");
        path
    }

    /// Ends the session (Chromium exits) and chromedriver.
    pub async fn quit(mut self) {
        self.command(reqwest::Method::DELETE, "", json!({}))
            .await
            .unwrap_or_else(|e| panic!("end the session: {e}"));
        self.quit = true;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that panicked did not quit: end the session with a plain blocking request
        // so Chromium does not outlive the test, then stop chromedriver (ours, by handle).
        if !self.quit
            && let Ok(mut stream) =
                TcpStream::connect_timeout(&self.driver_addr, Duration::from_secs(2))
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                self.session, self.driver_addr
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read(&mut [0u8; 1024]);
            }
        }
        if !self.quit {
            let _ = self.driver.kill();
            let _ = self.driver.wait();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Desktop window size for [`Browser::set_window_size`].
pub const DESKTOP: (u32, u32) = (1280, 800);

/// Phone window size (the narrowest the pages support).
pub const PHONE: (u32, u32) = (360, 740);

/// `target/ui-screenshots/` of the workspace (or of `CARGO_TARGET_DIR`).
fn screenshot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
        .join("ui-screenshots")
}

/// A static page served on its own loopback port: another origin than Tessera's.
pub struct Page {
    /// `http://127.0.0.1:<port>`, the page's origin.
    pub origin: String,
    server: tokio::task::JoinHandle<()>,
}

impl Page {
    /// Serves `html` at `/`.
    pub async fn serve(html: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind page server");
        let origin = format!("http://{}", listener.local_addr().expect("address"));
        let router = axum::Router::new().route(
            "/",
            axum::routing::get(move || async move { axum::response::Html(html) }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { origin, server }
    }
}

impl Page {
    /// The page's origin named `http://localhost:<port>`: a secure context, and one a WebAuthn
    /// RP id of `localhost` covers.
    pub fn localhost_origin(&self) -> String {
        self.origin.replace("://127.0.0.1:", "://localhost:")
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        self.server.abort();
    }
}
