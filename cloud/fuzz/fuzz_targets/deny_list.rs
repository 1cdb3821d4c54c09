//! Arbitrary text as the worker's deny list (`tls.revoked`, re-read on SIGHUP): never panics;
//! what it accepts are 64 lower-case hex digits, one per fingerprint line, and writing them back
//! out gives the same list; what it refuses names the first bad line.
#![no_main]

use jmdc_cloud::identity::parse_deny_list;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The worker reads the file as UTF-8 (`read_to_string`); other bytes are refused before.
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count();
    match parse_deny_list(&text) {
        Ok(set) => {
            assert!(set.len() <= lines);
            for fp in &set {
                assert_eq!(fp.len(), 64, "{fp:?}");
                assert!(fp
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            }
            let written: Vec<&str> = set.iter().map(String::as_str).collect();
            assert_eq!(parse_deny_list(&written.join("\n")), Ok(set.clone()));
        }
        Err(e) => {
            assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line);
            assert!(!e.entry.is_empty() && !e.entry.contains('#'));
            assert_eq!(e.entry.trim(), e.entry);
            // It is the first bad line: the lines before it parse.
            let before: Vec<&str> = text.lines().take(e.line - 1).collect();
            assert!(parse_deny_list(&before.join("\n")).is_ok());
            assert!(e.to_string().contains(&format!("line {}", e.line)));
        }
    }
});
