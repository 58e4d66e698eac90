//! Leadership under a lease: one leader at a time, takeover after a holder dies, fast takeover
//! after a clean shutdown, a stolen lease stops the task. Each test runs on SQLite and, when
//! `TOGGL_CONNECT_TEST_POSTGRES_URL` is set, on PostgreSQL (two `Store`s on one schema stand for
//! two instances).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::RngCore;
use toggl_connect_store::{Store, StoreOptions, TempSchema};
use toggl_connect_triggers::leader::{LeadEnd, LeaseConfig, lead};
use tokio::sync::watch;
use tokio::time::Instant;

const PG_ENV: &str = "TOGGL_CONNECT_TEST_POSTGRES_URL";

/// A database several `Store`s (instances) can open.
struct Db {
    url: String,
    options: StoreOptions,
    label: &'static str,
    _dir: Option<tempfile::TempDir>,
    _schema: Option<TempSchema>,
}

impl Db {
    async fn open(&self) -> Store {
        Store::open(&self.url, self.options.clone())
            .await
            .expect("open store")
    }
}

fn dbs() -> Vec<Db> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut v = vec![Db {
        url: format!("sqlite://{}", dir.path().join("lead.db").display()),
        options: StoreOptions::default(),
        label: "sqlite",
        _dir: Some(dir),
        _schema: None,
    }];
    match std::env::var(PG_ENV) {
        Ok(url) if !url.is_empty() => {
            let schema = format!("tc_leader_{:08x}", rand::thread_rng().next_u32());
            v.push(Db {
                url: url.clone(),
                options: StoreOptions {
                    schema: Some(schema.clone()),
                    pool_size: 4,
                    ..StoreOptions::default()
                },
                label: "postgres",
                _dir: None,
                _schema: Some(TempSchema::new(url, schema)),
            });
        }
        _ => eprintln!("note: {PG_ENV} is not set; leader tests run on SQLite only"),
    }
    v
}

/// Watches leader tasks: who runs now, whether two ever ran at once, how they ended.
#[derive(Default)]
struct Watch {
    running: AtomicUsize,
    overlap: AtomicBool,
    current: Mutex<Option<String>>,
    starts: AtomicUsize,
    graceful_stops: AtomicUsize,
}

struct Running(Arc<Watch>);

impl Drop for Running {
    fn drop(&mut self) {
        *self.0.current.lock() = None;
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Watch {
    /// A task factory for `holder`: runs until told to stop.
    fn task(
        self: &Arc<Self>,
        holder: &str,
    ) -> impl FnMut(watch::Receiver<bool>) -> futures::future::BoxFuture<'static, ()> + use<> {
        let me = Arc::clone(self);
        let holder = holder.to_owned();
        move |mut stop| {
            let me = Arc::clone(&me);
            let holder = holder.clone();
            Box::pin(async move {
                if me.running.fetch_add(1, Ordering::SeqCst) != 0 {
                    me.overlap.store(true, Ordering::SeqCst);
                }
                *me.current.lock() = Some(holder);
                me.starts.fetch_add(1, Ordering::SeqCst);
                let _guard = Running(Arc::clone(&me));
                let _ = stop.wait_for(|s| *s).await;
                me.graceful_stops.fetch_add(1, Ordering::SeqCst);
            })
        }
    }

    fn leader(&self) -> Option<String> {
        self.current.lock().clone()
    }
}

async fn eventually<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn spawn_lead(
    store: Store,
    config: LeaseConfig,
    watch: &Arc<Watch>,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<LeadEnd>) {
    let (tx, rx) = watch::channel(false);
    let task = watch.task(&config.holder);
    (tx, tokio::spawn(lead(store, config, rx, task)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_after_the_ttl_and_never_overlaps() {
    for db in dbs() {
        let ttl = Duration::from_millis(900);
        let w = Arc::new(Watch::default());
        let (store_a, store_b) = (db.open().await, db.open().await);
        let cfg =
            |h: &str| LeaseConfig::new("repair", h, ttl).poll_every(Duration::from_millis(50));
        let (_sa, a) = spawn_lead(store_a, cfg("a"), &w);
        let (_sb, b) = spawn_lead(store_b, cfg("b"), &w);
        let first = eventually("a leader", Duration::from_secs(10), || w.leader()).await;
        // Both keep asking for a few renewal periods: still exactly one leader.
        tokio::time::sleep(ttl * 2).await;
        assert_eq!(
            w.leader().as_deref(),
            Some(first.as_str()),
            "{}: leadership moved without cause",
            db.label
        );
        assert_eq!(w.starts.load(Ordering::SeqCst), 1, "{}", db.label);

        // kill -9: the leader stops renewing and never releases.
        let (dead, survivor) = if first == "a" { (a, b) } else { (b, a) };
        dead.abort();
        let killed = Instant::now();
        let _ = dead.await;
        let second = eventually("a takeover", Duration::from_secs(10), || {
            w.leader().filter(|l| *l != first)
        })
        .await;
        let waited = killed.elapsed();
        // The dead holder renewed at most ttl/3 before dying, so its lease had at least
        // 2*ttl/3 left: a takeover sooner would mean two leaders.
        assert!(
            waited >= ttl / 2,
            "{}: takeover after only {waited:?}",
            db.label
        );
        assert!(
            !w.overlap.load(Ordering::SeqCst),
            "{}: two leaders at once",
            db.label
        );
        assert_ne!(second, first);
        survivor.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_task_gracefully_and_hands_over_at_once() {
    for db in dbs() {
        // A ttl far longer than the test's patience: only the release can explain a takeover.
        let ttl = Duration::from_secs(30);
        let w = Arc::new(Watch::default());
        let cfg =
            |h: &str| LeaseConfig::new("catchup", h, ttl).poll_every(Duration::from_millis(50));
        let (stop_a, a) = spawn_lead(db.open().await, cfg("a"), &w);
        eventually("a leads", Duration::from_secs(10), || {
            w.leader().filter(|l| l == "a")
        })
        .await;
        let (_stop_b, b) = spawn_lead(db.open().await, cfg("b"), &w);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(w.leader().as_deref(), Some("a"), "{}", db.label);

        let asked = Instant::now();
        stop_a.send(true).expect("a is running");
        assert_eq!(a.await.expect("lead returns"), LeadEnd::Shutdown);
        assert_eq!(
            w.graceful_stops.load(Ordering::SeqCst),
            1,
            "{}: the task was aborted, not stopped",
            db.label
        );
        eventually("b takes over", Duration::from_secs(5), || {
            w.leader().filter(|l| l == "b")
        })
        .await;
        assert!(asked.elapsed() < ttl / 2, "{}", db.label);
        assert!(!w.overlap.load(Ordering::SeqCst), "{}", db.label);
        b.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_taken_by_another_holder_stops_the_task_and_leadership_is_won_back() {
    for db in dbs() {
        let ttl = Duration::from_millis(600);
        let w = Arc::new(Watch::default());
        let store = db.open().await;
        let cfg = LeaseConfig::new("repair", "a", ttl).poll_every(Duration::from_millis(50));
        let (_stop, a) = spawn_lead(store.clone(), cfg, &w);
        eventually("a leads", Duration::from_secs(10), || w.leader()).await;

        // As if a's lease had expired and another instance had taken it.
        assert!(store.release_lead("repair", "a").await.expect("release"));
        assert!(
            store
                .try_lead("repair", "thief", Duration::from_secs(60))
                .await
                .expect("steal")
        );
        eventually("a's task stopped", Duration::from_secs(5), || {
            (w.running.load(Ordering::SeqCst) == 0).then_some(())
        })
        .await;
        assert!(
            !a.is_finished(),
            "{}: lead keeps competing after a loss",
            db.label
        );

        assert!(
            store
                .release_lead("repair", "thief")
                .await
                .expect("release")
        );
        eventually("a leads again", Duration::from_secs(5), || {
            (w.starts.load(Ordering::SeqCst) == 2 && w.leader().is_some()).then_some(())
        })
        .await;
        a.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_ends_gives_the_lease_back() {
    for db in dbs() {
        let store = db.open().await;
        let (_tx, rx) = watch::channel(false);
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let cfg = LeaseConfig::new("once", "a", Duration::from_secs(30));
        let end = tokio::time::timeout(
            Duration::from_secs(10),
            lead(store.clone(), cfg, rx, move |_stop| {
                let counted = Arc::clone(&counted);
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            }),
        )
        .await
        .expect("lead returns when its task ends");
        assert_eq!(end, LeadEnd::TaskEnded);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(
            store
                .try_lead("once", "b", Duration::from_secs(30))
                .await
                .expect("try"),
            "{}: the lease was not released",
            db.label
        );
    }
}

/// A TCP relay between the store and PostgreSQL that can be cut, as a lost network would.
struct Relay {
    addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (c, k) = (Arc::clone(&cut), Arc::clone(&conns));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                k.lock().push(task.abort_handle());
            }
        });
        Relay { addr, cut, conns }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().drain(..) {
            c.abort();
        }
    }

    fn mend(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// `host:port` of a `postgres://user@host:port/db` URL, and the URL with it replaced.
fn through(url: &str, relay: std::net::SocketAddr) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("url scheme");
    let (auth, after_auth) = rest.rsplit_once('@').map_or(("", rest), |(a, r)| (a, r));
    let end = after_auth.find(['/', '?']).unwrap_or(after_auth.len());
    let hostport = &after_auth[..end];
    let upstream = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5432")
    };
    let at = if auth.is_empty() {
        String::new()
    } else {
        format!("{auth}@")
    };
    (
        upstream,
        format!("{scheme}://{at}{relay}{}", &after_auth[end..]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_the_database_stops_its_task_before_the_lease_can_expire() {
    let Some(db) = dbs().into_iter().find(|d| d.label == "postgres") else {
        eprintln!("skipped: needs {PG_ENV}");
        return;
    };
    // Create the schema directly, then reach it only through the relay.
    drop(db.open().await);
    let url = std::env::var(PG_ENV).expect("pg url");
    let (upstream, _) = through(&url, std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let relay = Relay::start(upstream).await;
    let (_, relayed_url) = through(&url, relay.addr);
    let options = StoreOptions {
        connect_timeout: Duration::from_millis(300),
        statement_timeout: Duration::from_secs(2),
        ..db.options.clone()
    };
    let store = Store::open(&relayed_url, options)
        .await
        .expect("open through the relay");

    let ttl = Duration::from_millis(1500);
    let w = Arc::new(Watch::default());
    let cfg = LeaseConfig::new("repair", "a", ttl).poll_every(Duration::from_millis(50));
    let (_stop, a) = spawn_lead(store, cfg, &w);
    eventually("a leads", Duration::from_secs(10), || w.leader()).await;

    relay.cut();
    let cut_at = Instant::now();
    eventually("the task stops", ttl * 3, || {
        (w.running.load(Ordering::SeqCst) == 0).then_some(())
    })
    .await;
    let stopped_after = cut_at.elapsed();
    // The last renewal started at most `ttl / 3` before the cut, so the lease may expire (and
    // another instance lead) from `2 * ttl / 3` after the cut: the task must be gone by then
    // (plus the polling slack of this test).
    let bound = ttl * 2 / 3 + Duration::from_millis(100);
    assert!(
        stopped_after < bound,
        "task still ran {stopped_after:?} after the database was lost"
    );
    assert_eq!(
        w.graceful_stops.load(Ordering::SeqCst),
        1,
        "asked to stop, not aborted"
    );

    relay.mend();
    eventually(
        "a leads again once the database is back",
        Duration::from_secs(15),
        || (w.starts.load(Ordering::SeqCst) == 2 && w.leader().is_some()).then_some(()),
    )
    .await;
    a.abort();
}
