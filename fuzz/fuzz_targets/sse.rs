//! The SSE parser: any bytes, in any chunking, give the same events as
//! the whole input at once (the upstream decides where reads split).
#![no_main]

use clawgate_wire::sse::SseParser;
use libfuzzer_sys::fuzz_target;

fn run(chunks: &mut dyn Iterator<Item = &[u8]>) -> Vec<String> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for c in chunks {
        p.push(c, &mut out);
    }
    let last = p.finish();
    let mut seen: Vec<String> = out.iter().map(|e| format!("{e:?}")).collect();
    seen.push(format!("{last:?}"));
    seen
}

fuzz_target!(|data: &[u8]| {
    let Some((&size, body)) = data.split_first() else {
        return;
    };
    let size = usize::from(size % 16) + 1;
    let whole = run(&mut std::iter::once(body));
    let chunked = run(&mut body.chunks(size));
    assert_eq!(whole, chunked, "chunk size {size}");
});
