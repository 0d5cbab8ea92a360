//! `topo serve` in real headless Chromium, driven through chromedriver (WebDriver): the demo
//! toposphere's overview, a click to a keyspace, a CLI change appearing without a reload,
//! a refused PUT, an undecodable file shown as hex. Saves a screenshot of the overview under
//! the target folder (`<target>/screenshots/overview.png`).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use topo_testkit::{free_port, ServerProcess};

const CHROMIUM: &str = "chromium";
const CHROMEDRIVER: &str = "chromedriver";

fn topo_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_topo"))
}

/// The store of the test's toposphere, by absolute path (cell records hold it, and the
/// served process runs in another folder).
fn store(dir: &Path) -> String {
    dir.join("toposphere.db").display().to_string()
}

/// Runs `topo args…` on the store in `dir`, expecting success; returns stdout.
fn topo(dir: &Path, args: &[&str]) -> String {
    topo_on(dir, &Backend::local(dir), args)
}

/// A topology: implementation and global server address.
#[derive(Clone, Debug)]
struct Backend {
    implementation: String,
    address: String,
}

impl Backend {
    /// The embedded store in `dir`.
    fn local(dir: &Path) -> Self {
        Backend {
            implementation: "local".into(),
            address: store(dir),
        }
    }

    fn flags(&self) -> [String; 4] {
        [
            "--topo-implementation".into(),
            self.implementation.clone(),
            "--topo-global-server-address".into(),
            self.address.clone(),
        ]
    }
}

/// Runs `topo args…` in `dir` on `backend`, expecting success; returns stdout.
fn topo_on(dir: &Path, backend: &Backend, args: &[&str]) -> String {
    let mut c = Command::new(topo_bin());
    c.current_dir(dir).args(backend.flags()).args(args);
    for v in [
        "TOPO_IMPLEMENTATION",
        "TOPO_GLOBAL_SERVER_ADDRESS",
        "TOPO_GLOBAL_ROOT",
        "TOPO_LOCK_FENCE",
    ] {
        c.env_remove(v);
    }
    let out = c.output().expect("run topo");
    assert!(
        out.status.success(),
        "topo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (bounded) until something accepts connections on 127.0.0.1:`port`.
fn wait_listening(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not listen on 127.0.0.1:{port} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The target folder (`…/target`), from this test binary's path (`target/debug/deps/…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .expect("target folder above the test binary")
        .to_path_buf()
}

async fn connect(driver_port: u16, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": topo_testkit::find_binary(CHROMIUM).expect("chromium"),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a WebDriver session in headless Chromium")
}

/// Polls `check` (a JavaScript expression) until it is true, for at most 10 s; returns how
/// long that took.
async fn wait_js(c: &Client, check: &str) -> Duration {
    let start = Instant::now();
    loop {
        let v = c
            .execute(&format!("return !!({check});"), vec![])
            .await
            .expect("script");
        if v == Value::Bool(true) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not true within 10 s: {check}\npage: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts `topo serve` on `backend` on a free loopback port with `extra` flags; returns it
/// and its port.
fn start_serve(dir: &Path, backend: &Backend, extra: &[&str]) -> (ServerProcess, u16) {
    let port = free_port().unwrap();
    let mut args = backend.flags().to_vec();
    args.extend([
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ]);
    args.extend(extra.iter().map(|a| a.to_string()));
    let log = dir.join(format!("serve-{port}.log"));
    let process = ServerProcess::spawn(&topo_bin(), &args, &log).unwrap();
    wait_listening(port, "topo serve");
    (process, port)
}

/// The durability policy of `commerce`, read with the CLI.
fn durability(dir: &Path) -> String {
    let out = topo(
        dir,
        &[
            "GetTopologyPath",
            "--data-as-json",
            "/global/keyspaces/commerce/Keyspace",
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v["durabilityPolicy"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// With --allow-writes: a save from the page is a compare-and-set; a change made first by
/// someone else makes it fail with a clear message and nothing written.
async fn edit(c: &Client, base: &str, dir: &Path) {
    let page = format!("{base}tree?cell=global&path=/keyspaces/commerce/Keyspace");
    let set_policy = |policy: &str| {
        format!(
            "const e = document.getElementById('editor'); const j = JSON.parse(e.value); \
             j.durability_policy = '{policy}'; e.value = JSON.stringify(j, null, 2);"
        )
    };
    c.goto(&page).await.unwrap();
    wait_js(c, "document.getElementById('editor') !== null").await;
    c.execute(&set_policy("none"), vec![]).await.unwrap();
    topo(
        dir,
        &[
            "SetKeyspaceDurabilityPolicy",
            "--durability-policy",
            "cross_cell",
            "commerce",
        ],
    );
    wait_js(
        c,
        "document.getElementById('save-msg').textContent.includes('changed while you were editing')",
    )
    .await;
    c.find(Locator::Css("#save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        c,
        "document.getElementById('save-msg').textContent.includes('someone changed /keyspaces/commerce/Keyspace first')",
    )
    .await;
    assert_eq!(durability(dir), "cross_cell", "nothing was written");

    c.goto(&page).await.unwrap();
    wait_js(c, "document.getElementById('editor') !== null").await;
    c.execute(&set_policy("none"), vec![]).await.unwrap();
    c.find(Locator::Css("#save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        c,
        "document.getElementById('save-msg').textContent.startsWith('Saved: now version')",
    )
    .await;
    assert_eq!(durability(dir), "none");
}

/// Runs the scenario.
async fn scenario(c: &Client, base: &str, dir: &Path) {
    // The overview shows both keyspaces.
    c.goto(base).await.unwrap();
    wait_js(
        c,
        "document.querySelectorAll('#keyspaces a.keyspace').length === 2 && \
         document.getElementById('keyspaces').textContent.includes('commerce') && \
         document.getElementById('keyspaces').textContent.includes('customer')",
    )
    .await;
    let shot = c.screenshot().await.unwrap();
    let shots = target_dir().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::write(shots.join("overview.png"), &shot).unwrap();
    assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");

    // Clicking a keyspace shows its shards.
    c.find(Locator::LinkText("customer"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        c,
        "location.pathname === '/keyspace/customer' && \
         [...document.querySelectorAll('#shards td.shard')].map(e => e.textContent).join(' ') === '-80 80-'",
    )
    .await;

    // A change made with the CLI appears on the open page without a reload.
    c.goto(base).await.unwrap();
    wait_js(c, "document.getElementById('keyspaces') !== null").await;
    // Wait for the event stream to be open before the change.
    c.execute("window.__same_page = true;", vec![])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = Instant::now();
    topo(dir, &["CreateKeyspace", "orders"]);
    let cli_done = before.elapsed();
    let after_cli = wait_js(
        c,
        "document.getElementById('keyspaces').textContent.includes('orders')",
    )
    .await;
    assert_eq!(
        c.execute("return window.__same_page === true;", vec![])
            .await
            .unwrap(),
        Value::Bool(true),
        "the page was updated in place, not reloaded"
    );
    eprintln!(
        "CLI write to page update: {after_cli:?} after the CLI returned ({:?} including the CLI run of {cli_done:?})",
        cli_done + after_cli
    );

    // A PUT is refused while read-only.
    let status = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/api/file?cell=global&path=/keyspaces/orders/Keyspace&version=1',
                   {method: 'PUT', body: '{}'}).then(r => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403));
    assert!(
        !c.source().await.unwrap().contains("<textarea"),
        "no editor when read-only"
    );

    // An undecodable file shows as hex (`--raw`: TopoCp refuses such bytes otherwise).
    let junk = dir.join("junk.bin");
    std::fs::write(&junk, [0xde, 0xad, 0xbe, 0xef, 0x01]).unwrap();
    topo(
        dir,
        &[
            "TopoCp",
            "--to_topo",
            "--raw",
            junk.to_str().unwrap(),
            "/keyspaces/orders/shards/0/Shard",
        ],
    );
    c.goto(&format!(
        "{base}tree?cell=global&path=/keyspaces/orders/shards/0/Shard"
    ))
    .await
    .unwrap();
    wait_js(
        c,
        "document.getElementById('hex') && document.getElementById('hex').textContent === 'deadbeef01'",
    )
    .await;
}

/// Whether the browser tests can run (Chromium and chromedriver installed).
fn browser_available() -> bool {
    topo_testkit::require_binary(CHROMIUM, "the browser tests")
        && topo_testkit::require_binary(CHROMEDRIVER, "the browser tests")
}

/// Starts chromedriver and a headless Chromium session, runs `test` with it, and closes the
/// browser even when `test` fails (then reports the failure).
async fn with_browser<F, Fut>(dir: &Path, test: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let driver_port = free_port().unwrap();
    let _driver = ServerProcess::spawn(
        &topo_testkit::find_binary(CHROMEDRIVER).unwrap(),
        &[format!("--port={driver_port}")],
        &dir.join("chromedriver.log"),
    )
    .unwrap();
    wait_listening(driver_port, "chromedriver");
    let client = connect(driver_port, &dir.join("chromium-profile")).await;
    let outcome = tokio::spawn(test(client.clone())).await;
    let _ = client.close().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_shows_the_demo_live() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let demo = topo(dir.path(), &["demo"]);
    let serve_line = format!(
        "topo --topo-implementation local --topo-global-server-address '{}' --topo-global-root /vitess/global serve --listen 127.0.0.1:15000",
        store(dir.path())
    );
    assert!(
        demo.contains(&serve_line) && demo.contains("http://127.0.0.1:15000/"),
        "{demo}"
    );
    assert!(!demo.contains("not built yet"), "{demo}");

    let local = Backend::local(dir.path());
    let (_serve, port) = start_serve(dir.path(), &local, &[]);
    let (_writable, writable_port) = start_serve(dir.path(), &local, &["--allow-writes"]);
    let base = format!("http://127.0.0.1:{port}/");
    let writable = format!("http://127.0.0.1:{writable_port}/");
    let path = dir.path().to_path_buf();
    with_browser(dir.path(), |c| async move {
        scenario(&c, &base, &path).await;
        edit(&c, &writable, &path).await;
    })
    .await;
}

/// When the topology stops answering, an open page shows a banner and keeps its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_keeps_the_last_data_when_the_topology_is_lost() {
    if !browser_available() || !topo_testkit::require_binary("etcd", "the browser tests on etcd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = topo_testkit::etcd::EtcdCluster::single().unwrap();
    let backend = Backend {
        implementation: "etcd2".into(),
        address: etcd.endpoints(),
    };
    topo_on(dir.path(), &backend, &["demo"]);
    let (_serve, port) = start_serve(dir.path(), &backend, &["--remote-operation-timeout", "2s"]);
    let base = format!("http://127.0.0.1:{port}/");
    let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
    let (killed_tx, killed_rx) = tokio::sync::oneshot::channel::<()>();
    let browser = with_browser(dir.path(), |c| async move {
        c.goto(&base).await.unwrap();
        wait_js(
            &c,
            "document.querySelectorAll('#keyspaces a.keyspace').length === 2",
        )
        .await;
        opened_tx.send(()).unwrap();
        killed_rx.await.unwrap();
        wait_js(
            &c,
            "document.getElementById('banner').className === 'on' && \
             document.getElementById('banner').textContent.includes('Lost connection to the topology')",
        )
        .await;
        wait_js(
            &c,
            "document.querySelectorAll('#keyspaces a.keyspace').length === 2",
        )
        .await;
    });
    let killer = async {
        opened_rx.await.unwrap();
        etcd.member_mut(0).kill();
        killed_tx.send(()).unwrap();
    };
    tokio::join!(browser, killer);
}

/// Off loopback without TLS and a token, `topo serve` refuses before listening.
#[test]
fn serve_refuses_to_listen_off_loopback_unprotected() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    for (args, needle) in [
        (
            vec!["serve", "--listen", "0.0.0.0:0"],
            "requires --tls-cert, --tls-key and --token-file",
        ),
        (
            vec![
                "serve",
                "--listen",
                "0.0.0.0:0",
                "--insecure",
                "--allow-writes",
            ],
            "--allow-writes on 0.0.0.0:0, which is not a loopback address, requires --token-file",
        ),
        (vec!["serve", "--tls-cert", "missing.pem"], "--tls-key"),
    ] {
        let out = Command::new(topo_bin())
            .current_dir(dir.path())
            .args(["--topo-global-server-address", &store(dir.path())])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("t0ken"));
    }
}
