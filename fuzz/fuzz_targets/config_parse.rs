//! Arbitrary UTF-8 text as streams.yaml: `Config::parse` must return a config
//! or a located `ConfigError`, never panic. `${VAR}` expansion runs with an
//! empty environment, so only `${VAR:default}` expands.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use streamvisor::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::parse(Path::new("fuzz.yaml"), text, &|_| None);
});
