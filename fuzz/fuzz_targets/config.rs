#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = turnout_config::parse(&String::from_utf8_lossy(data), "fuzz.toml");
});
