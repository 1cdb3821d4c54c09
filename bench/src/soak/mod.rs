//! `jmdc-bench soak` (`make soak`): many simulated devices with certificates against one worker
//! through the link emulator, under loss, a blackout and a worker restart; checks that no frame is
//! lost, that every device uses the cloud again quickly, and that memory stays flat.

pub mod analysis;
pub mod report;
pub mod runner;
pub mod schedule;
