//! Simulated FreeSWITCH traffic, so anyone can see switchhook work (and benchmark it) without
//! a PBX.
//!
//! - [`calls`]: a seeded simulated switch producing call flows, `callcenter::info` events and the
//!   engine's `engine::dialer_member_end` (pure).
//! - [`wire`]: ESL frames (`text/event-plain`, `text/event-json`, replies, disconnect notice) (pure).
//! - [`server`]: a fake event socket serving those events to subscribed clients.
//! - [`run`]: the `simulate` command: rate, domains, count; event socket or RabbitMQ.
//! - [`receiver`]: the `receive` command's webhook receiver, also the benchmark's.

pub mod calls;
pub mod receiver;
pub mod run;
pub mod server;
pub mod wire;
