//! Dynamic batching: frames for the same (model, variant, split) from any device run together.
//!
//! Frames are queued per key; `threads` execution threads each take the batch that is due (see
//! [`policy`]) with the oldest frame first, run it through an [`Executor`] and go back for the
//! next. How many frames may be queued at once is bounded by the server's admission limit, whose
//! refusals stay the typed `Overloaded` reply.

pub mod policy;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use jmdc_core::protocol::{ErrorReply, InferRequest, InferResult};
use tokio::sync::oneshot;

use policy::{decide, BatchConfig, Decision, KeyLoad};

/// Frames that may share a batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct BatchKey {
    pub(crate) model: String,
    pub(crate) variant: String,
    pub(crate) split: u16,
}

/// The answer to one frame.
pub(crate) type Reply = Result<InferResult, ErrorReply>;

/// One queued frame.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) request: InferRequest,
    /// When the request was read off its stream.
    pub(crate) arrived: Instant,
    pub(crate) reply: oneshot::Sender<Reply>,
}

impl Job {
    /// Sends the answer (the requester may have gone: then it is dropped).
    pub(crate) fn answer(self, reply: Reply) {
        let _ = self.reply.send(reply);
    }
}

/// Runs one batch and answers every job in it.
pub(crate) trait Executor: Send + Sync + 'static {
    /// `batch_index` counts this key's batches from 0 (the executor may profile some of them).
    fn execute(&self, key: &BatchKey, jobs: Vec<Job>, batch_index: u64);

    /// The largest batch worth running for `key` (`None`: unknown, the configured maximum).
    /// Called with the queues locked: must be quick and must not submit.
    fn batch_cap(&self, key: &BatchKey) -> Option<usize>;
}

#[derive(Debug, Default)]
struct KeyQueue {
    jobs: VecDeque<Job>,
    load: KeyLoad,
    batches: u64,
}

#[derive(Debug, Default)]
struct QueueState {
    queues: HashMap<BatchKey, KeyQueue>,
    shutdown: bool,
    stats: BatchStats,
}

/// What the execution threads have taken so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Batches run.
    pub batches: u64,
    /// Frames in them.
    pub frames: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<QueueState>,
    wake: Condvar,
    config: BatchConfig,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The queues and their execution threads; dropping it runs what is queued, then stops them.
#[derive(Debug)]
pub(crate) struct Batcher {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Batcher {
    /// Starts `threads` (≥ 1) execution threads named `jmdc-exec-N`.
    pub(crate) fn start(
        config: BatchConfig,
        threads: usize,
        executor: Arc<dyn Executor>,
    ) -> std::io::Result<Batcher> {
        let shared = Arc::new(Shared {
            state: Mutex::new(QueueState::default()),
            wake: Condvar::new(),
            config,
        });
        let mut handles = Vec::new();
        for n in 0..threads.max(1) {
            let for_thread = Arc::clone(&shared);
            let executor = Arc::clone(&executor);
            let handle = std::thread::Builder::new()
                .name(format!("jmdc-exec-{n}"))
                .spawn(move || execution_loop(&for_thread, executor.as_ref()));
            match handle {
                Ok(h) => handles.push(h),
                Err(e) => {
                    stop(&shared, &mut handles);
                    return Err(e);
                }
            }
        }
        Ok(Batcher {
            shared,
            threads: handles,
        })
    }

    /// Batches and frames taken so far.
    pub(crate) fn stats(&self) -> BatchStats {
        self.shared.lock().stats
    }

    /// Queues a frame under `key`.
    pub(crate) fn submit(&self, key: BatchKey, job: Job) {
        let mut state = self.shared.lock();
        let queue = state.queues.entry(key).or_default();
        queue.load.arrived(job.arrived);
        queue.jobs.push_back(job);
        drop(state);
        self.shared.wake.notify_all();
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        stop(&self.shared, &mut self.threads);
    }
}

fn stop(shared: &Shared, threads: &mut Vec<JoinHandle<()>>) {
    shared.lock().shutdown = true;
    shared.wake.notify_all();
    for handle in threads.drain(..) {
        let _ = handle.join();
    }
}

/// What the queues call for now.
enum Next {
    Run(BatchKey, Vec<Job>, u64),
    WaitUntil(Instant),
    Idle,
    Stop,
}

fn next(
    state: &mut QueueState,
    config: &BatchConfig,
    now: Instant,
    cap_of: &dyn Fn(&BatchKey) -> Option<usize>,
) -> Next {
    let mut due: Vec<(&BatchKey, &KeyQueue)> = state
        .queues
        .iter()
        .filter(|(_, q)| !q.jobs.is_empty())
        .collect();
    if due.is_empty() {
        return if state.shutdown {
            Next::Stop
        } else {
            Next::Idle
        };
    }
    // Oldest frame first.
    due.sort_by_key(|(_, q)| q.jobs.front().map(|j| j.arrived));
    let mut earliest: Option<Instant> = None;
    let mut take: Option<(BatchKey, usize)> = None;
    for (key, queue) in due {
        let Some(oldest) = queue.jobs.front().map(|j| j.arrived) else {
            continue;
        };
        let config = BatchConfig {
            max_batch: cap_of(key).map_or(config.max_batch, |cap| cap.min(config.max_batch)),
            ..*config
        };
        // At shutdown nothing waits for company.
        let decision = if state.shutdown {
            Decision::Take(queue.jobs.len().min(config.max_batch.max(1)))
        } else {
            decide(&config, &queue.load, queue.jobs.len(), oldest, now)
        };
        match decision {
            Decision::Take(n) => {
                take = Some((key.clone(), n));
                break;
            }
            Decision::WaitUntil(t) => earliest = Some(earliest.map_or(t, |e| e.min(t))),
        }
    }
    match (take, earliest) {
        (Some((key, n)), _) => {
            let Some(queue) = state.queues.get_mut(&key) else {
                return Next::Idle;
            };
            let jobs: Vec<Job> = queue.jobs.drain(..n).collect();
            queue.load.record(jobs.len());
            let index = queue.batches;
            queue.batches += 1;
            state.stats.batches += 1;
            state.stats.frames += jobs.len() as u64;
            Next::Run(key, jobs, index)
        }
        (None, Some(t)) => Next::WaitUntil(t),
        (None, None) => Next::Idle,
    }
}

fn execution_loop(shared: &Shared, executor: &dyn Executor) {
    let mut state = shared.lock();
    loop {
        let cap_of = |key: &BatchKey| executor.batch_cap(key);
        match next(&mut state, &shared.config, Instant::now(), &cap_of) {
            Next::Run(key, jobs, index) => {
                drop(state);
                executor.execute(&key, jobs, index);
                state = shared.lock();
            }
            Next::WaitUntil(t) => {
                let wait = t.saturating_duration_since(Instant::now());
                state = shared
                    .wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            Next::Idle => {
                state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            Next::Stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jmdc_core::protocol::PayloadKind;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Answers every job with its batch size in `cloud_compute_us`, after `delay`.
    struct Recorder {
        delay: Duration,
        batches: Mutex<Vec<usize>>,
        running: AtomicUsize,
    }

    impl Recorder {
        /// Waits (at most 5 s) until the single thread is running a batch.
        fn wait_running(&self) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.running.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    impl Executor for Recorder {
        fn batch_cap(&self, key: &BatchKey) -> Option<usize> {
            // Split 3 stands for a range where batching does not pay.
            (key.split == 3).then_some(1)
        }

        fn execute(&self, _key: &BatchKey, jobs: Vec<Job>, _index: u64) {
            self.running.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            let n = jobs.len();
            self.batches.lock().expect("lock").push(n);
            for job in jobs {
                let frame_id = job.request.frame_id;
                job.answer(Ok(InferResult {
                    frame_id,
                    scores: vec![],
                    cloud_compute_us: n as u64,
                    decode_us: 0,
                    queue_us: 0,
                    layer_us: vec![],
                }));
            }
        }
    }

    fn job(id: u64) -> (Job, oneshot::Receiver<Reply>) {
        let (tx, rx) = oneshot::channel();
        let request = InferRequest {
            device_id: "d".into(),
            frame_id: id,
            model: "m".into(),
            variant: "v".into(),
            split: 1,
            payload_kind: PayloadKind::Feature,
            payload: vec![],
        };
        (
            Job {
                request,
                arrived: Instant::now(),
                reply: tx,
            },
            rx,
        )
    }

    fn key(split: u16) -> BatchKey {
        BatchKey {
            model: "m".into(),
            variant: "v".into(),
            split,
        }
    }

    #[test]
    fn frames_queued_while_busy_run_as_one_batch_and_all_are_answered() {
        let recorder = Arc::new(Recorder {
            delay: Duration::from_millis(30),
            batches: Mutex::new(vec![]),
            running: AtomicUsize::new(0),
        });
        let batcher = Batcher::start(BatchConfig::default(), 1, recorder.clone()).expect("threads");
        let mut replies = vec![];
        let (first, rx) = job(0);
        batcher.submit(key(1), first);
        replies.push(rx);
        // The single thread is busy with frame 0 while ten more arrive.
        recorder.wait_running();
        for id in 1..=10 {
            let (j, rx) = job(id);
            batcher.submit(key(1), j);
            replies.push(rx);
        }
        drop(batcher); // runs what is queued, then joins
        let answered: Vec<u64> = replies
            .into_iter()
            .map(|mut rx| rx.try_recv().expect("answered").expect("ok").frame_id)
            .collect();
        assert_eq!(answered, (0..=10).collect::<Vec<_>>());
        assert_eq!(*recorder.batches.lock().expect("lock"), vec![1, 10]);
    }

    #[test]
    fn keys_never_share_a_batch_and_max_batch_holds() {
        let recorder = Arc::new(Recorder {
            delay: Duration::from_millis(20),
            batches: Mutex::new(vec![]),
            running: AtomicUsize::new(0),
        });
        let config = BatchConfig {
            max_batch: 4,
            max_wait: Duration::ZERO,
        };
        let batcher = Batcher::start(config, 1, recorder.clone()).expect("threads");
        let mut replies = vec![];
        let (first, rx) = job(100);
        batcher.submit(key(9), first);
        replies.push(rx);
        recorder.wait_running();
        for id in 0..6 {
            for split in [1, 2] {
                let (j, rx) = job(id);
                batcher.submit(key(split), j);
                replies.push(rx);
            }
        }
        for id in 0..3 {
            let (j, rx) = job(id);
            batcher.submit(key(3), j);
            replies.push(rx);
        }
        drop(batcher);
        for mut rx in replies {
            assert!(rx.try_recv().expect("answered").is_ok());
        }
        let mut sizes = recorder.batches.lock().expect("lock").clone();
        sizes.sort_unstable();
        // 1 (split 9) + split 1: 4 + 2 + split 2: 4 + 2 + split 3 (capped at 1): 1 × 3.
        assert_eq!(sizes, vec![1, 1, 1, 1, 2, 2, 4, 4]);
    }
}
