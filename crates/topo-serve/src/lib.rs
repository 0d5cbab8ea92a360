//! # topo-serve
//!
//! The topology browser behind `topo serve`: server-rendered pages (overview, raw tree with
//! decoded files, locks and elections), a JSON API under `/api`, live updates through
//! server-sent events fed by watches (`/events`), and Prometheus metrics (`/metrics`).
//!
//! It is read-only unless [`ServeOptions::allow_writes`] is set; then a record's JSON can be
//! saved as a compare-and-set on the version it was read at. [`metrics::render`] renders the
//! metrics text for any program that embeds Toposphere.
//!
//! ```no_run
//! # async fn demo(ts: toposphere::Server) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:15000").await?;
//! topo_serve::serve(ts, listener, topo_serve::ServeOptions::default(), std::future::pending()).await
//! # }
//! ```

pub mod access;
pub mod html;
pub mod live;
pub mod metrics;
pub mod model;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use topo_core::{ErrorKind, TopoError, Version};
use toposphere::Server;

use crate::live::{Event, Live};
use crate::model::GLOBAL;

/// How the browser behaves.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Allow saving files (compare-and-set). Without it every write is refused with 403.
    pub allow_writes: bool,
    /// Locks held longer than this are flagged stale.
    pub stale_lock_after: Duration,
    /// When set, every request but `/login` needs this bearer token.
    pub token: Option<access::Token>,
    /// When set, connections are TLS (HTTP/1.1 over rustls).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Without a token, answer requests addressed to any name, not only to loopback names
    /// (`--insecure`); see [`access::require_loopback_host`].
    pub any_host: bool,
    /// The program's serving-graph cache, whose counters `/metrics` then shows.
    pub srv_cache: Option<Arc<toposphere::srv_cache::SrvCache>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            allow_writes: false,
            stale_lock_after: Duration::from_secs(600),
            token: None,
            tls: None,
            any_host: false,
            srv_cache: None,
        }
    }
}

/// The state shared by every request.
#[derive(Debug)]
pub struct App {
    ts: Server,
    options: ServeOptions,
    live: Arc<Live>,
    /// The last page content rendered for each page, shown with a banner while the topology
    /// does not answer.
    last_good: Mutex<HashMap<String, String>>,
    /// Cancelled when the server stops: ends the event streams, which never end otherwise.
    closing: CancellationToken,
}

impl App {
    /// The browser's state over `ts`. Live updates need [`live::run`] running on
    /// [`App::live`] (as [`serve`] does).
    pub fn new(ts: Server, options: ServeOptions) -> Arc<Self> {
        Arc::new(App {
            ts,
            options,
            live: Arc::new(Live::default()),
            last_good: Mutex::default(),
            closing: CancellationToken::new(),
        })
    }

    /// Ends every open event stream (`/events`), and later ones at once, so a graceful
    /// shutdown does not wait for the pages still open. [`serve`] calls it when `shutdown`
    /// completes; a program serving [`router`] itself calls it before waiting for its
    /// connections.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// The live state: change events and connection status.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// The Prometheus text of this server's statistics and watches.
    pub fn metrics(&self) -> String {
        let mut extra = self.live.counts();
        extra.srv_cache = self.options.srv_cache.as_ref().map(|c| c.stats());
        metrics::render(self.ts.stats(), &extra)
    }
}

/// Serves the browser on `listener` until `shutdown` completes, with live updates (over
/// TLS when [`ServeOptions::tls`] is set).
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    ts: Server,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = options.tls.clone();
    let app = App::new(ts.clone(), options);
    let watcher = tokio::spawn(live::run(ts, app.live().clone()));
    let closing = app.clone();
    let shutdown = async move {
        shutdown.await;
        closing.close();
    };
    let result = match tls {
        Some(config) => serve_tls(listener, router(app), config, shutdown).await,
        None => {
            axum::serve(listener, router(app))
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    watcher.abort();
    result
}

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TLS connections and serves HTTP/1.1 on each until `shutdown` completes, then
/// shuts the open connections down gracefully and waits for them (as `axum::serve` does for
/// plain HTTP), so nothing is answered once this returns.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => {
                connections.shutdown().await;
                return Ok(());
            }
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let watcher = connections.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let io = hyper_util::rt::TokioIo::new(stream);
            let connection =
                hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

/// The routes: pages, `/events`, `/metrics` and `/api/...`, behind the token when one is
/// set.
pub fn router(app: Arc<App>) -> Router {
    let token = app.options.token.clone();
    let any_host = app.options.any_host;
    let routes = Router::new()
        .route("/", get(overview_page))
        .route("/keyspace/{ks}", get(keyspace_page))
        .route("/tree", get(tree_page))
        .route("/locks", get(locks_page))
        .route("/events", get(events))
        .route("/metrics", get(metrics_text))
        .route("/api/overview", get(api_overview))
        .route("/api/cells", get(api_cells))
        .route("/api/keyspaces", get(api_keyspaces))
        .route("/api/keyspaces/{ks}/shards", get(api_shards))
        .route("/api/tablets", get(api_tablets))
        .route("/api/serving", get(api_serving))
        .route("/api/tree", get(api_tree))
        .route("/api/file", get(api_file).put(api_put_file))
        .route("/api/locks", get(api_locks))
        .route("/login", get(login_form).post(login))
        .with_state(app);
    match token {
        Some(token) => routes.layer(axum::middleware::from_fn_with_state(
            token,
            access::require_token,
        )),
        None if any_host => routes,
        None => routes.layer(axum::middleware::from_fn(access::require_loopback_host)),
    }
}

/// The sign-in form for browsers (they cannot send an `Authorization` header themselves).
async fn login_form() -> Html<String> {
    Html(html::login(None))
}

/// Form of `/login`.
#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginForm(<redacted>)")
    }
}

/// Checks the token and keeps it in an HTTP-only cookie for the pages and their script.
async fn login(State(app): State<Arc<App>>, axum::Form(form): axum::Form<LoginForm>) -> Response {
    let Some(token) = &app.options.token else {
        return axum::response::Redirect::to("/").into_response();
    };
    let cookie_safe = form
        .token
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b';');
    if !cookie_safe || !token.matches(form.token.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            Html(html::login(Some("That is not the token."))),
        )
            .into_response();
    }
    let secure = if app.options.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{}={}; HttpOnly; SameSite=Strict; Path=/{secure}",
        access::TOKEN_COOKIE,
        form.token
    );
    (
        [(header::SET_COOKIE, cookie)],
        axum::response::Redirect::to("/"),
    )
        .into_response()
}

/// An error as the API returns it: a status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl From<TopoError> for ApiError {
    fn from(e: TopoError) -> Self {
        let status = match e.kind() {
            ErrorKind::NoNode => StatusCode::NOT_FOUND,
            ErrorKind::BadVersion => StatusCode::CONFLICT,
            ErrorKind::InvalidArgument | ErrorKind::TooLarge => StatusCode::BAD_REQUEST,
            ErrorKind::ReadOnly => StatusCode::FORBIDDEN,
            ErrorKind::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Query of the pages: `fragment=1` asks for the content only (the live script's refresh).
#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default)]
    fragment: Option<String>,
}

/// Query naming a file or directory of a cell.
#[derive(Debug, Deserialize)]
struct PathQuery {
    #[serde(default)]
    cell: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    fragment: Option<String>,
}

/// Query naming a cell.
#[derive(Debug, Deserialize)]
struct CellQuery {
    cell: Option<String>,
}

/// Renders a page from freshly read content, or from the last content rendered for it with
/// a banner when the topology does not answer (503 for the live script's refresh).
fn respond(
    app: &App,
    key: String,
    title: &str,
    fragment: bool,
    content: Result<String, TopoError>,
) -> Response {
    match content {
        Ok(html) => {
            app.last_good
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, html.clone());
            if fragment {
                Html(html).into_response()
            } else {
                Html(html::page(title, &html, None)).into_response()
            }
        }
        Err(e) if e.is_no_node() => (
            StatusCode::NOT_FOUND,
            Html(html::page(
                title,
                &format!("<p class=\"bad\">{}</p>", html::esc(&e.to_string())),
                None,
            )),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!("cannot read the topology for {key}: {e}");
            let last = app
                .last_good
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .cloned()
                .unwrap_or_else(|| "<p class=\"muted\">No data was read yet.</p>".into());
            let message = e.to_string().replace(['\r', '\n'], " ");
            let mut response = if fragment {
                (StatusCode::SERVICE_UNAVAILABLE, Html(last)).into_response()
            } else {
                let banner = format!(
                    "Lost connection to the topology ({message}); showing the last known data."
                );
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Html(html::page(title, &last, Some(&banner))),
                )
                    .into_response()
            };
            if let Ok(v) = HeaderValue::from_str(&message) {
                response.headers_mut().insert("x-topo-error", v);
            }
            response
        }
    }
}

async fn overview_page(State(app): State<Arc<App>>, Query(q): Query<PageQuery>) -> Response {
    let content = model::overview(&app.ts).await.map(|o| html::overview(&o));
    respond(&app, "/".into(), "Overview", q.fragment.is_some(), content)
}

async fn keyspace_page(
    State(app): State<Arc<App>>,
    Path(ks): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let content = async {
        let record = model::file(&app.ts, GLOBAL, &toposphere::paths::keyspace(&ks)).await?;
        let shards = model::shards(&app.ts, &ks).await?;
        Ok(html::keyspace(&ks, &record, &shards))
    }
    .await;
    respond(
        &app,
        format!("/keyspace/{ks}"),
        &format!("Keyspace {ks}"),
        q.fragment.is_some(),
        content,
    )
}

/// Every file of the global cell and of every cell, the cells read in parallel (a cell that
/// cannot be read shows its error instead, after no longer than the slowest one).
async fn all_cells_files(
    ts: &Server,
) -> Result<BTreeMap<String, Result<Vec<model::FileEntry>, String>>, TopoError> {
    let entries = |files: Vec<(model::FileEntry, Vec<u8>)>| files.into_iter().map(|(f, _)| f);
    let global = model::all_files(ts.global().as_ref()).await?;
    let cells = futures::future::join_all(ts.get_cell_info_names().await?.into_iter().map(
        |cell| async move {
            let files = async { model::all_files(model::conn(ts, &cell).await?.as_ref()).await }
                .await
                .map(|files| entries(files).collect())
                .map_err(|e| e.to_string());
            (cell, files)
        },
    ))
    .await;
    let mut out: BTreeMap<_, _> = cells.into_iter().collect();
    out.insert(GLOBAL.to_string(), Ok(entries(global).collect()));
    Ok(out)
}

async fn tree_page(State(app): State<Arc<App>>, Query(q): Query<PathQuery>) -> Response {
    let fragment = q.fragment.is_some();
    match (&q.cell, &q.path) {
        (Some(cell), Some(path)) => {
            let content = model::file(&app.ts, cell, path)
                .await
                .map(|f| html::file(&f, app.options.allow_writes));
            // Keyed by the clean path, so spellings of one file (`//a/./b`) share an entry
            // instead of adding one each.
            let key = format!(
                "/tree {cell} {}",
                topo_core::path::clean(&format!("/{path}"))
            );
            respond(&app, key, path, fragment, content)
        }
        _ => {
            let content = all_cells_files(&app.ts).await.map(|c| html::tree(&c));
            respond(&app, "/tree".into(), "Tree", fragment, content)
        }
    }
}

async fn locks_page(State(app): State<Arc<App>>, Query(q): Query<PageQuery>) -> Response {
    let content = model::locks(&app.ts, app.options.stale_lock_after)
        .await
        .map(|l| html::locks(&l));
    respond(
        &app,
        "/locks".into(),
        "Locks and elections",
        q.fragment.is_some(),
        content,
    )
}

fn sse_event(ev: &Event) -> SseEvent {
    let name = match ev {
        Event::Change { .. } => "change",
        Event::Status { .. } => "status",
    };
    SseEvent::default()
        .event(name)
        .data(serde_json::to_string(ev).unwrap_or_default())
}

/// The event stream: the current status first, then every change and status change.
async fn events(
    State(app): State<Arc<App>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let first = sse_event(&app.live.status());
    let later = BroadcastStream::new(app.live.subscribe()).map(|item| match item {
        Ok(ev) => Ok(sse_event(&ev)),
        // Missed events: a change event makes the page re-read everything.
        Err(_) => Ok(sse_event(&Event::Change { generation: 0 })),
    });
    let stream = futures::StreamExt::take_until(
        tokio_stream::once(Ok(first)).chain(later),
        app.closing.clone().cancelled_owned(),
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics(),
    )
        .into_response()
}

async fn api_overview(State(app): State<Arc<App>>) -> ApiResult<model::Overview> {
    Ok(Json(model::overview(&app.ts).await?))
}

async fn api_cells(State(app): State<Arc<App>>) -> ApiResult<Vec<model::CellView>> {
    Ok(Json(model::overview(&app.ts).await?.cells))
}

async fn api_keyspaces(State(app): State<Arc<App>>) -> ApiResult<Vec<String>> {
    Ok(Json(app.ts.get_keyspaces().await?))
}

async fn api_shards(
    State(app): State<Arc<App>>,
    Path(ks): Path<String>,
) -> ApiResult<Vec<model::ShardView>> {
    // An unknown keyspace is a 404, not an empty list.
    app.ts.get_keyspace(&ks).await?;
    Ok(Json(model::shards(&app.ts, &ks).await?))
}

/// The cells a `cell` parameter names: that cell, or every cell.
async fn cells_of(ts: &Server, q: &CellQuery) -> Result<Vec<String>, TopoError> {
    match &q.cell {
        Some(c) => {
            ts.get_cell_info(c, false).await?;
            Ok(vec![c.clone()])
        }
        None => ts.get_cell_info_names().await,
    }
}

async fn api_tablets(
    State(app): State<Arc<App>>,
    Query(q): Query<CellQuery>,
) -> ApiResult<Vec<model::TabletView>> {
    let mut out = Vec::new();
    for cell in cells_of(&app.ts, &q).await? {
        out.extend(model::tablets(&app.ts, &cell).await?);
    }
    Ok(Json(out))
}

async fn api_serving(
    State(app): State<Arc<App>>,
    Query(q): Query<CellQuery>,
) -> ApiResult<Vec<model::ServingView>> {
    let keyspaces = app.ts.get_keyspaces().await?;
    let mut out = Vec::new();
    for cell in cells_of(&app.ts, &q).await? {
        out.extend(model::serving(&app.ts, &cell, &keyspaces).await?);
    }
    Ok(Json(out))
}

fn cell_of(q: &PathQuery) -> &str {
    q.cell.as_deref().unwrap_or(GLOBAL)
}

async fn api_tree(
    State(app): State<Arc<App>>,
    Query(q): Query<PathQuery>,
) -> ApiResult<serde_json::Value> {
    let cell = cell_of(&q);
    let path = q.path.as_deref().unwrap_or("/");
    let entries = model::conn(&app.ts, cell)
        .await?
        .list_dir(path, true)
        .await?;
    let entries: Vec<_> = entries
        .into_iter()
        .map(|e| {
            json!({
                "name": e.name,
                "directory": e.entry_type == topo_core::types::DirEntryType::Directory,
                "ephemeral": e.ephemeral,
            })
        })
        .collect();
    Ok(Json(
        json!({ "cell": cell, "path": path, "entries": entries }),
    ))
}

fn required_path(q: &PathQuery) -> Result<&str, ApiError> {
    q.path
        .as_deref()
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "missing parameter: path".into()))
}

async fn api_file(
    State(app): State<Arc<App>>,
    Query(q): Query<PathQuery>,
) -> ApiResult<model::FileView> {
    Ok(Json(
        model::file(&app.ts, cell_of(&q), required_path(&q)?).await?,
    ))
}

async fn api_put_file(
    State(app): State<Arc<App>>,
    Query(q): Query<PathQuery>,
    body: String,
) -> ApiResult<serde_json::Value> {
    if !app.options.allow_writes {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "topo serve is read-only; start it with --allow-writes to save files".into(),
        ));
    }
    let cell = cell_of(&q);
    let path = required_path(&q)?;
    let version = q
        .version
        .as_deref()
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("missing parameter: version (the version of {path} the edit started from)"),
            )
        })?
        .parse::<i64>()
        .map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("invalid version {:?}", q.version),
            )
        })?;
    match model::save(&app.ts, cell, path, &body, Version::new(version)).await {
        Ok(v) => {
            tracing::info!(cell, path, version = %v, "saved from the browser");
            Ok(Json(
                json!({ "cell": cell, "path": path, "version": v.to_string() }),
            ))
        }
        Err(e) if e.is(ErrorKind::BadVersion) => {
            let now = model::file(&app.ts, cell, path)
                .await
                .map(|f| f.version)
                .unwrap_or_else(|_| "deleted".into());
            Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "someone changed {path} first: you edited version {version}, it is now version {now}; nothing was saved (reload to see the change)"
                ),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

async fn api_locks(State(app): State<Arc<App>>) -> ApiResult<model::LocksView> {
    Ok(Json(
        model::locks(&app.ts, app.options.stale_lock_after).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spellings_of_one_file_share_one_last_known_page() {
        let registry = toposphere::Registry::with_memory();
        let ts = Server::open(
            &registry,
            "memory",
            "",
            "/vitess/global",
            toposphere::ServerConfig::default(),
        )
        .await
        .unwrap();
        ts.global().create("notes/a", b"hello").await.unwrap();
        let app = App::new(ts, ServeOptions::default());
        for spelling in ["/notes/a", "notes/a", "//notes/./a", "/notes/x/../a/"] {
            let q = PathQuery {
                cell: Some(GLOBAL.into()),
                path: Some(spelling.into()),
                version: None,
                fragment: None,
            };
            let r = tree_page(State(app.clone()), Query(q)).await;
            assert_eq!(r.status(), StatusCode::OK, "{spelling}");
        }
        assert_eq!(app.last_good.lock().unwrap().len(), 1);
    }
}
