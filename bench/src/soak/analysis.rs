//! What a soak run's result files say: frames lost per device, how the frames were finished in each
//! phase, and how long each device took to use the cloud again after the link came back and after
//! the worker restarted. Pure: works on parsed lines and times.

use serde::Deserialize;

/// The fields of one `jmdc-edge` JSON result line that the soak analysis needs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct FrameResult {
    /// Frame id (delivery order from the source, from 0).
    pub frame: u64,
    /// When the result was written, ms since the Unix epoch.
    pub unix_ms: u64,
    /// `cloud` or `edge`.
    pub finished_on: String,
    /// True when the plan wanted the cloud but the edge finished the frame.
    pub fallback: bool,
    /// The frame's latency, ms.
    pub latency_ms: LatencyTotal,
}

/// The part of a result line's `latency_ms` breakdown the soak analysis needs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LatencyTotal {
    /// Whole latency of the frame, ms.
    pub total: f64,
}

impl FrameResult {
    /// Whether the cloud finished the frame.
    pub fn on_cloud(&self) -> bool {
        self.finished_on == "cloud"
    }
}

/// Parses a results file (one JSON object per line). A line that does not parse is an error
/// naming its number: the edge must never write a torn or foreign line.
pub fn parse_results(text: &str) -> Result<Vec<FrameResult>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// Frame numbers missing from `0..=max` and frame numbers seen more than once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Continuity {
    /// Result lines, duplicates included.
    pub results: usize,
    /// Frame numbers in `0..=max` with no result.
    pub missing: u64,
    /// Results beyond the first for a frame number.
    pub duplicates: u64,
}

/// Every frame the source produced has exactly one result: numbers start at 0 and have no gaps.
pub fn continuity(results: &[FrameResult]) -> Continuity {
    let mut ids: Vec<u64> = results.iter().map(|r| r.frame).collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    let duplicates = (before - ids.len()) as u64;
    let missing = ids.last().map_or(0, |&max| max + 1 - ids.len() as u64);
    Continuity {
        results: before,
        missing,
        duplicates,
    }
}

/// Milliseconds from `since_ms` to the first result finished on the cloud at or after it; `None`
/// when the device never used the cloud again.
pub fn recovery_ms(results: &[FrameResult], since_ms: u64) -> Option<u64> {
    results
        .iter()
        .filter(|r| r.on_cloud() && r.unix_ms >= since_ms)
        .map(|r| r.unix_ms - since_ms)
        .min()
}

/// How the frames of one time window were finished.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowCounts {
    /// Results written in the window.
    pub frames: usize,
    /// Of those, frames the cloud finished.
    pub on_cloud: usize,
    /// Frames the plan sent to the cloud but the edge finished (timeout, lost connection, refusal).
    pub fallbacks: usize,
    /// Result latencies (ms) of the window, for percentiles.
    pub latencies_ms: Vec<f64>,
}

impl WindowCounts {
    /// Adds `other`'s counts and latencies to these (windows of several devices, or phases).
    pub fn add(&mut self, other: &WindowCounts) {
        self.frames += other.frames;
        self.on_cloud += other.on_cloud;
        self.fallbacks += other.fallbacks;
        self.latencies_ms.extend_from_slice(&other.latencies_ms);
    }
}

/// Counts of the results written in `[start_ms, end_ms)`.
pub fn window(results: &[FrameResult], start_ms: u64, end_ms: u64) -> WindowCounts {
    let mut w = WindowCounts::default();
    for r in results
        .iter()
        .filter(|r| r.unix_ms >= start_ms && r.unix_ms < end_ms)
    {
        w.frames += 1;
        w.on_cloud += usize::from(r.on_cloud());
        w.fallbacks += usize::from(r.fallback);
        w.latencies_ms.push(r.latency_ms.total);
    }
    w
}

/// The `q`-quantile (0–1, nearest rank) of `values`; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * (v.len() - 1) as f64).round() as usize;
    v.get(rank).copied()
}

/// Relative growth of the median of the last fifth of `series` over the median of its first fifth
/// (after dropping the first `skip` samples, the start-up): 0.05 = 5 % growth.
pub fn growth(series: &[f64], skip: usize) -> Option<f64> {
    let s = series.get(skip..)?;
    let fifth = (s.len() / 5).max(1);
    if s.len() < 2 * fifth {
        return None;
    }
    let first = quantile(&s[..fifth], 0.5)?;
    let last = quantile(&s[s.len() - fifth..], 0.5)?;
    (first > 0.0).then(|| last / first - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(frame: u64, unix_ms: u64, cloud: bool) -> FrameResult {
        FrameResult {
            frame,
            unix_ms,
            finished_on: if cloud { "cloud" } else { "edge" }.into(),
            fallback: !cloud,
            latency_ms: LatencyTotal { total: 1.0 },
        }
    }

    #[test]
    fn parses_edge_lines_and_names_a_bad_one() {
        let line = r#"{"frame":3,"unix_ms":1000,"class":"cat","class_index":3,"score":0.9,"plan":"p","finished_on":"cloud","fallback":false,"latency_ms":{"queue":0,"edge":0,"encode":0,"network":0,"cloud":0,"total":2.5},"bytes":10}"#;
        let parsed = parse_results(&format!("{line}\n\n{line}\n")).expect("parses");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].frame, 3);
        assert!(parsed[0].on_cloud());
        assert_eq!(parsed[0].latency_ms.total, 2.5);
        let err = parse_results(&format!("{line}\n{{\"frame\":")).expect_err("torn line");
        assert!(err.starts_with("line 2:"), "{err}");
    }

    #[test]
    fn gaps_and_duplicates_are_counted() {
        let ok: Vec<_> = (0..5).map(|i| r(i, i, true)).collect();
        assert_eq!(
            continuity(&ok),
            Continuity {
                results: 5,
                missing: 0,
                duplicates: 0
            }
        );
        let bad = vec![r(0, 0, true), r(2, 1, true), r(2, 2, true), r(5, 3, true)];
        let c = continuity(&bad);
        assert_eq!(
            (c.missing, c.duplicates),
            (3, 1),
            "1, 3, 4 missing; 2 twice"
        );
        // A device that lost its first frames.
        assert_eq!(continuity(&[r(1, 0, true)]).missing, 1);
        assert_eq!(continuity(&[]).missing, 0);
    }

    #[test]
    fn recovery_is_the_first_cloud_result_after_the_instant() {
        let rs = vec![
            r(0, 100, true),
            r(1, 900, false),
            r(2, 1_400, false),
            r(3, 1_700, true),
        ];
        assert_eq!(recovery_ms(&rs, 1_000), Some(700));
        assert_eq!(recovery_ms(&rs, 1_700), Some(0));
        assert_eq!(recovery_ms(&rs, 1_701), None);
    }

    #[test]
    fn windows_count_what_was_written_inside() {
        let rs = vec![r(0, 100, true), r(1, 200, false), r(2, 300, true)];
        let w = window(&rs, 100, 300);
        assert_eq!((w.frames, w.on_cloud, w.fallbacks), (2, 1, 1));
        let mut all = WindowCounts::default();
        all.add(&w);
        all.add(&window(&rs, 300, 400));
        assert_eq!((all.frames, all.on_cloud), (3, 2));
    }

    #[test]
    fn quantiles_and_growth() {
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[], 0.5), None);
        let flat = vec![100.0; 50];
        assert_eq!(growth(&flat, 5), Some(0.0));
        let rising: Vec<f64> = (0..50).map(|i| 100.0 + f64::from(i)).collect();
        let g = growth(&rising, 0).expect("enough samples");
        assert!(g > 0.3 && g < 0.5, "{g}");
        assert_eq!(growth(&[1.0], 0), None);
    }
}
