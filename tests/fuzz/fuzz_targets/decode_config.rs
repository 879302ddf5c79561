//! Any text as a zoo.cfg: an error naming the line, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkeeper::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut cfg = Config::default();
        if cfg.apply_text(text, "fuzz.cfg").is_ok() {
            let _ = cfg.check();
        }
    }
});
