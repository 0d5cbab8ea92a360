//! The ZooKeeper session behind a connection and the bounded calls made on it (Vitess's
//! `zk_conn.go`).
//!
//! A dropped connection does not end the session: the client reconnects to a server of the
//! ensemble within the session timeout, keeping ephemeral nodes and watches. Only an expired
//! (or otherwise terminated) session is replaced, on the next call after it ended.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;
use topo_core::backoff::Backoff;
use topo_core::{Result, TopoError};
use zookeeper_client::{Client, MultiWriteError, MultiWriteResult, MultiWriter};

use crate::error::{connection_lost, convert, outcome_unknown, unknown};
use crate::tls::{diagnose, Tls};
use crate::{ZkConn, ZkOptions};

/// The pause before the first retry of a call whose connection dropped; doubled for each
/// further one up to [`MAX_BACKOFF`] (jittered, see [`Backoff`]). The remote-operation
/// timeout bounds them all.
const BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How long every server must refuse connections before a first connect gives up.
const REFUSED_GRACE: Duration = Duration::from_millis(500);

/// How long a probe waits for a TCP connection before taking the server as merely slow.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Why no server of `addr` (`host:port,…`, observers after `|`, a chroot after `/`) can be
/// reached, when each refuses the connection or has a name that does not resolve; `None`
/// when any server accepts a connection or is merely silent.
async fn unreachable_everywhere(addr: &str) -> Option<String> {
    let mut reasons = Vec::new();
    for server in addr
        .split([',', '|'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let server = server.split('/').next().unwrap_or(server);
        let sockets: Vec<std::net::SocketAddr> = match tokio::net::lookup_host(server).await {
            Ok(found) => found.collect(),
            Err(e) => {
                reasons.push(format!("{server}: {e}"));
                continue;
            }
        };
        for socket in &sockets {
            match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(socket)).await
            {
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                _ => return None,
            }
        }
        reasons.push(format!("{server}: connection refused"));
    }
    (!reasons.is_empty()).then(|| reasons.join(", "))
}

/// Credentials from the auth file: scheme and auth bytes.
pub(crate) type Auth = Option<(String, Vec<u8>)>;

/// The ZooKeeper session a connection uses, replaced only after it ended.
#[derive(Debug)]
pub(crate) struct Session {
    addr: String,
    pub(crate) options: ZkOptions,
    auth: Auth,
    /// The checked TLS files, `None` for plain TCP.
    tls: Option<Tls>,
    /// `--topo-zk-max-concurrency`: a permit per call in flight.
    permits: tokio::sync::Semaphore,
    /// The current client, `None` once closed; a plain lock around an `Arc` keeps the
    /// per-call cost to a reference-count increment. The session ends (and its locks and
    /// proposals with it) when the last clone of its client is dropped.
    client: std::sync::RwLock<Option<Arc<Client>>>,
    /// Serialises making a new session.
    reconnect: tokio::sync::Mutex<()>,
    /// The lock and proposal nodes this connection's live entries own: anything else of
    /// ours in a queue is an orphan of a creation whose answer was lost.
    pub(crate) queue_nodes: std::sync::Mutex<HashSet<String>>,
    /// Serialises creating queue nodes, so an orphan hunt never mistakes a creation still
    /// in flight for an orphan.
    pub(crate) creating: tokio::sync::Mutex<()>,
    /// Clean-ups in the background (deleting the nodes of abandoned lock calls), which
    /// `close()` lets finish: a process that exits right after leaves nothing behind.
    pub(crate) cleanups: TaskTracker,
}

impl Session {
    /// Connects a first session to `addr` (`host:port,…`).
    pub(crate) async fn open(addr: &str, options: ZkOptions, auth: Auth) -> Result<Self> {
        let tls = Tls::load(&options.tls)?;
        let client = Self::connect(addr, &options, &auth, tls.as_ref(), true).await?;
        Ok(Session {
            addr: addr.to_string(),
            permits: tokio::sync::Semaphore::new(options.max_concurrency),
            options,
            auth,
            tls,
            client: std::sync::RwLock::new(Some(Arc::new(client))),
            reconnect: tokio::sync::Mutex::new(()),
            queue_nodes: std::sync::Mutex::new(HashSet::new()),
            creating: tokio::sync::Mutex::new(()),
            cleanups: TaskTracker::new(),
        })
    }

    /// Makes a session on `addr`, over TLS when `tls` is set. The library tries each server
    /// once per attempt (its own endless cycling would hide a misconfiguration until the
    /// timeout); after a failed attempt, a handshake of our own tells a misconfiguration,
    /// which fails at once, from servers that are down, which are tried again with backoff.
    /// On the `first` connect, when every server has refused the connection (or has a name
    /// that does not resolve) for [`REFUSED_GRACE`], that is the error, without waiting for
    /// the whole remote-operation timeout; a new session after an expired one keeps waiting.
    async fn connect(
        addr: &str,
        options: &ZkOptions,
        auth: &Auth,
        tls: Option<&Tls>,
        first: bool,
    ) -> Result<Client> {
        let mut connector = Client::connector()
            .with_session_timeout(options.session_timeout)
            .with_connection_timeout(
                options
                    .remote_operation_timeout
                    .min(options.session_timeout),
            )
            .with_fail_eagerly();
        if let Some((scheme, a)) = auth {
            connector = connector.with_auth(scheme, a);
        }
        if let Some(tls) = tls {
            connector = connector.with_tls(tls.options()?);
        }
        let what = format!("connecting to ZooKeeper at {addr}");
        bounded(options.remote_operation_timeout, &what, async {
            let mut pauses = Backoff::new(BACKOFF, MAX_BACKOFF);
            let mut refused_since: Option<tokio::time::Instant> = None;
            loop {
                let attempt = match tls {
                    Some(_) => connector.clone().secure_connect(addr).await,
                    None => connector.clone().connect(addr).await,
                };
                match attempt {
                    Ok(client) => return Ok(client),
                    Err(e @ (zookeeper_client::Error::NoHosts
                    | zookeeper_client::Error::ConnectionLoss
                    | zookeeper_client::Error::Timeout)) => {
                        if let Some(misconfigured) = diagnose(addr, tls).await {
                            return Err(misconfigured);
                        }
                        if first {
                            match unreachable_everywhere(addr).await {
                                Some(reasons) => {
                                    let since = *refused_since
                                        .get_or_insert_with(tokio::time::Instant::now);
                                    if since.elapsed() >= REFUSED_GRACE {
                                        return Err(TopoError::backend_msg(
                                            crate::BACKEND,
                                            format!("{what}: {reasons}"),
                                        ));
                                    }
                                }
                                None => refused_since = None,
                            }
                        }
                        let pause = pauses.next_delay();
                        tracing::debug!(addr, error = %e, ?pause, "no ZooKeeper server reached; retrying");
                        tokio::time::sleep(pause).await;
                    }
                    Err(e) => return Err(convert(e, addr)),
                }
            }
        })
        .await
    }

    /// The live client, making a new session when the current one has ended.
    async fn client(&self) -> Result<Arc<Client>> {
        let current = self.current()?;
        if !current.state().is_terminated() {
            return Ok(current);
        }
        let _one_at_a_time = self.reconnect.lock().await;
        let current = self.current()?;
        if !current.state().is_terminated() {
            return Ok(current);
        }
        tracing::warn!(addr = %self.addr, state = ?current.state(), "ZooKeeper session ended; starting a new one");
        let fresh = Arc::new(
            Self::connect(
                &self.addr,
                &self.options,
                &self.auth,
                self.tls.as_ref(),
                false,
            )
            .await?,
        );
        let mut slot = self.client.write().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            // Closed while connecting: the new session goes with `fresh`.
            return Err(self.closed());
        }
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    /// A turn among the calls in flight (`--topo-zk-max-concurrency`).
    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.permits.acquire().await.map_err(|_| self.closed())
    }

    fn current(&self) -> Result<Arc<Client>> {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| self.closed())
    }

    fn closed(&self) -> TopoError {
        TopoError::Interrupted(format!("ZooKeeper connection to {} closed", self.addr))
    }

    /// Finishes the pending clean-ups, then ends the session (deleting its locks and
    /// proposals, ending its watches) and waits until the server has confirmed it, each
    /// step bounded by the remote-operation timeout. The session closes once calls still in
    /// flight have dropped their clones of the client.
    pub(crate) async fn close(&self) {
        let limit = self.options.remote_operation_timeout;
        self.cleanups.close();
        if tokio::time::timeout(limit, self.cleanups.wait())
            .await
            .is_err()
        {
            tracing::warn!(addr = %self.addr, "closing: clean-ups still unfinished after {limit:?}");
        }
        let Some(client) = self
            .client
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let mut states = client.state_watcher();
        drop(client);
        let ended = tokio::time::timeout(limit, async {
            while !states.peek_state().is_terminated() {
                states.changed().await;
            }
        });
        if ended.await.is_err() {
            tracing::warn!(addr = %self.addr, "closing: the session did not end within {limit:?}");
        }
    }
}

impl ZkConn {
    /// The session behind this connection.
    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    /// The current session's client (a new session when the last one ended).
    pub(crate) async fn client(&self) -> Result<Arc<Client>> {
        self.session.client().await
    }

    /// Runs an idempotent `op` about `what`: retried with backoff when the connection drops
    /// under it (the client reconnects within the session, to another server if need be,
    /// which may take an election), all attempts together bounded by the remote-operation
    /// timeout.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: Future<Output = std::result::Result<T, zookeeper_client::Error>>,
    {
        let attempts = async {
            let _permit = self.session.permit().await?;
            let mut pauses = Backoff::new(BACKOFF, MAX_BACKOFF);
            loop {
                match op(self.client().await?).await {
                    Err(e) if connection_lost(&e) => {
                        let pause = pauses.next_delay();
                        tracing::debug!(what, ?pause, "ZooKeeper connection lost; retrying");
                        tokio::time::sleep(pause).await;
                    }
                    r => return r.map_err(|e| convert(e, what)),
                }
            }
        };
        bounded(self.options().remote_operation_timeout, what, attempts).await
    }

    /// Runs write `op` about `what` once, bounded by the remote-operation timeout: for
    /// writes whose retry could misreport the outcome (a create that succeeded would come
    /// back `NodeExists`, a versioned write `BadVersion`, a sequential create would queue
    /// twice) or overwrite a later write. A lost answer (the connection failed, or the
    /// time ran out, after the request was sent) is `OutcomeUnknown`.
    pub(crate) async fn call_once<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = std::result::Result<T, zookeeper_client::Error>>,
    {
        let limit = self.options().remote_operation_timeout;
        let _permit = bounded(limit, what, self.session.permit()).await?;
        let client = self.client().await?;
        match tokio::time::timeout(limit, op(client)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if outcome_unknown(&e) => Err(unknown(what, e)),
            Ok(Err(e)) => Err(convert(e, what)),
            Err(_) => Err(unknown(what, format!("no answer within {limit:?}"))),
        }
    }
}

impl ZkConn {
    /// Commits multi-op `w` about `what` once (as [`ZkConn::call_once`], a lost answer is
    /// `OutcomeUnknown`), bounded by the remote-operation timeout. `failed` turns the index
    /// and error of the operation that failed (and so undid the others) into the answer.
    pub(crate) async fn commit(
        &self,
        what: &str,
        mut w: MultiWriter<'_>,
        failed: impl FnOnce(usize, zookeeper_client::Error) -> TopoError,
    ) -> Result<Vec<MultiWriteResult>> {
        let limit = self.options().remote_operation_timeout;
        let _permit = bounded(limit, what, self.session.permit()).await?;
        match tokio::time::timeout(limit, w.commit()).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(MultiWriteError::OperationFailed { index, source })) => {
                Err(failed(index, source))
            }
            Ok(Err(MultiWriteError::RequestFailed { source })) if outcome_unknown(&source) => {
                Err(unknown(what, source))
            }
            Ok(Err(MultiWriteError::RequestFailed { source })) => Err(convert(source, what)),
            Err(_) => Err(unknown(what, format!("no answer within {limit:?}"))),
        }
    }
}

/// `fut`, or `Timeout` naming `what` when it takes longer than `limit`.
pub(crate) async fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| Err(TopoError::Timeout(what.to_string())))
}
