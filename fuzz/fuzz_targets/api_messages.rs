//! The inbound request parser of the messages endpoint: any body gets a
//! request or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    clawgate_api::fuzzing::messages(data);
});
