//! Tool calls written as text (WIRE-6): no panic on any text and tool
//! list, and the same promotions whatever the chunking of the stream.
#![no_main]

use clawgate_wire::tool_text::{Salvaged, ToolTextSalvager};
use libfuzzer_sys::fuzz_target;

fn run(tools: &[String], parts: &[&str]) -> Vec<String> {
    let mut s = ToolTextSalvager::new(tools.to_vec());
    let mut out = Vec::new();
    for p in parts {
        s.push(p, &mut out);
    }
    s.finish(&mut out);
    // Adjacent text pieces are one text, however they were cut.
    let mut merged: Vec<String> = Vec::new();
    let mut text = String::new();
    for item in out {
        match item {
            Salvaged::Text(t) => text.push_str(&t),
            other => {
                if !text.is_empty() {
                    merged.push(format!("text:{}", std::mem::take(&mut text)));
                }
                merged.push(match other {
                    Salvaged::Call { name, arguments } => format!("call:{name}:{arguments}"),
                    Salvaged::Rejected { text, .. } => format!("rejected:{text}"),
                    Salvaged::Text(_) => String::new(),
                });
            }
        }
    }
    if !text.is_empty() {
        merged.push(format!("text:{text}"));
    }
    merged
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (head, body) = text.split_once('\n').unwrap_or(("get_weather,read_file", text));
    let tools: Vec<String> = head.split(',').take(8).map(str::to_string).collect();
    let whole = run(&tools, &[body]);
    let pieces: Vec<String> = body
        .chars()
        .collect::<Vec<_>>()
        .chunks(3)
        .map(|c| c.iter().collect())
        .collect();
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    assert_eq!(whole, run(&tools, &refs));
});
