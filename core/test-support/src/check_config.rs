//! Used by `daemon/tests/config_fixtures.rs` and `cloud/tests/config_fixtures.rs`: runs a binary's
//! `check-config` against the layered fixtures in
//! `<crate>/tests/fixtures/config/<case>/<file>` and checks how mistakes are reported.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One binary's fixtures: its path and the name of its main configuration file.
#[derive(Debug, Clone, Copy)]
pub struct Fixtures {
    /// The binary (`env!("CARGO_BIN_EXE_…")`).
    pub binary: &'static str,
    /// The crate folder holding `tests/fixtures/config/` (`env!("CARGO_MANIFEST_DIR")`).
    pub crate_dir: &'static str,
    /// The main file's name in each case folder (`edge.toml`, `cloud.toml`).
    pub main_file: &'static str,
}

impl Fixtures {
    /// The main file of fixture `case`.
    pub fn path(&self, case: &str) -> PathBuf {
        PathBuf::from(self.crate_dir)
            .join("tests/fixtures/config")
            .join(case)
            .join(self.main_file)
    }

    /// Runs `check-config` (bounded: it must finish within 30 s); (status, stdout, stderr).
    pub fn check(&self, case: &str, env: &[(&str, &str)]) -> (i32, String, String) {
        let mut cmd = Command::new(self.binary);
        // The fixtures test parsing and layering; their files do not exist.
        cmd.args(["check-config", "--syntax-only", "--config"])
            .arg(self.path(case));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the binary");
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("poll child").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("check-config did not finish within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The valid fixture passes and says so.
    pub fn assert_valid(&self, case: &str, env: &[(&str, &str)]) {
        let (code, out, err) = self.check(case, env);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains(&format!("{}: ok", self.path(case).display())),
            "{out}"
        );
    }

    /// `case` fails with status 1, naming the layer `file` (relative to the case folder) and `key`.
    pub fn assert_fails_naming(&self, case: &str, file: &str, key: &str) {
        let (code, out, err) = self.check(case, &[]);
        assert_eq!(code, 1, "{case}: {out}{err}");
        let layer = self.path(case).with_file_name(file);
        assert!(
            err.starts_with(&format!("{}: ", layer.display())),
            "{case}: names {file}: {err}"
        );
        assert!(
            err.contains(&format!("`{key}`")),
            "{case}: names {key}: {err}"
        );
    }
}
