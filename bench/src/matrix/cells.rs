//! The benchmark matrix: cells (bandwidth × RTT × edge profile × CPU load) and the named presets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::BenchError;

/// Every bandwidth of the full matrix, Mbit/s.
pub const BANDWIDTHS_MBIT: [f64; 8] = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0];
/// Every round-trip time of the full matrix, ms.
pub const RTTS_MS: [f64; 3] = [0.0, 20.0, 60.0];

/// Edge speed: this machine, or an emulated Raspberry Pi (`[emulation] edge_profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// This machine's own speed (edge timings not stretched).
    Native,
    /// An emulated Raspberry Pi 4 B (the edge's `pi4` profile).
    Pi4,
    /// An emulated Raspberry Pi 3 B+ (the edge's `pi3` profile).
    Pi3,
}

impl Profile {
    /// Every profile, fastest first.
    pub const ALL: [Profile; 3] = [Profile::Native, Profile::Pi4, Profile::Pi3];

    /// The name the edge configuration uses.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Native => "native",
            Profile::Pi4 => "pi4",
            Profile::Pi3 => "pi3",
        }
    }

    /// True when edge timings are stretched to look like a slower device.
    pub fn emulated(self) -> bool {
        self != Profile::Native
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                BenchError::Invalid(format!("profile `{s}`: expected native, pi4 or pi3"))
            })
    }
}

/// Competing CPU load on the machine during a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Load {
    /// Nothing but the benchmark.
    Idle,
    /// One busy-looping process next to the benchmark.
    Busy,
}

impl Load {
    /// The name used in cell ids, `results.csv` and the command line.
    pub fn name(self) -> &'static str {
        match self {
            Load::Idle => "idle",
            Load::Busy => "busy",
        }
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Load {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "idle" => Ok(Load::Idle),
            "busy" => Ok(Load::Busy),
            _ => Err(BenchError::Invalid(format!(
                "load `{s}`: expected idle or busy"
            ))),
        }
    }
}

/// One point of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Edge speed.
    pub profile: Profile,
    /// Competing CPU load.
    pub load: Load,
    /// Bottleneck rate of the emulated link, both directions, Mbit/s.
    pub bandwidth_mbit: f64,
    /// Round-trip time added by the emulated link (half each way), ms.
    pub rtt_ms: f64,
}

impl Cell {
    /// A cell from its four coordinates.
    pub fn new(profile: Profile, load: Load, bandwidth_mbit: f64, rtt_ms: f64) -> Self {
        Self {
            profile,
            load,
            bandwidth_mbit,
            rtt_ms,
        }
    }

    /// A stable name, e.g. `pi4-idle-rtt20-5mbit`.
    pub fn id(&self) -> String {
        format!(
            "{}-{}-rtt{}-{}mbit",
            self.profile,
            self.load,
            num(self.rtt_ms),
            num(self.bandwidth_mbit)
        )
    }

    /// The (profile, load, RTT) group a latency-vs-bandwidth figure is drawn for.
    pub fn group(&self) -> Group {
        Group {
            profile: self.profile,
            load: self.load,
            rtt_ms: self.rtt_ms,
        }
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} RTT {} ms {} Mbit/s",
            self.profile,
            self.load,
            num(self.rtt_ms),
            num(self.bandwidth_mbit)
        )
    }
}

/// Cells that share a profile, a load and an RTT (one line per strategy over bandwidth).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Group {
    /// Edge speed of the group's cells.
    pub profile: Profile,
    /// Competing CPU load of the group's cells.
    pub load: Load,
    /// Round-trip time of the group's cells, ms.
    pub rtt_ms: f64,
}

impl Group {
    /// File-name part, e.g. `pi4-idle-rtt20`.
    pub fn id(&self) -> String {
        format!("{}-{}-rtt{}", self.profile, self.load, num(self.rtt_ms))
    }
}

/// A number without a useless fraction: 0.5 → `0.5`, 20 → `20`.
pub fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// Named matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// A few cells with different optima, for a look in a few minutes.
    Quick,
    /// The whole matrix (about an hour on the 2-core development machine).
    Full,
    /// The CI check: three cells, see [`preset_cells`].
    Ci,
    /// The cartesian product of the given bandwidths, RTTs, profiles and loads.
    Grid,
}

impl FromStr for Preset {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "quick" => Ok(Preset::Quick),
            "full" => Ok(Preset::Full),
            "ci" => Ok(Preset::Ci),
            "grid" => Ok(Preset::Grid),
            _ => Err(BenchError::Invalid(format!(
                "cells `{s}`: expected quick, full, ci or grid"
            ))),
        }
    }
}

/// Optional restrictions (for presets) or axes (for [`Preset::Grid`]).
#[derive(Debug, Clone, Default)]
pub struct Axes {
    /// Bandwidths to keep (presets) or run (grid), Mbit/s; `None`: no restriction (grid: every
    /// bandwidth of the full matrix).
    pub bandwidths_mbit: Option<Vec<f64>>,
    /// Round-trip times to keep or run, ms; `None`: no restriction (grid: 0 ms only).
    pub rtts_ms: Option<Vec<f64>>,
    /// Edge profiles to keep or run; `None`: no restriction (grid: pi4 only).
    pub profiles: Option<Vec<Profile>>,
    /// CPU loads to keep or run; `None`: no restriction (grid: idle only).
    pub loads: Option<Vec<Load>>,
}

/// The cells of a preset, in run order.
///
/// * `full`: every bandwidth × RTT {0, 20, 60} at pi4 idle; every bandwidth at pi3 idle RTT 0;
///   every bandwidth at pi4 busy RTT 20; native idle RTT 20 at 1, 10 and 100 Mbit/s.
/// * `quick`: pi4 idle RTT 0 at 1 and 20 Mbit/s, pi4 idle RTT 20 at 5 and 50, pi3 idle RTT 20 at
///   5, pi4 busy RTT 20 at 10.
/// * `ci`: pi4 idle RTT 0 at 1 and 20 Mbit/s, pi3 idle RTT 20 at 5 Mbit/s.
/// * `grid`: the product of the axes (defaults: every bandwidth, RTT 0, pi4, idle).
pub fn preset_cells(preset: Preset, axes: &Axes) -> Vec<Cell> {
    use Load::*;
    use Profile::*;
    let cells: Vec<Cell> = match preset {
        Preset::Full => {
            let mut v = Vec::new();
            for rtt in RTTS_MS {
                for bw in BANDWIDTHS_MBIT {
                    v.push(Cell::new(Pi4, Idle, bw, rtt));
                }
            }
            for bw in BANDWIDTHS_MBIT {
                v.push(Cell::new(Pi3, Idle, bw, 0.0));
            }
            for bw in BANDWIDTHS_MBIT {
                v.push(Cell::new(Pi4, Busy, bw, 20.0));
            }
            for bw in [1.0, 10.0, 100.0] {
                v.push(Cell::new(Native, Idle, bw, 20.0));
            }
            v
        }
        Preset::Quick => vec![
            Cell::new(Pi4, Idle, 1.0, 0.0),
            Cell::new(Pi4, Idle, 20.0, 0.0),
            Cell::new(Pi4, Idle, 5.0, 20.0),
            Cell::new(Pi4, Idle, 50.0, 20.0),
            Cell::new(Pi3, Idle, 5.0, 20.0),
            Cell::new(Pi4, Busy, 10.0, 20.0),
        ],
        Preset::Ci => vec![
            Cell::new(Pi4, Idle, 1.0, 0.0),
            Cell::new(Pi4, Idle, 20.0, 0.0),
            Cell::new(Pi3, Idle, 5.0, 20.0),
        ],
        Preset::Grid => {
            let bws = axes
                .bandwidths_mbit
                .clone()
                .unwrap_or_else(|| BANDWIDTHS_MBIT.to_vec());
            let rtts = axes.rtts_ms.clone().unwrap_or_else(|| vec![0.0]);
            let profiles = axes.profiles.clone().unwrap_or_else(|| vec![Pi4]);
            let loads = axes.loads.clone().unwrap_or_else(|| vec![Idle]);
            let mut v = Vec::new();
            for &profile in &profiles {
                for &load in &loads {
                    for &rtt in &rtts {
                        for &bw in &bws {
                            v.push(Cell::new(profile, load, bw, rtt));
                        }
                    }
                }
            }
            return v;
        }
    };
    cells
        .into_iter()
        .filter(|c| {
            axes.bandwidths_mbit
                .as_ref()
                .is_none_or(|v| v.contains(&c.bandwidth_mbit))
                && axes.rtts_ms.as_ref().is_none_or(|v| v.contains(&c.rtt_ms))
                && axes
                    .profiles
                    .as_ref()
                    .is_none_or(|v| v.contains(&c.profile))
                && axes.loads.as_ref().is_none_or(|v| v.contains(&c.load))
        })
        .collect()
}

/// Parses a comma-separated list (`0.5,1,20`).
pub fn parse_list<T: FromStr>(text: &str, what: &str) -> Result<Vec<T>, BenchError> {
    let items: Vec<T> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<T>()
                .map_err(|_| BenchError::Invalid(format!("{what}: `{s}` is not valid")))
        })
        .collect::<Result<_, _>>()?;
    if items.is_empty() {
        return Err(BenchError::Invalid(format!("{what}: empty list")));
    }
    Ok(items)
}

/// Checks bandwidths (> 0, ≤ 10 Gbit/s) and RTTs (0 ≤ RTT ≤ 10 s).
pub fn validate_cells(cells: &[Cell]) -> Result<(), BenchError> {
    for c in cells {
        if !(c.bandwidth_mbit.is_finite() && c.bandwidth_mbit > 0.0 && c.bandwidth_mbit <= 10_000.0)
        {
            return Err(BenchError::Invalid(format!(
                "bandwidth {} Mbit/s: expected a number in (0, 10000]",
                c.bandwidth_mbit
            )));
        }
        if !(c.rtt_ms.is_finite() && (0.0..=10_000.0).contains(&c.rtt_ms)) {
            return Err(BenchError::Invalid(format!(
                "RTT {} ms: expected a number in [0, 10000]",
                c.rtt_ms
            )));
        }
    }
    if cells.is_empty() {
        return Err(BenchError::Invalid("the selection has no cells".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_matrix_has_the_documented_cells() {
        let cells = preset_cells(Preset::Full, &Axes::default());
        assert_eq!(cells.len(), 24 + 8 + 8 + 3);
        assert_eq!(cells[0].id(), "pi4-idle-rtt0-0.5mbit");
    }

    #[test]
    fn axes_filter_presets_and_span_grids() {
        let axes = Axes {
            rtts_ms: Some(vec![0.0]),
            profiles: Some(vec![Profile::Pi4]),
            loads: Some(vec![Load::Idle]),
            ..Axes::default()
        };
        assert_eq!(preset_cells(Preset::Full, &axes).len(), 8);
        let grid = Axes {
            bandwidths_mbit: Some(vec![1.0, 2.0]),
            rtts_ms: Some(vec![0.0, 20.0]),
            ..Axes::default()
        };
        assert_eq!(preset_cells(Preset::Grid, &grid).len(), 4);
    }

    #[test]
    fn lists_and_names_parse() {
        assert_eq!(
            parse_list::<f64>("0.5, 1,20", "bw").expect("list"),
            vec![0.5, 1.0, 20.0]
        );
        assert!(parse_list::<f64>("x", "bw").is_err());
        assert_eq!(
            parse_list::<Profile>("pi3", "p").expect("p"),
            vec![Profile::Pi3]
        );
        assert!("pi5".parse::<Profile>().is_err());
        assert!(validate_cells(&[Cell::new(Profile::Pi4, Load::Idle, 0.0, 0.0)]).is_err());
    }
}
