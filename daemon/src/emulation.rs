//! Emulating a slower edge device on a fast machine (`[emulation]` in the edge configuration).
//!
//! Benchmarks of the adaptive loop must be made on a Pi-speed edge, but the development machines
//! are many times faster than a Raspberry Pi. With a factor `f > 1`, every piece of edge compute
//! (head layers, feature or JPEG encoding, the fallback tail) is followed by a busy wait so that its
//! CPU time counts `f ×` (time spent waiting for a CPU taken by other processes on this host counts
//! once, so a busy development machine is not multiplied into a much busier Pi; for the model's
//! layers only their warm time is multiplied, [`EdgeSpeed::finish_with_reference`]). The wait spins
//! on the core instead of sleeping: a sleep would end on the timer's next tick (about 1 ms late,
//! several times the work itself for a light model) and would hand the core to other processes,
//! so the next computation would start with cold caches.
//!
//! Named profiles (`pi4`, `pi3`) carry factors derived from published Raspberry Pi timings divided
//! by this machine's time for the same networks; the sources and the arithmetic are in
//! `docs/edge-profiles.md`. Every figure produced under emulation is emulated, and the daemon says
//! so in its logs and summaries.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// A named edge speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EdgeProfile {
    /// This machine as it is (no emulation).
    #[default]
    Native,
    /// Raspberry Pi 4 Model B (Cortex-A72, 1.5 GHz), one core.
    Pi4,
    /// Raspberry Pi 3 Model B+ (Cortex-A53, 1.4 GHz), one core.
    Pi3,
    /// Raspberry Pi Zero 2 W (Cortex-A53, 1.0 GHz), one core.
    PiZero2,
}

/// Factor of the `pi4` profile: ncnn's 1-thread AlexNet on a Pi 4 B at 1.5 GHz (213.76 ms) ÷ this
/// machine's ONNX Runtime 1-thread time for the same network (28.07 ms) — `docs/edge-profiles.md`.
pub const PI4_FACTOR: f64 = 7.6;
/// Factor of the `pi3` profile: the same for a Pi 3 B+ (270.55 ms ÷ 28.07 ms).
pub const PI3_FACTOR: f64 = 9.6;
/// Factor of the `pi-zero2` profile: the same for a Pi Zero 2 W (689.15 ms ÷ 28.07 ms).
pub const PI_ZERO2_FACTOR: f64 = 25.0;

impl EdgeProfile {
    /// Edge compute time on the emulated device ÷ time on this machine.
    pub fn factor(self) -> f64 {
        match self {
            EdgeProfile::Native => 1.0,
            EdgeProfile::Pi4 => PI4_FACTOR,
            EdgeProfile::Pi3 => PI3_FACTOR,
            EdgeProfile::PiZero2 => PI_ZERO2_FACTOR,
        }
    }

    /// The name used in configuration and reports.
    pub fn name(self) -> &'static str {
        match self {
            EdgeProfile::Native => "native",
            EdgeProfile::Pi4 => "pi4",
            EdgeProfile::Pi3 => "pi3",
            EdgeProfile::PiZero2 => "pi-zero2",
        }
    }
}

/// `[emulation]`: run this machine as a slower edge device (for benchmarks).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulationSection {
    /// `native` (default), `pi4`, `pi3` or `pi-zero2`.
    #[serde(default)]
    pub edge_profile: EdgeProfile,
    /// An explicit factor (≥ 1) instead of the profile's.
    #[serde(default)]
    pub edge_slowdown: Option<f64>,
}

impl EmulationSection {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(f) = self.edge_slowdown {
            if !f.is_finite() || f < 1.0 {
                return Err(format!("emulation.edge_slowdown must be ≥ 1 (got {f})"));
            }
        }
        Ok(())
    }

    /// The edge speed this section asks for.
    pub fn speed(&self) -> EdgeSpeed {
        match self.edge_slowdown {
            Some(f) => EdgeSpeed::custom(f),
            None => EdgeSpeed::profile(self.edge_profile),
        }
    }
}

/// How edge compute is stretched: a factor and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdgeSpeed {
    factor: f64,
    profile: Option<EdgeProfile>,
}

impl Default for EdgeSpeed {
    fn default() -> Self {
        EdgeSpeed::profile(EdgeProfile::Native)
    }
}

impl EdgeSpeed {
    /// A named profile.
    pub fn profile(profile: EdgeProfile) -> Self {
        EdgeSpeed {
            factor: profile.factor(),
            profile: Some(profile),
        }
    }

    /// An explicit factor (values below 1 or not finite count as 1).
    pub fn custom(factor: f64) -> Self {
        EdgeSpeed {
            factor: if factor.is_finite() {
                factor.max(1.0)
            } else {
                1.0
            },
            profile: None,
        }
    }

    /// Emulated time ÷ real time (1 = no emulation).
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// True when edge compute is stretched.
    pub fn is_emulated(&self) -> bool {
        self.factor > 1.0
    }

    /// Starts timing a piece of edge compute on this thread.
    pub fn start(&self) -> Stopwatch {
        Stopwatch {
            wall: Instant::now(),
            cpu: self.is_emulated().then(cpu_time::ThreadTime::now),
        }
    }

    /// Ends a piece of edge compute timed by `watch` (on the same thread): stretches it by spinning
    /// until its CPU time counts `factor ×` while time spent waiting for the CPU (other processes on
    /// this machine) counts once — the emulated device does the same work `factor ×` slower, and
    /// this host's contention is not multiplied. Returns the emulated wall duration. Blocking: call
    /// from a blocking context (the pipeline runs it inside `block_in_place`).
    pub fn finish(&self, watch: Stopwatch) -> Duration {
        self.finish_with_reference(watch, None)
    }

    /// [`finish`](Self::finish) for work with a known warm time (`reference`: the same layers run
    /// back to back on this host): the CPU time multiplied is at most the reference, and what
    /// the run took beyond it counts once. On a shared host a run after a stretch (or after any
    /// idle time) starts with caches other processes have used: AlexNet keep050's head took
    /// 282 µs back to back, 405 µs after a 2.6 ms spin and 497 µs after 5 ms on the development
    /// VM. Multiplying that made an emulated `pi4` 1.5–2.4× slower than its factor says and as
    /// noisy (the same fixed plan measured 2.9 and 4.5 ms in two runs a minute apart); the
    /// emulated device is `factor ×` this host's warm time, and this host's cache noise is not
    /// the device's.
    pub fn finish_with_reference(&self, watch: Stopwatch, reference: Option<Duration>) -> Duration {
        let wall = watch.wall.elapsed();
        let Some(cpu_start) = watch.cpu else {
            return wall;
        };
        let mut cpu = cpu_start.elapsed().min(wall);
        if let Some(reference) = reference {
            cpu = cpu.min(reference);
        }
        let target = wall + cpu.mul_f64(self.factor - 1.0);
        let deadline = watch.wall + target;
        while Instant::now() < deadline {
            std::hint::spin_loop();
        }
        target
    }
}

/// The start of a piece of edge compute (wall clock and this thread's CPU clock).
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    wall: Instant,
    cpu: Option<cpu_time::ThreadTime>,
}

impl fmt::Display for EdgeSpeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.profile {
            Some(EdgeProfile::Native) => f.write_str("native"),
            Some(p) => write!(f, "emulated {} (×{})", p.name(), self.factor),
            None if self.factor > 1.0 => write!(f, "emulated ×{}", self.factor),
            None => f.write_str("native"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_and_overrides() {
        let s: EmulationSection = toml::from_str("edge_profile = \"pi4\"").expect("parses");
        assert_eq!(s.speed().factor(), PI4_FACTOR);
        assert_eq!(
            s.speed().to_string(),
            format!("emulated pi4 (×{PI4_FACTOR})")
        );
        let s: EmulationSection =
            toml::from_str("edge_profile = \"pi3\"\nedge_slowdown = 3.5").expect("parses");
        assert_eq!(s.speed().factor(), 3.5);
        assert_eq!(s.speed().to_string(), "emulated ×3.5");
        assert!(!EmulationSection::default().speed().is_emulated());
        assert_eq!(EmulationSection::default().speed().to_string(), "native");
        let bad: EmulationSection = toml::from_str("edge_slowdown = 0.5").expect("parses");
        assert!(bad.validate().is_err());
        assert!(toml::from_str::<EmulationSection>("edge_profile = \"pi5\"").is_err());
        let z: EmulationSection = toml::from_str("edge_profile = \"pi-zero2\"").expect("parses");
        assert_eq!(z.speed().factor(), PI_ZERO2_FACTOR);
        assert!(toml::from_str::<EmulationSection>("slowdown = 2.0").is_err());
    }

    #[test]
    fn stretch_multiplies_cpu_time_not_waiting() {
        let speed = EdgeSpeed::custom(5.0);
        let started = Instant::now();
        let watch = speed.start();
        // 2 ms of work, then 20 ms of waiting (like a descheduled thread).
        while started.elapsed() < Duration::from_millis(2) {
            std::hint::spin_loop();
        }
        let spun = started.elapsed();
        std::thread::sleep(Duration::from_millis(20));
        let before = started.elapsed();
        let emulated = speed.finish(watch);
        let wall = started.elapsed();
        assert!(wall >= emulated, "{wall:?} < {emulated:?}");
        // Waiting counts once: what finish adds is 4 × the CPU time, which is at most the spin's
        // wall time (plus a little for the stopwatch), however long the sleep overslept on a busy
        // machine. Multiplied waiting would add 4 × ≥ 22 ms.
        // (`started` is read just before the stopwatch starts: allow that instant.)
        assert!(
            emulated + Duration::from_millis(1) >= before,
            "{emulated:?} < {before:?}"
        );
        let added = emulated.saturating_sub(before);
        let bound = (spun + Duration::from_millis(1)) * 4;
        assert!(
            added <= bound,
            "waiting was multiplied: added {added:?} > {bound:?}"
        );
        // Native: nothing added.
        let native = EdgeSpeed::default();
        let w = native.start();
        assert!(native.finish(w) < Duration::from_millis(5));
    }
}
