//! Model-based test: random sequences of store operations against a simple in-memory model of
//! the job queue and the dedupe index; every observable result must match.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::json;
use toggl_connect_store::{JobFilter, JobStatus, NewJob, Store, StoreError};

const LEASE: Duration = Duration::from_secs(3600);
/// Jobs' `not_before` in the past, increasing with the step number, so ordering is exact.
const PAST: i64 = 1_600_000_000;
/// A `not_before` that never arrives during the test.
const FUTURE: i64 = 4_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Insert {
        key: u8,
        jobs: u8,
        priority: i32,
    },
    Claim {
        worker: u8,
        limit: u32,
    },
    Complete {
        job: usize,
        worker: u8,
    },
    RetryLater {
        job: usize,
        worker: u8,
        future: bool,
    },
    DeadLetter {
        job: usize,
        worker: u8,
    },
    RetryDead {
        job: usize,
    },
    Cancel {
        job: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..6, 0u8..3, 0i32..3).prop_map(|(key, jobs, priority)| Op::Insert { key, jobs, priority }),
        3 => (0u8..3, 1u32..4).prop_map(|(worker, limit)| Op::Claim { worker, limit }),
        2 => (any::<usize>(), 0u8..3).prop_map(|(job, worker)| Op::Complete { job, worker }),
        1 => (any::<usize>(), 0u8..3, any::<bool>()).prop_map(|(job, worker, future)| Op::RetryLater { job, worker, future }),
        1 => (any::<usize>(), 0u8..3).prop_map(|(job, worker)| Op::DeadLetter { job, worker }),
        1 => any::<usize>().prop_map(|job| Op::RetryDead { job }),
        1 => any::<usize>().prop_map(|job| Op::Cancel { job }),
    ]
}

/// Ordering key of `not_before`: (0, secs) for explicit past instants, (1, step) for "now"
/// (always after every past instant, in step order), (2, 0) for the far future.
type NotBefore = (u8, i64);

#[derive(Debug, Clone)]
struct MJob {
    id: i64,
    status: JobStatus,
    owner: Option<u8>,
    attempts: u32,
    priority: i32,
    not_before: NotBefore,
}

#[derive(Debug, Default)]
struct Model {
    events: HashMap<u8, i64>,
    jobs: Vec<MJob>,
}

fn ts(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("valid")
}

fn worker_name(w: u8) -> String {
    format!("w{w}")
}

/// The model's answer to a lease-checked operation: Ok or LeaseLost.
fn leased(job: &MJob, worker: u8) -> bool {
    job.status == JobStatus::Running && job.owner == Some(worker)
}

#[derive(Debug, PartialEq)]
enum Answer {
    Ok,
    LeaseLost,
    WrongState,
}

fn answer(r: Result<(), StoreError>) -> Answer {
    match r {
        Ok(()) => Answer::Ok,
        Err(StoreError::LeaseLost { .. }) => Answer::LeaseLost,
        Err(StoreError::WrongState { .. }) => Answer::WrongState,
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

async fn run(store: Store, ops: Vec<Op>) {
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        let step = step as i64;
        match op {
            Op::Insert {
                key,
                jobs,
                priority,
            } => {
                let mut e = common::event(i64::from(key) + 1);
                e.jobs = (0..jobs)
                    .map(|i| NewJob {
                        rule: format!("r{i}"),
                        step_index: 0,
                        step_name: "s".into(),
                        payload: json!({"key": key}),
                        not_before: Some(ts(PAST + step)),
                        priority,
                    })
                    .collect();
                let out = store.insert_event(e).await.expect("insert");
                match model.events.get(&key) {
                    Some(&id) => {
                        assert!(out.duplicate);
                        assert_eq!(out.id, id);
                        assert!(out.job_ids.is_empty());
                    }
                    None => {
                        assert!(!out.duplicate);
                        assert_eq!(out.job_ids.len(), usize::from(jobs));
                        model.events.insert(key, out.id);
                        for id in out.job_ids {
                            assert!(model.jobs.iter().all(|j| j.id < id), "ids increase");
                            model.jobs.push(MJob {
                                id,
                                status: JobStatus::Pending,
                                owner: None,
                                attempts: 0,
                                priority,
                                not_before: (0, PAST + step),
                            });
                        }
                    }
                }
            }
            Op::Claim { worker, limit } => {
                let claimed = store
                    .claim_jobs(&worker_name(worker), limit, LEASE)
                    .await
                    .expect("claim");
                let mut runnable: Vec<&mut MJob> = model
                    .jobs
                    .iter_mut()
                    .filter(|j| j.status == JobStatus::Pending && j.not_before.0 < 2)
                    .collect();
                runnable.sort_by_key(|j| (j.priority, j.not_before, j.id));
                let mut expected = Vec::new();
                for j in runnable.into_iter().take(limit as usize) {
                    j.status = JobStatus::Running;
                    j.owner = Some(worker);
                    j.attempts += 1;
                    expected.push((j.id, j.attempts));
                }
                let got: Vec<(i64, u32)> = claimed.iter().map(|j| (j.id, j.attempts)).collect();
                assert_eq!(got, expected, "claim order and attempts");
            }
            Op::Complete { job, worker } => {
                let Some(j) = pick(&mut model, job) else {
                    continue;
                };
                let expect = if leased(j, worker) {
                    j.status = JobStatus::Succeeded;
                    Answer::Ok
                } else {
                    Answer::LeaseLost
                };
                let got = store
                    .complete_job(j.id, &worker_name(worker), json!({"step": step}))
                    .await;
                assert_eq!(answer(got), expect);
            }
            Op::RetryLater {
                job,
                worker,
                future,
            } => {
                let Some(j) = pick(&mut model, job) else {
                    continue;
                };
                let at = if future { FUTURE } else { PAST + step };
                let expect = if leased(j, worker) {
                    j.status = JobStatus::Pending;
                    j.not_before = if future { (2, 0) } else { (0, at) };
                    Answer::Ok
                } else {
                    Answer::LeaseLost
                };
                let got = store
                    .retry_job_later(j.id, &worker_name(worker), ts(at), "retry")
                    .await;
                assert_eq!(answer(got), expect);
            }
            Op::DeadLetter { job, worker } => {
                let Some(j) = pick(&mut model, job) else {
                    continue;
                };
                let expect = if leased(j, worker) {
                    j.status = JobStatus::Dead;
                    Answer::Ok
                } else {
                    Answer::LeaseLost
                };
                let got = store.dead_letter(j.id, &worker_name(worker), "dead").await;
                assert_eq!(answer(got), expect);
            }
            Op::RetryDead { job } => {
                let Some(j) = pick(&mut model, job) else {
                    continue;
                };
                let expect = if j.status == JobStatus::Dead {
                    j.status = JobStatus::Pending;
                    j.not_before = (1, step);
                    Answer::Ok
                } else {
                    Answer::WrongState
                };
                assert_eq!(answer(store.retry_dead(j.id).await), expect);
            }
            Op::Cancel { job } => {
                let Some(j) = pick(&mut model, job) else {
                    continue;
                };
                let expect = if matches!(j.status, JobStatus::Succeeded | JobStatus::Cancelled) {
                    Answer::WrongState
                } else {
                    j.status = JobStatus::Cancelled;
                    Answer::Ok
                };
                assert_eq!(answer(store.cancel_job(j.id).await), expect);
            }
        }
        let stored = store
            .list_jobs(JobFilter {
                limit: Some(10_000),
                ..JobFilter::default()
            })
            .await
            .expect("list");
        let got: Vec<_> = stored
            .iter()
            .map(|j| {
                let owner = (j.status == JobStatus::Running)
                    .then(|| j.lease_owner.clone())
                    .flatten();
                (j.id, j.status, j.attempts, owner)
            })
            .collect();
        let want: Vec<_> = model
            .jobs
            .iter()
            .map(|j| {
                let owner = (j.status == JobStatus::Running)
                    .then(|| j.owner.map(worker_name))
                    .flatten();
                (j.id, j.status, j.attempts, owner)
            })
            .collect();
        assert_eq!(got, want, "job table after step {step}");
    }
    let events = store
        .list_events(Default::default())
        .await
        .expect("list events");
    assert_eq!(events.len(), model.events.len());
}

fn pick(model: &mut Model, index: usize) -> Option<&mut MJob> {
    let n = model.jobs.len();
    if n == 0 {
        None
    } else {
        model.jobs.get_mut(index % n)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let store = Store::open("sqlite::memory:", Default::default()).await.expect("open");
            run(store, ops).await;
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// The same model over PostgreSQL, when `TOGGL_CONNECT_TEST_POSTGRES_URL` is set.
    #[test]
    fn postgres_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            if let Some(t) = common::postgres().await {
                run(t.store.clone(), ops).await;
            }
        });
    }
}
