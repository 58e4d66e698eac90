//! The store's error type.
//!
//! The split that matters to callers is [`StoreError::is_unavailable`]: the webhook receiver
//! answers 503 for it (Toggl retries later, nothing is lost), while every other variant is a bug
//! or a state conflict that retrying the same request will not fix.

use crate::JobStatus;

/// A boxed error from a database driver or pool.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached right now (connection lost, pool timeout, busy, disk I/O, writer stopped).
    #[error("store unavailable: {context}")]
    Unavailable {
        /// What the store was doing.
        context: String,
        /// The driver's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The job is no longer running under this worker's lease; nothing was changed.
    #[error("lease on job {job_id} is not held by worker {worker}")]
    LeaseLost {
        /// The job.
        job_id: i64,
        /// The worker that asked.
        worker: String,
    },
    /// The requested row does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of row (`job`, `event`, ...).
        what: &'static str,
        /// Its key.
        id: String,
    },
    /// The job is in a status that does not allow the operation.
    #[error("job {job_id} is {status}, cannot {operation}")]
    WrongState {
        /// The job.
        job_id: i64,
        /// Its current status.
        status: JobStatus,
        /// What was asked.
        operation: &'static str,
    },
    /// A schema migration failed or the database holds a schema this build does not know.
    #[error("migration {version} failed: {message}")]
    Migration {
        /// Migration version (0 when not tied to one).
        version: u32,
        /// What went wrong.
        message: String,
        /// The driver's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// Stored data cannot be decoded, or the database file is damaged.
    #[error("store data is corrupt: {message}")]
    Corrupt {
        /// What could not be decoded.
        message: String,
    },
    /// The store URL or options are not usable.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// The caller passed a value the store refuses to write.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Any other database error (a bug in a query, a violated constraint).
    #[error("database error while {context}")]
    Database {
        /// What the store was doing.
        context: String,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// True when the failure is transient and the caller should answer "try again later"
    /// (HTTP 503) rather than treat the request as bad.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// True for [`StoreError::LeaseLost`].
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, StoreError::LeaseLost { .. })
    }

    /// True for [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    pub(crate) fn unavailable(context: impl Into<String>) -> Self {
        StoreError::Unavailable {
            context: context.into(),
            source: None,
        }
    }

    pub(crate) fn corrupt(message: impl Into<String>) -> Self {
        StoreError::Corrupt {
            message: message.into(),
        }
    }

    pub(crate) fn not_found(what: &'static str, id: impl ToString) -> Self {
        StoreError::NotFound {
            what,
            id: id.to_string(),
        }
    }

    pub(crate) fn lease_lost(job_id: i64, worker: &str) -> Self {
        StoreError::LeaseLost {
            job_id,
            worker: worker.to_owned(),
        }
    }

    /// A copy good enough to hand to every caller of a batch whose commit failed
    /// (driver errors are not `Clone`).
    pub(crate) fn to_batch_failure(&self) -> Self {
        match self {
            StoreError::Unavailable { context, source } => StoreError::Unavailable {
                context: match source {
                    Some(source) => format!("batched commit failed: {context}: {source}"),
                    None => format!("batched commit failed: {context}"),
                },
                source: None,
            },
            StoreError::Corrupt { message } => StoreError::corrupt(message.clone()),
            other => StoreError::Unavailable {
                context: format!("batched commit failed: {other}"),
                source: None,
            },
        }
    }
}
