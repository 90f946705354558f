//! Simulated FreeSWITCH traffic: realistic events and the bytes FreeSWITCH puts on the wire for
//! them. Pure code, no I/O; the `simulate` command, the end-to-end benchmark and the tests build
//! their fake event socket and fake mod_amqp publisher on top of it.
//!
//! - [`calls`]: a seeded simulated switch producing call flows, `callcenter::info` events and the
//!   engine's `engine::dialer_member_end`.
//! - [`wire`]: ESL frames (`text/event-plain`, `text/event-json`, replies, disconnect notice) and
//!   mod_amqp routing keys.

pub mod calls;
pub mod wire;
