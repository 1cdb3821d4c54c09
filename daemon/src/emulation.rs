//! Emulating a slower edge device on a fast machine (`[emulation]` in the edge configuration).
//!
//! Benchmarks of the adaptive loop must be made on a Pi-speed edge, but the development machines
//! are many times faster than a Raspberry Pi. With a factor `f > 1`, every piece of edge compute
//! (head layers, feature or JPEG encoding, the fallback tail) is followed by a busy wait so that it
//! takes `f ×` its real time. The wait spins on the core instead of sleeping: a sleep would end on
//! the timer's next tick (about 1 ms late, several times the work itself for a light model) and
//! would hand the core to other processes, so the next computation would start with cold caches.
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
    /// Raspberry Pi 3 B / Zero 2 W class (Cortex-A53), one core.
    Pi3,
}

/// Factor of the `pi4` profile (`docs/edge-profiles.md`).
pub const PI4_FACTOR: f64 = 8.0;
/// Factor of the `pi3` profile (`docs/edge-profiles.md`).
pub const PI3_FACTOR: f64 = 25.0;

impl EdgeProfile {
    /// Edge compute time on the emulated device ÷ time on this machine.
    pub fn factor(self) -> f64 {
        match self {
            EdgeProfile::Native => 1.0,
            EdgeProfile::Pi4 => PI4_FACTOR,
            EdgeProfile::Pi3 => PI3_FACTOR,
        }
    }

    /// The name used in configuration and reports.
    pub fn name(self) -> &'static str {
        match self {
            EdgeProfile::Native => "native",
            EdgeProfile::Pi4 => "pi4",
            EdgeProfile::Pi3 => "pi3",
        }
    }
}

/// `[emulation]`: run this machine as a slower edge device (for benchmarks).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulationSection {
    /// `native` (default), `pi4` or `pi3`.
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

    /// Stretches work that started at `started` and has just finished to `factor ×` its real
    /// duration, by spinning. Returns the emulated duration. Blocking: call from a blocking context
    /// (the pipeline runs it inside `block_in_place`).
    pub fn stretch_from(&self, started: Instant) -> Duration {
        let spent = started.elapsed();
        if self.factor <= 1.0 {
            return spent;
        }
        let target = spent.mul_f64(self.factor);
        let deadline = started + target;
        while Instant::now() < deadline {
            std::hint::spin_loop();
        }
        target
    }
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
        assert!(toml::from_str::<EmulationSection>("slowdown = 2.0").is_err());
    }

    #[test]
    fn stretch_spins_to_the_factor() {
        let speed = EdgeSpeed::custom(5.0);
        let started = Instant::now();
        while started.elapsed() < Duration::from_micros(200) {
            std::hint::spin_loop();
        }
        let emulated = speed.stretch_from(started);
        let wall = started.elapsed();
        // The wait never ends early; it may end late on a busy machine, so only the lower bound
        // is exact.
        assert!(emulated >= Duration::from_micros(1000), "{emulated:?}");
        assert!(wall >= emulated, "{wall:?} < {emulated:?}");
    }
}
