//! [`MergedCache`]: merged-range sessions built in the background and kept within a memory budget.
//!
//! A plan's range (`0..s` on the edge, `s..L` in the worker) changes when the optimizer re-plans,
//! and composing plus building a session takes milliseconds (AlexNet) to a second (VGG16). The
//! cache never makes a caller wait for that: [`MergedCache::checkout`] returns a ready runner or
//! `None` at once, and on a miss asks a builder thread for the range; the caller runs the chain
//! of per-layer sessions meanwhile (which also gives per-layer times for the profiler).
//!
//! Ready ranges are kept least-recently-used first out until their accounted bytes (the composed
//! model's size × sessions per range, a proxy for the sessions' weights) fit the budget. A range
//! whose sessions alone exceed the budget, or that fails to build, is remembered as failed and
//! served by the chain from then on (logged once).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{debug, warn};

use super::{MergedRunner, PoolGuard, RunnerOptions, RunnerPool};
use crate::package::ModelPackage;

/// How a [`MergedCache`] builds and bounds its sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedCacheConfig {
    /// Sessions per range (as many as callers that run the same range at once).
    pub sessions: usize,
    /// Accounted bytes all ready ranges may hold together.
    pub budget_bytes: usize,
    /// Options every session is built with.
    pub options: RunnerOptions,
}

/// Which range: (package name, variant, layers).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RangeKey {
    package: String,
    variant: String,
    range: Range<usize>,
}

impl RangeKey {
    fn new(package: &str, variant: &str, range: Range<usize>) -> RangeKey {
        RangeKey {
            package: package.to_owned(),
            variant: variant.to_owned(),
            range,
        }
    }
}

#[derive(Debug)]
enum Entry {
    Building,
    Ready {
        pool: RunnerPool<MergedRunner>,
        bytes: usize,
        last_used: u64,
        cost: Option<RangeCost>,
    },
    Failed,
}

/// What one run of a ready range costs, measured once when it was built (the shortest of
/// [`COST_RUNS`] runs on zeros, so that other work on the host counts as little as possible).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeCost {
    /// One frame.
    pub single: std::time::Duration,
    /// A batch of [`RangeCost::PROBE_BATCH`] frames.
    pub batched: std::time::Duration,
}

impl RangeCost {
    /// The batch size the batched run is measured with.
    pub const PROBE_BATCH: usize = 8;
}

/// Runs per batch size when a range's cost is measured.
const COST_RUNS: usize = 5;

#[derive(Debug, Default)]
struct CacheState {
    entries: HashMap<RangeKey, Entry>,
    bytes: usize,
    tick: u64,
    stats: MergedCacheStats,
}

/// Counters of a [`MergedCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergedCacheStats {
    /// Ranges built and kept.
    pub built: u64,
    /// Ranges dropped to make room for others.
    pub evicted: u64,
    /// Ranges that failed to build or could never fit (served by the chain).
    pub failed: u64,
    /// Checkouts that got a merged runner.
    pub hits: u64,
    /// Checkouts that did not (range building, failed, or all its sessions busy).
    pub misses: u64,
    /// Ranges ready now.
    pub ready: usize,
    /// Accounted bytes of the ready ranges.
    pub bytes: usize,
}

struct BuildRequest {
    key: RangeKey,
    package: Arc<ModelPackage>,
}

/// Merged-range sessions, built on demand by a background thread, bounded in memory.
#[derive(Debug)]
pub struct MergedCache {
    state: Arc<Mutex<CacheState>>,
    requests: Mutex<mpsc::Sender<BuildRequest>>,
}

impl MergedCache {
    /// An empty cache and its builder thread (`jmdc-merge`; it ends when the cache is dropped).
    pub fn new(config: MergedCacheConfig) -> std::io::Result<MergedCache> {
        let state = Arc::new(Mutex::new(CacheState::default()));
        let (tx, rx) = mpsc::channel::<BuildRequest>();
        let builder_state = Arc::clone(&state);
        std::thread::Builder::new()
            .name("jmdc-merge".into())
            .spawn(move || {
                while let Ok(request) = rx.recv() {
                    build_one(&builder_state, &config, request);
                }
            })?;
        Ok(MergedCache {
            state,
            requests: Mutex::new(tx),
        })
    }

    /// A merged runner for `range` of `variant`, or `None` at once: the range is being built (a
    /// build is started on the first miss), it failed, or all its sessions are busy.
    pub fn checkout(
        &self,
        package: &Arc<ModelPackage>,
        variant: &str,
        range: Range<usize>,
    ) -> Option<PoolGuard<MergedRunner>> {
        let key = RangeKey::new(package.name(), variant, range);
        let mut state = lock(&self.state);
        state.tick += 1;
        let tick = state.tick;
        let guard = match state.entries.get_mut(&key) {
            Some(Entry::Ready {
                pool, last_used, ..
            }) => {
                *last_used = tick;
                pool.try_checkout()
            }
            Some(Entry::Building | Entry::Failed) => None,
            None => {
                state.entries.insert(key.clone(), Entry::Building);
                self.request_build(key, package);
                None
            }
        };
        if guard.is_some() {
            state.stats.hits += 1;
        } else {
            state.stats.misses += 1;
        }
        guard
    }

    /// Starts building `range` of `variant` unless it is known already (ready, building or failed),
    /// without checking a runner out.
    pub fn prepare(&self, package: &Arc<ModelPackage>, variant: &str, range: Range<usize>) {
        let key = RangeKey::new(package.name(), variant, range);
        let mut state = lock(&self.state);
        if state.entries.contains_key(&key) {
            return;
        }
        state.entries.insert(key.clone(), Entry::Building);
        self.request_build(key, package);
    }

    fn request_build(&self, key: RangeKey, package: &Arc<ModelPackage>) {
        let request = BuildRequest {
            key,
            package: Arc::clone(package),
        };
        if lock(&self.requests).send(request).is_err() {
            warn!("merged-range builder thread has ended; ranges run as chains");
        }
    }

    /// Whether `range` of `variant` is ready now (tests and tools poll this after a miss).
    pub fn is_ready(&self, package: &str, variant: &str, range: Range<usize>) -> bool {
        self.with_entry(package, variant, range, |e| {
            matches!(e, Some(Entry::Ready { .. }))
        })
    }

    /// Whether `range` of `variant` is ready or has failed (nothing left to wait for).
    pub fn is_settled(&self, package: &str, variant: &str, range: Range<usize>) -> bool {
        self.with_entry(package, variant, range, |e| {
            matches!(e, Some(Entry::Ready { .. } | Entry::Failed))
        })
    }

    /// The measured cost of `range` of `variant`, when it is ready and was measured.
    pub fn cost(&self, package: &str, variant: &str, range: Range<usize>) -> Option<RangeCost> {
        self.with_entry(package, variant, range, |e| match e {
            Some(Entry::Ready { cost, .. }) => *cost,
            _ => None,
        })
    }

    fn with_entry<T>(
        &self,
        package: &str,
        variant: &str,
        range: Range<usize>,
        look: impl FnOnce(Option<&Entry>) -> T,
    ) -> T {
        look(
            lock(&self.state)
                .entries
                .get(&RangeKey::new(package, variant, range)),
        )
    }

    /// The counters now.
    pub fn stats(&self) -> MergedCacheStats {
        let state = lock(&self.state);
        let mut stats = state.stats;
        stats.ready = state
            .entries
            .values()
            .filter(|e| matches!(e, Entry::Ready { .. }))
            .count();
        stats.bytes = state.bytes;
        stats
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds one range's sessions (outside the lock) and makes room for them.
fn build_one(state: &Mutex<CacheState>, config: &MergedCacheConfig, request: BuildRequest) {
    let BuildRequest { key, package } = request;
    let built = RunnerPool::build(config.sessions.max(1), || {
        MergedRunner::new(&package, &key.variant, key.range.clone(), &config.options)
    });
    let pool = match built {
        Ok(pool) => pool,
        Err(e) => {
            warn!(
                package = %key.package, variant = %key.variant,
                range = ?key.range, error = %e,
                "cannot build a merged range; it runs as a chain of layer sessions"
            );
            let mut state = lock(state);
            state.stats.failed += 1;
            state.entries.insert(key, Entry::Failed);
            return;
        }
    };
    let fail = |why: &str, bytes: usize| {
        warn!(
            package = %key.package, variant = %key.variant, range = ?key.range,
            bytes, budget = config.budget_bytes,
            "merged range {why}; it runs as a chain of layer sessions"
        );
        let mut state = lock(state);
        state.stats.failed += 1;
        state.entries.insert(key.clone(), Entry::Failed);
    };
    let Some(mut runner) = pool.try_checkout() else {
        fail("has no session", 0);
        return;
    };
    let bytes = runner.model_bytes().saturating_mul(pool.capacity());
    if bytes > config.budget_bytes {
        fail("exceeds the cache budget on its own", bytes);
        return;
    }
    let cost = measure_cost(&mut runner);
    drop(runner);
    let mut state = lock(state);
    while state.bytes + bytes > config.budget_bytes {
        let oldest = state
            .entries
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Ready { last_used, .. } => Some((*last_used, k.clone())),
                _ => None,
            })
            .min_by_key(|(used, _)| *used);
        let Some((_, victim)) = oldest else { break };
        if let Some(Entry::Ready { bytes: freed, .. }) = state.entries.remove(&victim) {
            state.bytes -= freed;
            state.stats.evicted += 1;
            debug!(package = %victim.package, variant = %victim.variant, range = ?victim.range, "merged range evicted");
        }
    }
    state.tick += 1;
    let last_used = state.tick;
    state.bytes += bytes;
    state.stats.built += 1;
    debug!(package = %key.package, variant = %key.variant, range = ?key.range, bytes, ?cost, "merged range ready");
    state.entries.insert(
        key,
        Entry::Ready {
            pool,
            bytes,
            last_used,
            cost,
        },
    );
}

/// Times a range on zeros at batch 1 and [`RangeCost::PROBE_BATCH`] (after one warm-up run each);
/// `None` if a run fails (the range is still used, its batches just are not capped).
fn measure_cost(runner: &mut MergedRunner) -> Option<RangeCost> {
    let mut time = |batch: usize| -> Option<std::time::Duration> {
        let mut shape = vec![batch];
        shape.extend_from_slice(runner.input_shape());
        let zeros = ndarray::ArrayD::<f32>::zeros(shape);
        runner.run(zeros.view()).ok()?;
        (0..COST_RUNS)
            .map(|_| {
                let start = std::time::Instant::now();
                runner.run(zeros.view()).ok().map(|_| start.elapsed())
            })
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .min()
    };
    Some(RangeCost {
        single: time(1)?,
        batched: time(RangeCost::PROBE_BATCH)?,
    })
}
