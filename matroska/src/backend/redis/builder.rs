//! [`RedisBackendBuilder`]: settings, their validation, connecting.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use super::clock::{saturating_u64, Generations};
use super::reply::map_error;
use super::topology::ClusterHandle;
use super::{
    breaker, escape_namespace, Conn, Life, RedisBackend, DEFAULT_CHUNK_SIZE, DEFAULT_CIRCUIT_COOL_DOWN,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_NAMESPACE, DEFAULT_RESPONSE_TIMEOUT, DEFAULT_SWEEP_INTERVAL,
    DEFAULT_TOMBSTONE_WINDOW,
};
use crate::backend::memory::MAX_TOMBSTONE_WINDOW;
use crate::error::{BackendError, BackendErrorKind, ConfigError};

/// The longest connect or response timeout, circuit cool-down accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// The largest [chunk size](RedisBackendBuilder::chunk_size) accepted.
pub const MAX_CHUNK_SIZE: usize = 100_000;
/// The largest number of [replica acknowledgements](RedisBackendBuilder::replica_acks)
/// accepted.
pub const MAX_REPLICA_ACKS: usize = 100;
/// The shortest [sweep interval](RedisBackendBuilder::sweep_interval)
/// accepted (other than zero, which turns the sweep off).
pub const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// Where the connection comes from.
pub(super) enum Source {
    Url(String),
    Connection(ConnectionManager),
    Cluster(Vec<String>),
    ClusterConnection(ClusterConnection),
}

/// Configures a [`RedisBackend`]; made by [`RedisBackend::builder`],
/// [`RedisBackend::from_connection`], [`RedisBackend::cluster_builder`] or
/// [`RedisBackend::from_cluster_connection`]. Every setting is checked by
/// [`build`](Self::build).
#[must_use]
pub struct RedisBackendBuilder {
    pub(super) source: Source,
    pub(super) namespace: String,
    pub(super) connect_timeout: Duration,
    pub(super) response_timeout: Duration,
    pub(super) window: Duration,
    pub(super) chunk_size: usize,
    pub(super) replica_acks: usize,
    pub(super) cool_down: Duration,
    pub(super) sweep_interval: Duration,
}

impl fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackendBuilder")
            .field(
                "source",
                &match &self.source {
                    Source::Url(_) => "url",
                    Source::Connection(_) => "connection",
                    Source::Cluster(_) => "cluster seeds",
                    Source::ClusterConnection(_) => "cluster connection",
                },
            )
            .field("namespace", &self.namespace)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("window", &self.window)
            .field("chunk_size", &self.chunk_size)
            .field("replica_acks", &self.replica_acks)
            .field("cool_down", &self.cool_down)
            .field("sweep_interval", &self.sweep_interval)
            .finish()
    }
}

impl RedisBackendBuilder {
    pub(super) fn new(source: Source) -> Self {
        RedisBackendBuilder {
            source,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            window: DEFAULT_TOMBSTONE_WINDOW,
            chunk_size: DEFAULT_CHUNK_SIZE,
            replica_acks: 0,
            cool_down: DEFAULT_CIRCUIT_COOL_DOWN,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
        }
    }

    /// The first part of every Redis key (default [`DEFAULT_NAMESPACE`]).
    /// Backends with different namespaces share a server without seeing each
    /// other. Any text; `%`, `{` and `}` are percent-encoded in key names.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long connecting may take (default 1 s; `1 ms ..=` [`MAX_TIMEOUT`]).
    /// Only used with URLs.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long Redis may take to answer one call (default 1 s;
    /// `1 ms ..=` [`MAX_TIMEOUT`]). Every operation is also bounded by
    /// connect + response timeout as a whole, so that calls waiting for a
    /// reconnection fail in time.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long tombstones are kept and tickets stay valid (default 60 s;
    /// `1 ms ..= 7 days`). See [the trade-off](super#tombstone-window).
    pub fn tombstone_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How many dependents one script call drops at most, and how many
    /// items (dependencies, entries, keys) one batched call carries
    /// (default 1000; `1 ..=` [`MAX_CHUNK_SIZE`]). An invalidation with more
    /// runs in several calls so that Redis is never blocked for long (about
    /// a millisecond per 1000).
    pub fn chunk_size(mut self, n: usize) -> Self {
        self.chunk_size = n;
        self
    }

    /// Redis Cluster only: how many replicas must acknowledge the writes of
    /// a put's registrations and entry and of an invalidation's tombstones
    /// and drops before the call goes on (`WAIT`; default 0, not waiting;
    /// at most [`MAX_REPLICA_ACKS`]). Replication is asynchronous, so a
    /// master that crashes can lose writes it acknowledged in the last
    /// moments (about the replication lag); with 1, an invalidation that
    /// returned survives the failover of a master with one replica. The
    /// price: one more round trip per step, and
    /// [`Unavailable`](BackendErrorKind::Unavailable) errors while a master
    /// has fewer replicas (for example after a failover, until the old
    /// master is back as a replica).
    pub fn replica_acks(mut self, n: usize) -> Self {
        self.replica_acks = n;
        self
    }

    /// How long operations fail at once after Redis was found unreachable
    /// (default [`DEFAULT_CIRCUIT_COOL_DOWN`], 250 ms; at most
    /// [`MAX_TIMEOUT`]), before one call is let through to probe whether it
    /// is back; `Duration::ZERO` disables the breaker. See [the behavior on
    /// failures](super#behavior-on-failures).
    pub fn circuit_cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }

    /// How long the background [sweep](super#bookkeeping-and-the-sweep)
    /// rests between two passes over the keys (default
    /// [`DEFAULT_SWEEP_INTERVAL`], 60 s; [`MIN_SWEEP_INTERVAL`] ..= 7 days);
    /// `Duration::ZERO` turns it off (then call
    /// [`RedisBackend::sweep_now`] yourself, or the bookkeeping of
    /// dependencies never touched again is never pruned).
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// Every setting in its range, or a [`ConfigError`] naming the first one
    /// that is not.
    fn validate(&self) -> Result<(), ConfigError> {
        let timeout = |setting: &'static str, d: Duration| {
            if d < Duration::from_millis(1) || d > MAX_TIMEOUT {
                return Err(ConfigError::new(
                    setting,
                    format!("{d:?} is outside the accepted range 1ms..={MAX_TIMEOUT:?}"),
                ));
            }
            Ok(())
        };
        timeout("connect_timeout", self.connect_timeout)?;
        timeout("response_timeout", self.response_timeout)?;
        if self.window < Duration::from_millis(1) || self.window > MAX_TOMBSTONE_WINDOW {
            return Err(ConfigError::new(
                "tombstone_window",
                format!("{:?} is outside the accepted range 1ms..={MAX_TOMBSTONE_WINDOW:?}", self.window),
            ));
        }
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return Err(ConfigError::new(
                "chunk_size",
                format!("{} is outside the accepted range 1..={MAX_CHUNK_SIZE}", self.chunk_size),
            ));
        }
        if self.replica_acks > MAX_REPLICA_ACKS {
            return Err(ConfigError::new(
                "replica_acks",
                format!("{} is above the accepted maximum of {MAX_REPLICA_ACKS}", self.replica_acks),
            ));
        }
        if self.cool_down > MAX_TIMEOUT {
            return Err(ConfigError::new(
                "circuit_cool_down",
                format!(
                    "{:?} is above the accepted maximum of {MAX_TIMEOUT:?} (zero turns the breaker off)",
                    self.cool_down
                ),
            ));
        }
        if !self.sweep_interval.is_zero()
            && (self.sweep_interval < MIN_SWEEP_INTERVAL || self.sweep_interval > MAX_TOMBSTONE_WINDOW)
        {
            return Err(ConfigError::new(
                "sweep_interval",
                format!(
                    "{:?} is outside the accepted range {MIN_SWEEP_INTERVAL:?}..={MAX_TOMBSTONE_WINDOW:?} (zero turns \
                     the sweep off)",
                    self.sweep_interval
                ),
            ));
        }
        Ok(())
    }

    /// Checks the settings, connects (for a URL or seeds), loads the
    /// scripts, checks the server's eviction policy (see [eviction](super#eviction))
    /// and starts the background sweep.
    ///
    /// # Errors
    /// [`BackendErrorKind::Config`] for a setting out of range (the message
    /// names it) or an eviction policy that could drop the bookkeeping;
    /// [`BackendErrorKind::Refused`] for an invalid URL or a refused
    /// authentication; [`BackendErrorKind::Unavailable`] or
    /// [`BackendErrorKind::Timeout`] if the server cannot be reached.
    pub async fn build(self) -> Result<RedisBackend, BackendError> {
        self.validate()?;
        // both at most an hour: no overflow
        let op_timeout = self.connect_timeout + self.response_timeout;
        let conn = match self.source {
            Source::Connection(conn) => Conn::Single(Box::new(conn)),
            Source::ClusterConnection(conn) => Conn::Cluster(ClusterHandle::new(conn, None)),
            Source::Cluster(seeds) => {
                let client = ClusterClient::builder(seeds.iter().map(String::as_str))
                    .connection_timeout(self.connect_timeout)
                    .response_timeout(self.response_timeout)
                    .retries(3)
                    .min_retry_wait(20)
                    .max_retry_wait(saturating_u64(self.connect_timeout.as_millis()).max(20))
                    .build()
                    .map_err(|e| {
                        BackendError::new(BackendErrorKind::Refused, format!("invalid Redis Cluster seeds: {e}"))
                            .with_source(e)
                    })?;
                match tokio::time::timeout(op_timeout, client.get_async_connection()).await {
                    Ok(Ok(conn)) => Conn::Cluster(ClusterHandle::new(conn, Some(client))),
                    Ok(Err(e)) => return Err(map_error(e, None)),
                    Err(_) => {
                        return Err(BackendError::new(
                            BackendErrorKind::Timeout,
                            format!("could not connect to Redis Cluster within {op_timeout:?}"),
                        ))
                    }
                }
            }
            Source::Url(url) => {
                let client = redis::Client::open(url.as_str()).map_err(|e| {
                    BackendError::new(BackendErrorKind::Refused, format!("invalid Redis URL: {e}")).with_source(e)
                })?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.response_timeout))
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(self.connect_timeout);
                let connect = ConnectionManager::new_with_config(client, config);
                match tokio::time::timeout(op_timeout, connect).await {
                    Ok(Ok(conn)) => Conn::Single(Box::new(conn)),
                    Ok(Err(e)) => return Err(map_error(e, None)),
                    Err(_) => {
                        return Err(BackendError::new(
                            BackendErrorKind::Timeout,
                            format!("could not connect to Redis within {op_timeout:?}"),
                        ))
                    }
                }
            }
        };
        let window_us = saturating_u64(self.window.as_micros());
        let window_ms = saturating_u64(self.window.as_millis()).max(1);
        let backend = RedisBackend {
            conn,
            namespace: escape_namespace(&self.namespace),
            window_us,
            // how long a dead-generation mark and a tombstone must outlive
            // the window: 1 % + 10 ms covers the rate difference between
            // clocks (0.1 % assumed) and rounding
            marker_ms: window_ms.saturating_add(window_ms / 100).saturating_add(10),
            keep_us: window_us.saturating_add(window_us / 100).saturating_add(10_000),
            chunk_size: self.chunk_size,
            op_timeout,
            gens: Generations::new(),
            clock: Arc::default(),
            own_tombstones: Arc::default(),
            own_clears: Arc::default(),
            replica_acks: self.replica_acks,
            response_timeout: self.response_timeout,
            breaker: Arc::new(breaker::Breaker::new(self.cool_down)),
            life: Arc::new(Life::default()),
        };
        backend.load_scripts().await?;
        if let Conn::Cluster(handle) = &backend.conn {
            if !handle.read_slots(op_timeout).await {
                tracing::warn!("could not read the Redis Cluster slot map: batched calls go slot by slot until it is");
            }
        }
        backend.check_eviction_policy().await?;
        if !self.sweep_interval.is_zero() {
            backend.start_sweep(self.sweep_interval);
        }
        Ok(backend)
    }
}
