//! The browser's API, pages, metrics and live events on real backends: the embedded store
//! (SQLite) and a real etcd server on loopback.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use topo_core::wrap::{ConnHook, HookedConn, Op};
use topo_core::{Conn, Factory, TopoError};
use topo_etcd::{EtcdFactory, EtcdOptions};
use topo_local::{LocalFactory, LocalOptions};
use topo_proto::topodata::srv_keyspace::KeyspacePartition;
use topo_proto::topodata::{
    CellInfo, KeyRange, Keyspace, ShardReference, SrvKeyspace, Tablet, TabletAlias, TabletType,
};
use topo_serve::{router, App, ServeOptions};
use topo_testkit::etcd::EtcdCluster;
use topo_testkit::zk::ZkCluster;
use topo_zk::{ZkFactory, ZkOptions};
use toposphere::{Registry, Server, ServerConfig};
use tower::ServiceExt;

fn registry() -> Registry {
    let mut r = Registry::with_memory();
    r.register(Arc::new(LocalFactory::new(LocalOptions::default())));
    r.register(Arc::new(EtcdFactory::new(EtcdOptions {
        remote_operation_timeout: Duration::from_secs(3),
        ..Default::default()
    })));
    r.register(Arc::new(ZkFactory::new(ZkOptions {
        remote_operation_timeout: Duration::from_secs(3),
        ..Default::default()
    })));
    r
}

async fn open(implementation: &str, address: &str) -> Server {
    let config = ServerConfig {
        remote_operation_timeout: Duration::from_secs(3),
        ..ServerConfig::default()
    };
    Server::open(
        &registry(),
        implementation,
        address,
        "/vitess/global",
        config,
    )
    .await
    .unwrap()
}

/// Cells zone1 and zone2; keyspaces commerce (shard 0) and customer (-80, 80-), a primary
/// per shard in zone1 and a replica per shard in zone2; serving graph rebuilt.
async fn build_demo(ts: &Server, address: &str) {
    for cell in ["zone1", "zone2"] {
        ts.create_cell_info(
            cell,
            &CellInfo {
                server_address: address.into(),
                root: format!("/vitess/{cell}"),
            },
        )
        .await
        .unwrap();
    }
    let mut uid = 100;
    for (ks, shards) in [("commerce", vec!["0"]), ("customer", vec!["-80", "80-"])] {
        ts.create_keyspace(ks, &Keyspace::default()).await.unwrap();
        for shard in shards {
            ts.create_shard(ks, shard).await.unwrap();
            for (cell, t) in [
                ("zone1", TabletType::Primary),
                ("zone2", TabletType::Replica),
            ] {
                let alias = TabletAlias {
                    cell: cell.into(),
                    uid,
                };
                if t == TabletType::Primary {
                    ts.update_shard_fields(ks, shard, None, |s| {
                        s.shard.primary_alias = Some(alias.clone());
                        Ok(())
                    })
                    .await
                    .unwrap();
                }
                ts.init_tablet(
                    Tablet {
                        alias: Some(alias.clone()),
                        hostname: format!("host{uid}"),
                        port_map: BTreeMap::from([("vt".to_string(), 15000 + uid as i32)]),
                        keyspace: ks.into(),
                        shard: shard.into(),
                        r#type: t as i32,
                        ..Default::default()
                    },
                    false,
                    false,
                    false,
                )
                .await
                .unwrap();
                uid += 1;
            }
        }
        ts.rebuild_keyspace(ks, &[], false).await.unwrap();
    }
}

async fn local_demo() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("topo.db").display().to_string();
    let ts = open("local", &db).await;
    build_demo(&ts, &db).await;
    (dir, ts)
}

async fn call(app: &Arc<App>, method: &str, uri: &str, body: &str) -> (StatusCode, String) {
    let response = router(app.clone())
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn get_json(app: &Arc<App>, uri: &str) -> Value {
    let (status, body) = call(app, "GET", uri, "").await;
    assert_eq!(status, StatusCode::OK, "GET {uri}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn api_reads_keyspaces_shards_tablets_serving_tree_and_files() {
    let (_dir, ts) = local_demo().await;
    let app = App::new(ts.clone(), ServeOptions::default());

    assert_eq!(
        get_json(&app, "/api/keyspaces").await,
        serde_json::json!(["commerce", "customer"])
    );
    let shards = get_json(&app, "/api/keyspaces/customer/shards").await;
    let ranges: Vec<&str> = shards
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key_range"].as_str().unwrap())
        .collect();
    assert_eq!(ranges, ["-80", "80-"]);
    assert!(shards[0]["primary"].as_str().unwrap().starts_with("zone1-"));
    assert_eq!(shards[0]["primary_serving"], true);
    let (status, body) = call(&app, "GET", "/api/keyspaces/nope/shards", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let tablets = get_json(&app, "/api/tablets?cell=zone2").await;
    assert_eq!(tablets.as_array().unwrap().len(), 3);
    assert!(tablets
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["tablet_type"] == "REPLICA" && t["cell"] == "zone2"));

    let serving = get_json(&app, "/api/serving").await;
    assert_eq!(serving.as_array().unwrap().len(), 4, "{serving}");
    assert!(
        serving
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["problem"].is_null()),
        "{serving}"
    );

    let tree = get_json(&app, "/api/tree?cell=global&path=/keyspaces").await;
    let names: Vec<&str> = tree["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["commerce", "customer"]);

    let file = get_json(
        &app,
        "/api/file?cell=global&path=/keyspaces/customer/shards/-80/Shard",
    )
    .await;
    assert_eq!(file["record_type"], "topodata.Shard");
    assert_eq!(file["json"]["key_range"]["end"], "gA==");
    assert!(file["prototext"].as_str().unwrap().contains("key_range"));
    assert!(file["hex"].is_null());

    // Bytes that are no Tablet: shown as hex with the reason, never an error.
    ts.conn_for_cell("zone1")
        .await
        .unwrap()
        .create("tablets/zone1-0000000999/Tablet", &[0xff, 0xfe, 0x07])
        .await
        .unwrap();
    let file = get_json(
        &app,
        "/api/file?cell=zone1&path=/tablets/zone1-0000000999/Tablet",
    )
    .await;
    assert_eq!(file["hex"], "fffe07");
    assert!(file["decode_error"].as_str().unwrap().contains("Tablet"));
    let (status, page) = call(
        &app,
        "GET",
        "/tree?cell=zone1&path=/tablets/zone1-0000000999/Tablet",
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("fffe07"), "{page}");
}

#[tokio::test]
async fn overview_flags_missing_srv_keyspace_and_gaps() {
    let (_dir, ts) = local_demo().await;
    let app = App::new(ts.clone(), ServeOptions::default());
    ts.delete_srv_keyspace("zone2", "commerce").await.unwrap();
    let gap = SrvKeyspace {
        partitions: vec![KeyspacePartition {
            served_type: TabletType::Primary as i32,
            shard_references: vec![
                ShardReference {
                    name: "-40".into(),
                    key_range: Some(KeyRange {
                        start: vec![],
                        end: vec![0x40],
                    }),
                },
                ShardReference {
                    name: "80-".into(),
                    key_range: Some(KeyRange {
                        start: vec![0x80],
                        end: vec![],
                    }),
                },
            ],
            ..Default::default()
        }],
        ..Default::default()
    };
    ts.update_srv_keyspace("zone1", "customer", &gap)
        .await
        .unwrap();

    let overview = get_json(&app, "/api/overview").await;
    let problem = |cell: &str, ks: &str| {
        overview["serving"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["cell"] == cell && s["keyspace"] == ks)
            .unwrap()["problem"]
            .clone()
    };
    assert!(problem("zone2", "commerce")
        .as_str()
        .unwrap()
        .contains("no SrvKeyspace"));
    assert!(problem("zone1", "customer")
        .as_str()
        .unwrap()
        .contains("gap or overlap"));
    assert!(problem("zone1", "commerce").is_null());
    assert!(overview["cells"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["reachable"] == true));

    let (status, page) = call(&app, "GET", "/", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("bad-row") && page.contains("has no SrvKeyspace for commerce"));
    assert!(page.contains("href=\"/keyspace/customer\""));
}

#[tokio::test]
async fn put_is_refused_when_read_only() {
    let (_dir, ts) = local_demo().await;
    let app = App::new(ts.clone(), ServeOptions::default());
    let path = "/keyspaces/commerce/Keyspace";
    let before = ts.global().get(path).await.unwrap();
    let uri = format!("/api/file?cell=global&path={path}&version={}", before.1);
    let (status, body) = call(&app, "PUT", &uri, r#"{"durability_policy":"none"}"#).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("--allow-writes"), "{body}");
    assert_eq!(ts.global().get(path).await.unwrap(), before);
}

#[tokio::test]
async fn put_saves_as_compare_and_set() {
    let (_dir, ts) = local_demo().await;
    let app = App::new(
        ts.clone(),
        ServeOptions {
            allow_writes: true,
            ..ServeOptions::default()
        },
    );
    let path = "/keyspaces/commerce/Keyspace";
    let (_, v1) = ts.global().get(path).await.unwrap();
    let uri = format!("/api/file?cell=global&path={path}&version={v1}");
    let (status, body) = call(&app, "PUT", &uri, r#"{"durability_policy":"semi_sync"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        ts.get_keyspace("commerce")
            .await
            .unwrap()
            .keyspace
            .durability_policy,
        "semi_sync"
    );

    // Saving again from the old version: someone (we) changed it first.
    let (status, body) = call(&app, "PUT", &uri, r#"{"durability_policy":"none"}"#).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body.contains("someone changed /keyspaces/commerce/Keyspace first"),
        "{body}"
    );
    assert_eq!(
        ts.get_keyspace("commerce")
            .await
            .unwrap()
            .keyspace
            .durability_policy,
        "semi_sync"
    );

    let (_, v2) = ts.global().get(path).await.unwrap();
    let uri = format!("/api/file?cell=global&path={path}&version={v2}");
    let (status, body) = call(&app, "PUT", &uri, r#"{"no_such_field":1}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("topodata.Keyspace"), "{body}");
    let (status, body) = call(&app, "PUT", "/api/file?cell=global&path=/x&version=1", "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("/x holds no known record type"), "{body}");
}

#[tokio::test]
async fn metrics_render_operation_counters() {
    let (_dir, ts) = local_demo().await;
    let app = App::new(ts.clone(), ServeOptions::default());
    get_json(&app, "/api/overview").await;
    let (status, text) = call(&app, "GET", "/metrics", "").await;
    assert_eq!(status, StatusCode::OK);
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("toposphere_topo_operations_total{cell=\"global\",operation=\"Get\"}")
        })
        .unwrap_or_else(|| panic!("{text}"));
    let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n > 0, "{line}");
    assert!(text.contains("# TYPE toposphere_topo_operation_seconds histogram"));
    assert!(
        text.contains("toposphere_topo_operation_seconds_count{cell=\"zone1\",operation=\"List\"}"),
        "{text}"
    );
    assert!(text.contains("toposphere_serve_watches_open 0"));
    assert!(
        !text.contains("toposphere_srv_cache_"),
        "no cache counters without a cache: {text}"
    );
}

/// `/metrics` over HTTP: each operation's latency histogram has cumulative buckets that end
/// at its count, and the counters of the serving-graph cache the server was given.
#[tokio::test]
async fn metrics_render_latency_histograms_and_srv_cache_counters_over_http() {
    let (_dir, ts) = local_demo().await;
    let cache = toposphere::srv_cache::SrvCache::new(ts.clone());
    cache.get_srv_keyspace("zone1", "commerce").await.unwrap();
    cache.get_srv_keyspace("zone1", "commerce").await.unwrap();
    assert!(cache.get_srv_keyspace("zone1", "nope").await.is_err());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = ServeOptions {
        srv_cache: Some(cache),
        ..ServeOptions::default()
    };
    let app = App::new(ts.clone(), options);
    tokio::spawn(async move { axum::serve(listener, router(app)).await });
    let response = http_get(addr, "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let value = |prefix: &str| -> u64 {
        let line = response
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {response}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(response.contains("# TYPE toposphere_topo_operation_seconds histogram"));
    // The cache's two watches (one for a name that does not exist) are zone1's watches.
    let labels = "cell=\"zone1\",operation=\"Watch\"";
    let buckets: Vec<u64> = response
        .lines()
        .filter(|l| {
            l.starts_with(&format!(
                "toposphere_topo_operation_seconds_bucket{{{labels},le="
            ))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 15, "14 bounds and +Inf: {response}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    let count = value(&format!(
        "toposphere_topo_operation_seconds_count{{{labels}}}"
    ));
    assert_eq!(count, 2);
    assert_eq!(buckets[14], count);
    assert!(response.contains(&format!(
        "toposphere_topo_operation_seconds_bucket{{{labels},le=\"0.0005\"}}"
    )));
    assert_eq!(value("toposphere_srv_cache_hits_total "), 1);
    assert_eq!(value("toposphere_srv_cache_misses_total "), 2);
    assert_eq!(value("toposphere_srv_cache_errors_total "), 1);
    assert_eq!(value("toposphere_srv_cache_stale_reads_total "), 0);
    assert_eq!(value("toposphere_srv_cache_stale_records "), 0);
    assert!(response.contains("# TYPE toposphere_srv_cache_hits_total counter"));
}

#[tokio::test]
async fn locks_and_elections_show_holders_and_leaders() {
    let (_dir, ts) = local_demo().await;
    let app = App::new(ts.clone(), ServeOptions::default());
    let lock = ts
        .lock_keyspace("customer", "resharding test")
        .await
        .unwrap();
    let election = ts
        .global()
        .new_leader_participation("vtctld", "leader-1:15999")
        .await
        .unwrap();
    let _leadership = election.wait_for_leadership().await.unwrap();

    let v = get_json(&app, "/api/locks").await;
    let locks = v["locks"].as_array().unwrap();
    assert_eq!(locks.len(), 1, "{v}");
    assert_eq!(locks[0]["dir"], "keyspaces/customer");
    assert_eq!(locks[0]["holder"], true);
    assert!(
        locks[0]["action"]
            .as_str()
            .unwrap()
            .contains("resharding test"),
        "{v}"
    );
    assert_eq!(locks[0]["stale"], false);
    assert_eq!(locks[0]["token"], lock.fencing_token().to_string());
    assert_eq!(v["elections"][0]["name"], "vtctld");
    assert_eq!(v["elections"][0]["leader"], "leader-1:15999");

    // A second locker queues behind the holder; a lock held past the threshold is stale.
    let waiter = tokio::spawn({
        let ts = ts.clone();
        async move { ts.lock_keyspace("customer", "queued test").await }
    });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let strict = App::new(
        ts.clone(),
        ServeOptions {
            stale_lock_after: Duration::from_millis(500),
            ..ServeOptions::default()
        },
    );
    let v = get_json(&strict, "/api/locks").await;
    let locks = v["locks"].as_array().unwrap();
    assert_eq!(locks.len(), 2, "{v}");
    assert_eq!(locks[0]["holder"], true, "{v}");
    assert!(
        locks[0]["action"]
            .as_str()
            .unwrap()
            .contains("resharding test"),
        "{v}"
    );
    assert_eq!(locks[0]["stale"], true, "{v}");
    assert_eq!(locks[1]["holder"], false, "{v}");
    assert!(
        locks[1]["action"].as_str().unwrap().contains("queued test"),
        "{v}"
    );

    let (_, page) = call(&strict, "GET", "/locks", "").await;
    assert!(
        page.contains("held, STALE") && page.contains("waiting"),
        "{page}"
    );
    let (_, page) = call(&app, "GET", "/locks", "").await;
    assert!(
        page.contains("keyspaces/customer") && page.contains("leader-1:15999"),
        "{page}"
    );
    election.stop().await;
    lock.unlock().await.unwrap();
    waiter.await.unwrap().unwrap().unlock().await.unwrap();
    let v = get_json(&app, "/api/locks").await;
    assert!(v["locks"].as_array().unwrap().is_empty(), "{v}");
}

/// Opens `/events` on a served browser and returns the lines as they come.
async fn open_events(addr: std::net::SocketAddr) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (up to 10 s, a bound that only tells "promptly" from "never") for a line with `needle`.
async fn wait_line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = rx.recv().await.expect("event stream ended");
            if line.contains(needle) {
                return line;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event line with {needle:?} within 10 s"))
}

/// Serves a browser over `ts` on a free loopback port, with its watches running.
async fn start(ts: Server) -> (std::net::SocketAddr, Arc<App>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = App::new(ts.clone(), ServeOptions::default());
    tokio::spawn(topo_serve::live::run(ts, app.live().clone()));
    let served = app.clone();
    tokio::spawn(async move { axum::serve(listener, router(served)).await });
    (addr, app)
}

/// Waits until the watches of the global cell and both cells are open.
async fn watches_open(app: &App) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while app.live().counts().open_watches < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the watches did not open within 10 s");
}

async fn change_reaches_event_stream(ts: Server) {
    let (addr, app) = start(ts.clone()).await;
    let mut events = open_events(addr).await;
    wait_line(&mut events, "\"kind\":\"status\"").await;
    watches_open(&app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    while events.try_recv().is_ok() {}
    let start = Instant::now();
    ts.create_keyspace("orders", &Keyspace::default())
        .await
        .unwrap();
    wait_line(&mut events, "\"kind\":\"change\"").await;
    eprintln!("global change reached /events in {:?}", start.elapsed());
    let start = Instant::now();
    ts.conn_for_cell("zone2")
        .await
        .unwrap()
        .create("probe", b"x")
        .await
        .unwrap();
    wait_line(&mut events, "\"kind\":\"change\"").await;
    eprintln!("cell change reached /events in {:?}", start.elapsed());
}

#[tokio::test]
async fn changes_reach_the_event_stream_on_local() {
    let (_dir, ts) = local_demo().await;
    change_reaches_event_stream(ts).await;
}

fn etcd() -> Option<EtcdCluster> {
    topo_testkit::require_binary("etcd", "etcd").then(|| EtcdCluster::single().unwrap())
}

#[tokio::test]
async fn changes_reach_the_event_stream_on_etcd() {
    let Some(cluster) = etcd() else { return };
    let ts = open("etcd2", &cluster.endpoints()).await;
    build_demo(&ts, &cluster.endpoints()).await;
    change_reaches_event_stream(ts).await;
}

#[tokio::test]
async fn changes_reach_the_event_stream_on_zookeeper() {
    if !topo_testkit::zk::require() {
        return;
    }
    let zk = ZkCluster::standalone().unwrap();
    zk.wait_ready(Duration::from_secs(30)).unwrap();
    let ts = open("zk2", &zk.addrs()).await;
    build_demo(&ts, &zk.addrs()).await;
    change_reaches_event_stream(ts).await;
}

/// Refuses recursive watches, as a backend without them does.
#[derive(Debug)]
struct NoRecursiveWatch;

#[async_trait::async_trait]
impl ConnHook for NoRecursiveWatch {
    type Permit = ();

    async fn before(&self, op: Op, _path: &str) -> topo_core::Result<()> {
        if op == Op::WatchRecursive {
            return Err(TopoError::NoImplementation(
                "no recursive watches here".into(),
            ));
        }
        Ok(())
    }

    fn after(&self, _op: Op, _permit: (), _error: Option<&TopoError>) {}
}

/// The embedded store with its recursive watches refused.
#[derive(Debug)]
struct WithoutRecursiveWatch(LocalFactory);

#[async_trait::async_trait]
impl Factory for WithoutRecursiveWatch {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn create(
        &self,
        cell: &str,
        address: &str,
        root: &str,
    ) -> topo_core::Result<Arc<dyn Conn>> {
        let inner = self.0.create(cell, address, root).await?;
        Ok(Arc::new(HookedConn::new(inner, NoRecursiveWatch)))
    }
}

/// A backend without recursive watches is polled, and changes still arrive.
#[tokio::test]
async fn changes_reach_the_event_stream_by_polling() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("topo.db").display().to_string();
    let factory = Arc::new(WithoutRecursiveWatch(LocalFactory::new(
        LocalOptions::default(),
    )));
    let ts = Server::open_with_factory(factory, &db, "/vitess/global", ServerConfig::default())
        .await
        .unwrap();
    build_demo(&ts, &db).await;
    assert!(ts.global().watch_recursive("/").await.is_err());
    change_reaches_event_stream(ts).await;
}

#[tokio::test]
async fn lost_topology_shows_banner_and_last_known_data() {
    let Some(mut cluster) = etcd() else { return };
    let ts = open("etcd2", &cluster.endpoints()).await;
    build_demo(&ts, &cluster.endpoints()).await;
    let (addr, app) = start(ts.clone()).await;
    let mut events = open_events(addr).await;
    watches_open(&app).await;
    let page = http_get(addr, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("customer"));

    cluster.member_mut(0).kill();
    let line = wait_line(&mut events, "\"lost\":{\"").await;
    assert!(line.contains("global"), "{line}");
    let page = http_get(addr, "/").await;
    assert!(page.starts_with("HTTP/1.1 503"), "{page}");
    assert!(
        page.contains("id=\"banner\" class=\"on\"")
            && page.contains("Lost connection to the topology"),
        "{page}"
    );
    assert!(
        page.contains("href=\"/keyspace/customer\""),
        "the last known data is shown: {page}"
    );
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut out)
        .await
        .unwrap();
    out
}

/// Every read the README's browser section shows with `curl` answers 200 on the demo.
#[tokio::test]
async fn readme_curl_reads_answer() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let section = readme
        .split("## Topology browser")
        .nth(1)
        .expect("a Topology browser section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let (_dir, ts) = local_demo().await;
    let app = App::new(ts, ServeOptions::default());
    let mut checked = 0;
    for line in section.lines().filter(|l| {
        l.starts_with("curl -s localhost:15000") || l.starts_with("curl -s 'localhost:15000")
    }) {
        let uri = line
            .split("localhost:15000")
            .nth(1)
            .and_then(|rest| rest.split(['\'', ' ']).next())
            .unwrap_or_else(|| panic!("no URL in {line:?}"));
        let (status, body) = call(&app, "GET", uri, "").await;
        assert_eq!(status, StatusCode::OK, "{line}: {body}");
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} curl lines found");
}

/// Stopping the server ends the event streams of open pages, so `serve` returns instead of
/// waiting for every browser tab to close.
#[tokio::test]
async fn shutdown_ends_open_event_streams() {
    let (_dir, ts) = local_demo().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(topo_serve::serve(
        ts,
        listener,
        ServeOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut events = open_events(addr).await;
    wait_line(&mut events, "\"kind\":\"status\"").await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("serve did not return within 10 s of the shutdown signal with a page open")
        .unwrap()
        .unwrap();
}

/// A cell's watch stops, and stops counting as open, when the cell is removed.
#[tokio::test]
async fn removed_cell_closes_its_watch() {
    let (_dir, ts) = local_demo().await;
    let (_addr, app) = start(ts.clone()).await;
    watches_open(&app).await;
    assert_eq!(app.live().counts().open_watches, 3);
    ts.delete_cell_info("zone2", true).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while app.live().counts().open_watches != 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "open watches still {} 10 s after zone2 was removed",
            app.live().counts().open_watches
        )
    });
}

/// A burst of changes does not make the browser re-read the cells and probe each of them
/// once per change: the probes of a cell stay few while a hundred writes land.
#[tokio::test]
async fn burst_of_changes_does_not_probe_cells_per_change() {
    let (_dir, ts) = local_demo().await;
    let (_addr, app) = start(ts.clone()).await;
    watches_open(&app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probes = || ts.stats().get("zone1", topo_core::wrap::Op::ListDir).calls;
    let before = probes();
    let start = Instant::now();
    for i in 0..100 {
        ts.global()
            .update("burst", i.to_string().as_bytes(), None)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let elapsed = start.elapsed();
    let made = probes() - before;
    eprintln!("{made} probes of zone1 during 100 writes in {elapsed:?}");
    // At most one probe per 250 ms, plus one for the pass under way.
    let bound = elapsed.as_millis() as u64 / 250 + 2;
    assert!(
        made <= bound,
        "{made} probes of zone1 in {elapsed:?} (bound {bound})"
    );
}

/// A backend without prefix reads (as ZooKeeper), each call 5 ms away.
#[derive(Debug)]
struct NoListFarAway;

#[async_trait::async_trait]
impl ConnHook for NoListFarAway {
    type Permit = ();

    async fn before(&self, op: Op, _path: &str) -> topo_core::Result<()> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if op == Op::List {
            return Err(TopoError::NoImplementation("no prefix reads here".into()));
        }
        Ok(())
    }

    fn after(&self, _op: Op, _permit: (), _error: Option<&TopoError>) {}
}

/// Walking the directories finds the same files, versions and contents as a prefix read.
#[tokio::test]
async fn walking_directories_reads_what_a_prefix_read_does() {
    let (_dir, ts) = local_demo().await;
    let key = |v: &[(topo_serve::model::FileEntry, Vec<u8>)]| {
        v.iter()
            .map(|(f, b)| (f.path.clone(), f.version.clone(), f.size, b.clone()))
            .collect::<Vec<_>>()
    };
    for cell in ["global", "zone1"] {
        let conn = topo_serve::model::conn(&ts, cell).await.unwrap();
        let listed = topo_serve::model::all_files(conn.as_ref()).await.unwrap();
        let far = HookedConn::new(conn, NoListFarAway);
        let start = Instant::now();
        let walked = topo_serve::model::all_files(&far).await.unwrap();
        eprintln!(
            "walked {} files of {cell} in {:?} at 5 ms a call",
            walked.len(),
            start.elapsed()
        );
        assert!(listed.len() > 3, "{cell}: {}", listed.len());
        assert_eq!(key(&walked), key(&listed), "{cell}");
    }
}

/// The overview reads each keyspace's shards in one prefix read, not a read per shard.
#[tokio::test]
async fn overview_reads_shards_per_keyspace_not_per_shard() {
    let (_dir, ts) = local_demo().await;
    let gets = || ts.stats().get("global", topo_core::wrap::Op::Get).calls;
    let lists = || ts.stats().get("global", topo_core::wrap::Op::List).calls;
    let (g, l) = (gets(), lists());
    let shards = topo_serve::model::shards(&ts, "customer").await.unwrap();
    let names: Vec<_> = shards.iter().map(|s| s.shard.as_str()).collect();
    assert_eq!(names, ["-80", "80-"]);
    assert_eq!((gets() - g, lists() - l), (0, 1));
}
