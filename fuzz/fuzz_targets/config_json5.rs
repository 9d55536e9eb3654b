//! The JSON5 config loader, end to end (parse, decode, registry, cross
//! checks), sandboxed: no `$include` is read and no file or exec SecretRef
//! runs, whatever the input says.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let env = |name: &str| (name == "FUZZ_KEY").then(|| "sk-fuzz".to_string());
        if let Ok(snap) =
            clawgate_catalog::load_text_sandboxed(std::path::Path::new("fuzz.json5"), text, &env)
        {
            // What every request does with a loaded snapshot.
            let _ = snap.registry.chain(None, None);
            let _ = snap.registry.resolve("default");
        }
    }
});
