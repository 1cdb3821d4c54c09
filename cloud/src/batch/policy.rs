//! When to run a batch: the bounded, load-adaptive wait (pure; time is passed in).
//!
//! A batch of one key runs at once when it is full or when it holds as many frames as this key's
//! recent batches did (the mean batch size, an EWMA). Only when fewer are queued than that, and
//! the key's recent arrival rate says the missing frames will come in time, does it wait, and
//! never past `max_wait` after its oldest frame arrived. Under light load batches hold one frame,
//! the mean is 1 and no frame ever waits; under load the queue fills while the sessions are busy,
//! batches grow and a short wait gathers about as many frames as usual. A closed-loop client
//! whose next frame waits for this batch's answer arrives in a burst, not at a rate, so its
//! batches are not held back waiting for it.

use std::time::{Duration, Instant};

/// How the worker batches frames of one (model, variant, split).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Frames per batch at most (1 = no batching).
    pub max_batch: usize,
    /// The longest a frame waits for others to join its batch (zero = never waits).
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch: 32,
            max_wait: Duration::from_micros(200),
        }
    }
}

/// Smoothing of the mean batch size (weight of the newest batch).
const ALPHA: f64 = 0.2;

/// Recent batch sizes and arrivals of one key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct KeyLoad {
    mean_batch: f64,
    /// Mean time between arrivals, seconds (`None` before the second frame).
    mean_gap_s: Option<f64>,
    last_arrival: Option<Instant>,
}

impl Default for KeyLoad {
    fn default() -> Self {
        KeyLoad {
            mean_batch: 1.0,
            mean_gap_s: None,
            last_arrival: None,
        }
    }
}

impl KeyLoad {
    /// Records a batch of `size` frames.
    pub(crate) fn record(&mut self, size: usize) {
        self.mean_batch += ALPHA * (size as f64 - self.mean_batch);
    }

    /// Records a frame's arrival.
    pub(crate) fn arrived(&mut self, at: Instant) {
        if let Some(last) = self.last_arrival {
            let gap = at.saturating_duration_since(last).as_secs_f64();
            self.mean_gap_s = Some(match self.mean_gap_s {
                Some(mean) => mean + ALPHA * (gap - mean),
                None => gap,
            });
        }
        self.last_arrival = Some(self.last_arrival.map_or(at, |l| l.max(at)));
    }

    /// Frames expected to arrive within `window` at the recent rate.
    fn expected_within(&self, window: Duration) -> f64 {
        match self.mean_gap_s {
            Some(gap) if gap > 0.0 => window.as_secs_f64() / gap,
            Some(_) => f64::INFINITY,
            None => 0.0,
        }
    }

    /// The mean batch size lately.
    pub(crate) fn mean_batch(&self) -> f64 {
        self.mean_batch
    }
}

/// The largest batch worth forming for a range that runs one frame in `single` and `probe` frames
/// in `batched`: a run costs about `fixed + n × per_frame`; batching pays while the fixed part is
/// a noticeable share of a frame's cost, so the batch is capped where it falls to 5 %
/// (`n ≥ 19 × fixed ÷ per_frame`), at least 2 while batching pays at all. A range whose batched
/// frames cost ≥ 95 % of single ones (convolutions on a CPU) is not batched: batching would only
/// hold each frame until its batch's end.
pub(crate) fn useful_batch(
    single: Duration,
    batched: Duration,
    probe: usize,
    max_batch: usize,
) -> usize {
    let max_batch = max_batch.max(1);
    let s = single.as_secs_f64();
    let b = batched.as_secs_f64();
    if probe < 2 || !(s > 0.0 && b > 0.0) {
        return max_batch;
    }
    let n = probe as f64;
    if b / n >= 0.95 * s {
        return 1;
    }
    let per_frame = (b - s) / (n - 1.0);
    let fixed = s - per_frame;
    if per_frame <= 0.0 {
        return max_batch;
    }
    let cap = (19.0 * fixed / per_frame).ceil();
    if cap >= max_batch as f64 {
        max_batch
    } else {
        (cap as usize).clamp(2.min(max_batch), max_batch)
    }
}

/// What a free execution thread does with one key's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Run this many frames (≥ 1) now.
    Take(usize),
    /// Wait for more frames until this instant at the latest.
    WaitUntil(Instant),
}

/// The decision for a queue of `queued` (≥ 1) frames whose oldest arrived at `oldest`.
pub(crate) fn decide(
    config: &BatchConfig,
    load: &KeyLoad,
    queued: usize,
    oldest: Instant,
    now: Instant,
) -> Decision {
    let full = config.max_batch.max(1);
    if queued >= full {
        return Decision::Take(full);
    }
    // The size this key's batches have had lately, rounded down: waiting for a frame that has
    // come only sometimes is waiting in vain.
    let usual = (load.mean_batch().floor() as usize).clamp(1, full);
    let deadline = oldest + config.max_wait;
    let missing = (usual - queued.min(usual)) as f64;
    let coming = load.expected_within(deadline.saturating_duration_since(now));
    if queued >= usual || config.max_wait.is_zero() || now >= deadline || coming < missing {
        Decision::Take(queued)
    } else {
        Decision::WaitUntil(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BatchConfig {
        BatchConfig {
            max_batch: 8,
            max_wait: Duration::from_millis(1),
        }
    }

    /// Batches of `size` lately, frames arriving every `gap_us` µs.
    fn loaded_at(size: usize, gap_us: u64) -> KeyLoad {
        let mut load = KeyLoad::default();
        let t = Instant::now();
        for i in 0..50 {
            load.record(size);
            load.arrived(t + Duration::from_micros(gap_us * i));
        }
        load
    }

    fn loaded(size: usize) -> KeyLoad {
        loaded_at(size, 50)
    }

    #[test]
    fn light_load_never_waits() {
        let t = Instant::now();
        assert_eq!(
            decide(&config(), &KeyLoad::default(), 1, t, t),
            Decision::Take(1)
        );
        assert_eq!(decide(&config(), &loaded(1), 1, t, t), Decision::Take(1));
    }

    #[test]
    fn under_load_waits_for_the_usual_batch_but_not_past_the_bound() {
        let t = Instant::now() + Duration::from_secs(1);
        let load = loaded(6);
        assert!((load.mean_batch() - 6.0).abs() < 0.01);
        let deadline = t + Duration::from_millis(1);
        assert_eq!(
            decide(&config(), &load, 2, t, t),
            Decision::WaitUntil(deadline)
        );
        assert_eq!(
            decide(&config(), &load, 2, t, t + Duration::from_micros(500)),
            Decision::WaitUntil(deadline)
        );
        assert_eq!(decide(&config(), &load, 2, t, deadline), Decision::Take(2));
        assert_eq!(decide(&config(), &load, 6, t, t), Decision::Take(6));
    }

    #[test]
    fn a_full_queue_takes_max_batch() {
        let t = Instant::now();
        assert_eq!(
            decide(&config(), &KeyLoad::default(), 20, t, t),
            Decision::Take(8)
        );
        let unbatched = BatchConfig {
            max_batch: 1,
            ..config()
        };
        assert_eq!(decide(&unbatched, &loaded(6), 3, t, t), Decision::Take(1));
    }

    #[test]
    fn zero_wait_never_waits() {
        let t = Instant::now();
        let none = BatchConfig {
            max_wait: Duration::ZERO,
            ..config()
        };
        assert_eq!(decide(&none, &loaded(6), 2, t, t), Decision::Take(2));
    }

    #[test]
    fn no_wait_when_the_missing_frames_would_not_come_in_time() {
        let t = Instant::now() + Duration::from_secs(1);
        // Batches of 6, but a frame only every 400 µs: four more will not come within 1 ms.
        let sparse = loaded_at(6, 400);
        assert_eq!(decide(&config(), &sparse, 2, t, t), Decision::Take(2));
        // Every 100 µs they will.
        assert!(matches!(
            decide(&config(), &loaded_at(6, 100), 2, t, t),
            Decision::WaitUntil(_)
        ));
    }

    #[test]
    fn batches_are_capped_where_batching_stops_paying() {
        let us = Duration::from_micros;
        // Small fully connected tail (measured: 71.6 µs alone, 415 µs for 8): fixed ≈ 22 µs,
        // per frame ≈ 49 µs, so about 9 frames bring the fixed part to 5 %.
        assert_eq!(useful_batch(us(72), us(415), 8, 32), 9);
        // Convolutions: 8 frames cost more than 8 single runs: no batching.
        assert_eq!(useful_batch(us(706), us(6040), 8, 32), 1);
        // Almost nothing gained (< 5 %): no batching.
        assert_eq!(useful_batch(us(100), us(770), 8, 32), 1);
        // Dominated by the fixed part: the configured maximum.
        assert_eq!(useful_batch(us(100), us(150), 8, 32), 32);
        assert_eq!(useful_batch(us(100), us(150), 8, 4), 4);
        // Little fixed cost but some: at least 2.
        assert_eq!(useful_batch(us(100), us(740), 8, 32), 2);
        // Unmeasurable: the configured maximum.
        assert_eq!(useful_batch(Duration::ZERO, us(150), 8, 32), 32);
    }

    #[test]
    fn the_usual_size_follows_load_down() {
        let mut load = loaded(8);
        for _ in 0..20 {
            load.record(1);
        }
        let t = Instant::now();
        assert_eq!(decide(&config(), &load, 1, t, t), Decision::Take(1));
    }
}
