//! `jmdc_bench::load` (the load generator of `jmdc-bench load`) against an in-process worker over
//! real QUIC: closed-loop devices get answers and count them; an open-loop run delivers the
//! scheduled rate; a split the model does not have is refused before any device connects.

mod common;

use std::sync::Arc;
use std::time::Duration;

use jmdc_bench::load::{codec, prepare_payloads, run_load, LoadPlan, LoadSettings, Pace};

fn plan() -> LoadPlan {
    LoadPlan {
        model: "alexnet-cifar10".into(),
        variant: "keep050".into(),
        split: 6,
        codec: codec("int4", 1.0).expect("codec"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_and_open_loop_devices_are_answered_and_counted() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let cloud = common::Cloud::start(256).await;
        let plan = plan();
        let (kind, payloads) = prepare_payloads(&common::repo_root(), &plan, 4).expect("payloads");
        assert_eq!(payloads.len(), 4);
        assert!(payloads.iter().all(|p| !p.is_empty()));
        let payloads = Arc::new(payloads);

        let closed = LoadSettings {
            devices: 4,
            pace: Pace::Closed,
            measure: Duration::from_secs(1),
            warm_up: Duration::from_millis(300),
            timeout: Duration::from_secs(5),
        };
        let report = run_load(
            cloud.addr,
            &cloud.cert,
            &plan,
            (kind, payloads.clone()),
            &closed,
        )
        .await
        .expect("closed loop");
        println!("closed loop, 4 devices: {report:?}");
        assert!(report.errors.is_empty(), "{report:?}");
        assert!(report.frames >= 40, "{report:?}");
        assert!(
            report.p50_ms > 0.0 && report.p50_ms <= report.p99_ms,
            "{report:?}"
        );

        // Open loop: 3 devices × 40 frames/s for 2 s are about 240 frames, whatever the latency.
        let open = LoadSettings {
            devices: 3,
            pace: Pace::Open(40.0),
            measure: Duration::from_secs(2),
            ..closed
        };
        let report = run_load(cloud.addr, &cloud.cert, &plan, (kind, payloads), &open)
            .await
            .expect("open loop");
        println!("open loop, 3 × 40 frames/s: {report:?}");
        assert!(report.errors.is_empty(), "{report:?}");
        assert!(
            (216..=264).contains(&report.frames),
            "240 scheduled, {} answered",
            report.frames
        );
        cloud.stop().await;
    })
    .await
    .expect("finished in time");
}

#[test]
fn a_split_without_a_tail_is_refused() {
    common::init_runtime();
    let mut p = plan();
    p.split = 13;
    let e = prepare_payloads(&common::repo_root(), &p, 2).expect_err("no tail");
    assert!(e.to_string().contains("split 13"), "{e}");
    assert!(codec("int9", 1.0).is_err());
}
