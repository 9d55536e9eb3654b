//! Replays the SSE bodies recorded from real servers (llama.cpp
//! `llama-server`, the LiteLLM proxy) through the parser, one byte at a
//! time, and checks the frames real clients depend on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use clawgate_wire::sse::{SseEvent, SseParser};

/// The raw body of a recorded exchange: everything after the response
/// head (status line and headers end at the first blank line after it).
fn body(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/wire")
        .join(name);
    let raw = std::fs::read(&path).unwrap();
    let status = find(&raw, b"\nHTTP/1.1 ").expect("status line");
    // The head is recorded with CRLF line ends, as sent on the wire.
    let head_end = find(&raw[status..], b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| find(&raw[status..], b"\n\n").map(|i| i + 2))
        .expect("end of headers")
        + status;
    raw[head_end..].to_vec()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn replay(name: &str) -> Vec<SseEvent> {
    let body = body(name);
    let mut whole = SseParser::new();
    let mut expected = Vec::new();
    whole.push(&body, &mut expected);
    expected.extend(whole.finish().unwrap());
    let mut p = SseParser::new();
    let mut got = Vec::new();
    for b in &body {
        p.push(std::slice::from_ref(b), &mut got);
    }
    got.extend(p.finish().unwrap());
    assert_eq!(got, expected, "{name}: byte-by-byte equals whole");
    got
}

#[test]
fn llamacpp_chat_stream_ends_with_done_after_usage() {
    let evs = replay("llamacpp/chat-stream.http");
    assert!(
        evs[0].data.contains("\"role\":\"assistant\""),
        "first frame kept"
    );
    assert!(evs.last().unwrap().is_done());
    let usage = &evs[evs.len() - 2].data;
    assert!(
        usage.contains("\"choices\":[]") && usage.contains("\"usage\""),
        "{usage}"
    );
    assert!(evs.iter().all(|e| e.event.is_none()));
}

#[test]
fn llamacpp_responses_stream_event_sequence() {
    let evs = replay("llamacpp/responses-stream.http");
    let names: Vec<&str> = evs.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    assert!(names.contains(&"response.output_text.delta"));
}

#[test]
fn llamacpp_messages_stream_event_sequence() {
    let evs = replay("llamacpp/messages-stream.http");
    let names: Vec<&str> = evs.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(names.contains(&"content_block_delta"));
}

#[test]
fn tool_and_litellm_streams_parse() {
    for name in [
        "llamacpp/chat-tools-stream.http",
        "litellm/chat-stream.http",
        "litellm/responses-stream.http",
    ] {
        let evs = replay(name);
        assert!(evs.len() > 2, "{name}");
    }
}

/// Garbage and truncated recordings never panic the SSE parser.
#[test]
fn sse_parser_survives_any_prefix_and_garbage() {
    let body = body("llamacpp/chat-tools-stream.http");
    for cut in (0..body.len()).step_by(13) {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push(&body[..cut], &mut out);
        let _ = p.finish();
    }
    let mut seed: u32 = 0x1234_5678;
    let mut junk = Vec::with_capacity(4096);
    for _ in 0..4096 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        junk.push(b"data:\r\n :{}[DONE]\xff\xc3"[(seed % 16) as usize]);
    }
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for chunk in junk.chunks(37) {
        p.push(chunk, &mut out);
    }
    let _ = p.finish();
}
