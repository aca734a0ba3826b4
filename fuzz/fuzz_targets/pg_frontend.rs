#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    turnout_proxy::fuzzing::pg_frontend(data);
});
