//! The Redis backend (single node and Redis Cluster).

/// A backend storing entries in Redis.
#[derive(Debug)]
pub struct RedisBackend {}
