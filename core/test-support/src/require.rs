//! Tests that need something from outside the repository skip with a printed reason on a developer
//! machine, but fail where it is required, so that CI cannot pass by skipping: `.ci/run` sets
//! `JMDC_REQUIRE_TOOLS=1` (it installs ffmpeg and curl) and, when `../shared` is there,
//! `JMDC_REQUIRE_SHARED=1`.

/// What a test needs.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// A program installed on the machine (ffmpeg, curl).
    Tool,
    /// The shared dataset folder `../shared`.
    Shared,
}

impl Need {
    fn variable(self) -> &'static str {
        match self {
            Need::Tool => "JMDC_REQUIRE_TOOLS",
            Need::Shared => "JMDC_REQUIRE_SHARED",
        }
    }
}

/// Call when `need` is missing, then return from the test: panics when the environment requires
/// it, else prints that the test was skipped and why.
pub fn missing(need: Need, reason: &str) {
    let var = need.variable();
    if std::env::var(var).is_ok_and(|v| v == "1") {
        panic!("{reason}, and {var}=1 requires it");
    }
    println!("skipped: {reason} (with {var}=1 this fails)");
}
