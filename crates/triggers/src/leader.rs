//! Work that one instance at a time must do (subscription repair, catch-up polling), run only
//! while holding a named lease in the shared store, and taken over when its holder dies.
//!
//! Several `serve` instances behind a load balancer all receive deliveries, but if each of them
//! repaired subscriptions they would race on Toggl's API (duplicate subscriptions, each with its
//! own secret) and spend the organization's hourly quota several times over; catch-up polling
//! would store the same changes from several places. So that work runs under [`lead`]:
//!
//! - the lease is a row with an expiry ([`Store::try_lead`]), taken and renewed every
//!   `ttl / 3`; a holder killed with `kill -9` simply stops renewing, and another instance takes
//!   over once `ttl` has passed (the store times leases with the database server's clock, so
//!   skewed hosts agree);
//! - a holder that cannot renew (database unreachable, process paused) stops its task by itself
//!   once `2 * ttl / 3` have passed since the start of its last successful renewal: the lease it
//!   holds lasts at least `ttl` from that moment, so the task is stopped before anyone else can
//!   take over, and two leaders never overlap while clocks run at the same speed;
//! - a renewal that finds another holder (our lease expired meanwhile) stops the task at once;
//! - on shutdown the task is asked to stop, and the lease is released so another instance takes
//!   over at its next attempt instead of after `ttl`.
//!
//! The task gets a `watch::Receiver<bool>` that turns `true` when it must stop (leadership lost
//! or shutdown); it has [`LeaseConfig::stop_grace`] to finish, then it is aborted.
//!
//! ```no_run
//! # async fn demo(store: toggl_connect_store::Store) {
//! use std::time::Duration;
//! use toggl_connect_triggers::leader::{LeaseConfig, holder_id, lead};
//! let (_stop_all, shutdown) = tokio::sync::watch::channel(false);
//! let lease = LeaseConfig::new("subscriptions", holder_id(), Duration::from_secs(30));
//! lead(store, lease, shutdown, |mut stop| async move {
//!     // repair subscriptions until `stop` turns true
//!     let _ = stop.wait_for(|s| *s).await;
//! })
//! .await;
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use rand::RngCore;
use toggl_connect_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Shortest renewal period: a smaller `ttl` would only hammer the database.
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// Which lease, who asks, and how it is timed.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The lease's name, the same on every instance (e.g. `subscriptions`).
    pub name: String,
    /// This instance, unique among all instances and restarts (see [`holder_id`]).
    pub holder: String,
    /// How long a lease lasts without renewal: how long a dead holder blocks a takeover.
    pub ttl: Duration,
    /// How often the holder renews (default `ttl / 3`).
    pub renew_every: Duration,
    /// How often an instance that does not lead asks for the lease (default `ttl / 3`).
    pub poll_every: Duration,
    /// How long a task asked to stop may take before it is aborted (default `ttl / 6`).
    pub stop_grace: Duration,
}

impl LeaseConfig {
    /// A lease named `name` for `holder`, lasting `ttl`, with the default periods.
    pub fn new(name: impl Into<String>, holder: impl Into<String>, ttl: Duration) -> Self {
        Self {
            name: name.into(),
            holder: holder.into(),
            ttl,
            renew_every: (ttl / 3).max(MIN_PERIOD),
            poll_every: (ttl / 3).max(MIN_PERIOD),
            stop_grace: ttl / 6,
        }
    }

    /// Asks for the lease every `period` while not leading.
    #[must_use]
    pub fn poll_every(mut self, period: Duration) -> Self {
        self.poll_every = period.max(MIN_PERIOD);
        self
    }

    /// How long without a successful renewal before the holder stops its task on its own.
    fn give_up_after(&self) -> Duration {
        self.ttl * 2 / 3
    }
}

/// Why [`lead`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeadEnd {
    /// `shutdown` turned true (or its sender was dropped); the lease was released if held.
    Shutdown,
    /// The task returned (or panicked) by itself while leading; the lease was released so
    /// another instance can run it.
    TaskEnded,
}

/// A holder id unique to this process: `hostname:pid:random`.
///
/// The random part keeps a restarted process that got the same pid (common in containers,
/// where the server is often pid 1) from inheriting its predecessor's lease.
pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".to_owned());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::thread_rng().next_u32()
    )
}

/// Runs `make_task` while this instance holds the lease `config.name`, until `shutdown` turns
/// true or the task ends by itself.
///
/// Each time leadership is won, `make_task` is called with a receiver that turns `true` when the
/// task must stop; when leadership is lost the task is stopped and the instance goes back to
/// asking for the lease every [`LeaseConfig::poll_every`]. Store errors are logged and retried:
/// a database outage makes every instance a follower until it comes back.
#[tracing::instrument(skip_all, fields(lease = %config.name, holder = %config.holder))]
pub async fn lead<F, Fut>(
    store: Store,
    config: LeaseConfig,
    mut shutdown: watch::Receiver<bool>,
    mut make_task: F,
) -> LeadEnd
where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        if stopping(&shutdown) {
            // A try_lead cut short by the shutdown may still have taken the lease.
            release(&store, &config).await;
            return LeadEnd::Shutdown;
        }
        let asked = Instant::now();
        let won = tokio::select! {
            r = renew(&store, &config, asked + config.give_up_after()) => r,
            _ = shutdown.changed() => continue,
        };
        match won {
            Ok(true) => {
                tracing::info!("leading");
                match hold(&store, &config, &mut shutdown, &mut make_task, asked).await {
                    Held::Lost => {}
                    Held::Shutdown => {
                        release(&store, &config).await;
                        return LeadEnd::Shutdown;
                    }
                    Held::TaskEnded => {
                        release(&store, &config).await;
                        return LeadEnd::TaskEnded;
                    }
                }
            }
            Ok(false) => tracing::debug!("another instance leads"),
            Err(e) => tracing::warn!(error = %e, "cannot ask for the lease; will retry"),
        }
        tokio::select! {
            () = tokio::time::sleep(config.poll_every) => {}
            _ = shutdown.changed() => {}
        }
    }
}

enum Held {
    Lost,
    Shutdown,
    TaskEnded,
}

/// True when shutdown was asked for (or can no longer be: the sender is gone).
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// One try_lead bounded by `deadline`: past it, the answer would come too late to trust.
async fn renew(store: &Store, config: &LeaseConfig, deadline: Instant) -> Result<bool, String> {
    match tokio::time::timeout_at(
        deadline,
        store.try_lead(&config.name, &config.holder, config.ttl),
    )
    .await
    {
        Ok(Ok(leads)) => Ok(leads),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("renewal timed out".to_owned()),
    }
}

/// Leads from `won_at` (the start of the winning try_lead) until the lease is lost, the task
/// ends, or shutdown.
async fn hold<F, Fut>(
    store: &Store,
    config: &LeaseConfig,
    shutdown: &mut watch::Receiver<bool>,
    make_task: &mut F,
    won_at: Instant,
) -> Held
where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut task = AbortOnDrop(tokio::spawn(make_task(stop_rx)));
    // The lease lasts at least `ttl` from the start of the last successful try_lead.
    let mut last_ok = won_at;
    let mut next_renewal = won_at + config.renew_every;
    loop {
        let give_up_at = last_ok + config.give_up_after();
        tokio::select! {
            joined = &mut task.0 => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "leader task failed");
                } else {
                    tracing::info!("leader task ended");
                }
                return Held::TaskEnded;
            }
            _ = shutdown.changed() => {
                if stopping(shutdown) {
                    tracing::info!("shutting down: stopping the leader task");
                    stop(task, &stop_tx, config.stop_grace).await;
                    return Held::Shutdown;
                }
            }
            () = tokio::time::sleep_until(give_up_at) => {
                tracing::warn!(
                    after_ms = u64::try_from(config.give_up_after().as_millis()).unwrap_or(u64::MAX),
                    "lease not renewed in time: stopping the leader task before another instance may take over"
                );
                stop(task, &stop_tx, config.stop_grace).await;
                return Held::Lost;
            }
            () = tokio::time::sleep_until(next_renewal) => {
                let asked = Instant::now();
                next_renewal = asked + config.renew_every;
                // The renewal runs while the task keeps running (it is a separate tokio task).
                let renewed = tokio::select! {
                    r = renew(store, config, give_up_at) => r,
                    _ = shutdown.changed() => {
                        if stopping(shutdown) {
                            tracing::info!("shutting down: stopping the leader task");
                            stop(task, &stop_tx, config.stop_grace).await;
                            return Held::Shutdown;
                        }
                        continue;
                    }
                };
                match renewed {
                    Ok(true) => last_ok = asked,
                    Ok(false) => {
                        tracing::warn!("lease taken by another instance: stopping the leader task");
                        task.0.abort();
                        let _ = (&mut task.0).await;
                        return Held::Lost;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the lease; will retry");
                        // Retry sooner than a full period: the give-up deadline is near.
                        next_renewal = (asked + config.renew_every / 2).min(give_up_at);
                    }
                }
            }
        }
    }
}

/// The leader task dies with its leadership: if [`lead`] itself is dropped (its caller was
/// cancelled), nothing renews the lease any more, so the task must not outlive it.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Asks the task to stop, waits up to `grace`, then aborts it.
async fn stop(mut task: AbortOnDrop, stop_tx: &watch::Sender<bool>, grace: Duration) {
    let _ = stop_tx.send(true);
    if tokio::time::timeout(grace, &mut task.0).await.is_err() {
        tracing::warn!("leader task did not stop in time: aborting it");
        task.0.abort();
        let _ = (&mut task.0).await;
    }
}

/// Gives the lease back so another instance need not wait for `ttl`; best effort.
async fn release(store: &Store, config: &LeaseConfig) {
    // Bounded: a shutdown must not wait on an unreachable database (the lease expires anyway).
    let released = tokio::time::timeout(
        Duration::from_secs(2),
        store.release_lead(&config.name, &config.holder),
    )
    .await;
    match released {
        Ok(Ok(true)) => tracing::info!("lease released"),
        Ok(Ok(false)) => tracing::debug!("lease was no longer ours"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot release the lease; it expires by itself"),
        Err(_) => tracing::warn!("releasing the lease timed out; it expires by itself"),
    }
}

/// Reloads the subscriptions' signing secrets from the store into the receiver's ring every
/// `period` until `shutdown`.
///
/// Only the leader creates or repairs subscriptions, but every instance receives deliveries: an
/// instance that loaded the secrets before the leader created a subscription would answer its
/// deliveries 401. Toggl retries those, and this loop makes the retry succeed.
pub async fn refresh_secrets(
    manager: crate::subscriptions::SubscriptionManager,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(period.max(MIN_PERIOD)) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = manager.load_secrets().await {
            tracing::warn!(error = %e, "cannot reload subscription secrets; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_ids_differ_within_one_process() {
        let a = holder_id();
        let b = holder_id();
        assert_ne!(a, b);
        assert!(a.contains(&format!(":{}:", std::process::id())), "{a}");
    }

    #[test]
    fn default_periods_leave_a_margin_before_expiry() {
        let c = LeaseConfig::new("x", "h", Duration::from_secs(30));
        assert_eq!(c.renew_every, Duration::from_secs(10));
        assert_eq!(c.give_up_after(), Duration::from_secs(20));
        assert!(c.give_up_after() + c.stop_grace < c.ttl);
    }
}
