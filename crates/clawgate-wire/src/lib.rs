//! Talking to model servers (WIRE-1..8).
//!
//! Brief overview: [`sse`] turns a byte stream into Server-Sent Events,
//! whatever the chunk boundaries; [`think`] separates inline
//! `<think>…</think>` reasoning from final text in a stream of text deltas
//! (WIRE-5). The three transports and the internal event stream build on
//! these two.

pub mod sse;
pub mod think;
