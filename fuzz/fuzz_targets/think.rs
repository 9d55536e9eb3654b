//! The `<think>` splitter: no panic, and the same text and reasoning
//! whatever the chunking of the stream.
#![no_main]

use clawgate_wire::think::{Segment, ThinkSplitter};
use libfuzzer_sys::fuzz_target;

fn run(parts: &[&str]) -> (String, String) {
    let mut s = ThinkSplitter::new();
    let mut out = Vec::new();
    for p in parts {
        s.push(p, &mut out);
    }
    s.finish(&mut out);
    let (mut text, mut reasoning) = (String::new(), String::new());
    for seg in out {
        match seg {
            Segment::Text(t) => text.push_str(&t),
            Segment::Reasoning(r) => reasoning.push_str(&r),
        }
    }
    (text, reasoning)
}

fuzz_target!(|data: &[u8]| {
    let Some((&size, body)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let size = usize::from(size % 8) + 1;
    let chars: Vec<char> = text.chars().collect();
    let pieces: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    assert_eq!(run(&[text]), run(&refs), "chunk size {size}");
});
