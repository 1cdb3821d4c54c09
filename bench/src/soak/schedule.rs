//! The fault schedule of a soak run: which link condition holds when, and when the worker restarts.
//! Pure: times are offsets from the start of the measured run.

use std::time::Duration;

/// How long the link is cut, whatever the run's length (issue 13 asks for a 10 s blackout).
pub const BLACKOUT: Duration = Duration::from_secs(10);

/// The shortest run the schedule fits in (every phase at least 5 s).
pub const MIN_TOTAL: Duration = Duration::from_secs(100);

/// What the link does during a phase (both directions alike).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkCondition {
    /// No loss: the run's base link (its one-way delay) only.
    Clean,
    /// Each datagram is dropped with this probability, each way.
    Loss(f64),
    /// Every datagram is dropped.
    Blackout,
}

impl LinkCondition {
    /// Loss probability each way.
    pub fn loss(self) -> f64 {
        match self {
            Self::Clean => 0.0,
            Self::Loss(p) => p,
            Self::Blackout => 1.0,
        }
    }
}

/// One phase of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// Short name (`clean`, `loss5`, `loss30`, `blackout`, `after-blackout`, `after-restart`).
    pub name: &'static str,
    /// Offset of the phase's start from the start of the measured run.
    pub start: Duration,
    /// Offset of the phase's end (the next phase's start).
    pub end: Duration,
    /// What the link does during the phase.
    pub link: LinkCondition,
    /// The worker is stopped (SIGTERM) and started again on the same address at `start`.
    pub restart_worker_at_start: bool,
}

/// The phases of a run of `total` length, in order, covering `0..total` without gaps.
///
/// Fractions of `total`: clean 0–10 %, 5 % loss 10–30 %, 30 % loss 30–50 %, clean 50–55 %, a
/// 10 s blackout, clean until 70 %, a worker restart at 70 %, clean to the end. For 600 s: 5 %
/// loss 60–180 s, 30 % loss 180–300 s, blackout 330–340 s, restart at 420 s.
pub fn phases(total: Duration) -> Result<Vec<Phase>, String> {
    if total < MIN_TOTAL {
        return Err(format!(
            "a soak run needs at least {} s (got {:.0} s)",
            MIN_TOTAL.as_secs(),
            total.as_secs_f64()
        ));
    }
    let at = |fraction: f64| total.mul_f64(fraction);
    let blackout_start = at(0.55);
    let blackout_end = blackout_start + BLACKOUT;
    let phase = |name, start, end, link, restart| Phase {
        name,
        start,
        end,
        link,
        restart_worker_at_start: restart,
    };
    Ok(vec![
        phase(
            "clean",
            Duration::ZERO,
            at(0.1),
            LinkCondition::Clean,
            false,
        ),
        phase("loss5", at(0.1), at(0.3), LinkCondition::Loss(0.05), false),
        phase("loss30", at(0.3), at(0.5), LinkCondition::Loss(0.30), false),
        phase(
            "clean2",
            at(0.5),
            blackout_start,
            LinkCondition::Clean,
            false,
        ),
        phase(
            "blackout",
            blackout_start,
            blackout_end,
            LinkCondition::Blackout,
            false,
        ),
        phase(
            "after-blackout",
            blackout_end,
            at(0.7),
            LinkCondition::Clean,
            false,
        ),
        phase("after-restart", at(0.7), total, LinkCondition::Clean, true),
    ])
}

/// The phase that ends with the link coming back.
pub fn blackout(phases: &[Phase]) -> Option<&Phase> {
    phases.iter().find(|p| p.link == LinkCondition::Blackout)
}

/// The phase that starts with the worker restart.
pub fn restart(phases: &[Phase]) -> Option<&Phase> {
    phases.iter().find(|p| p.restart_worker_at_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_minutes_has_the_issue_s_phases() {
        let p = phases(Duration::from_secs(600)).expect("fits");
        assert_eq!(p.first().map(|x| x.start), Some(Duration::ZERO));
        assert_eq!(p.last().map(|x| x.end), Some(Duration::from_secs(600)));
        for pair in p.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "no gaps between phases");
            assert!(pair[0].start < pair[0].end, "{} is empty", pair[0].name);
        }
        let b = blackout(&p).expect("blackout");
        assert_eq!(b.end - b.start, BLACKOUT);
        assert_eq!(b.start, Duration::from_secs(330));
        assert_eq!(restart(&p).map(|x| x.start), Some(Duration::from_secs(420)));
        assert!(p.iter().any(|x| x.link == LinkCondition::Loss(0.05)));
        assert!(p.iter().any(|x| x.link == LinkCondition::Loss(0.30)));
    }

    #[test]
    fn the_shortest_run_still_has_every_phase() {
        let p = phases(MIN_TOTAL).expect("fits");
        assert_eq!(p.len(), 7);
        for x in &p {
            assert!(x.end > x.start, "{} is empty", x.name);
        }
        assert!(phases(MIN_TOTAL - Duration::from_secs(1)).is_err());
    }

    #[test]
    fn loss_per_condition() {
        assert_eq!(LinkCondition::Clean.loss(), 0.0);
        assert_eq!(LinkCondition::Loss(0.3).loss(), 0.3);
        assert_eq!(LinkCondition::Blackout.loss(), 1.0);
    }
}
