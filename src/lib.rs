//! switchhook turns FreeSWITCH and contact-center events into reliable HTTP webhooks, behind a
//! REST API wire-compatible with the Webitel engine's Hooks API v2.
//!
//! Data flows one way:
//!
//! ```text
//! sources (esl, amqp, http ingest) ──▶ router (match + render) ──▶ store (events + deliveries, one tx)
//!                                                                     │
//! api (axum: hooks CRUD, delivery log) ◀── store ──▶ delivery (workers: http client, retry, sign)
//! ```
//!
//! - [`event`]: the event model, its name and domain (pure).
//! - [`hook`]: hook documents, validation and their compiled form (pure).
//! - [`store`]: the one place with SQL; SQLite and PostgreSQL.
//! - [`api`]: the REST API and its envelope.
//! - [`auth`]: tokens, roles and permissions.
//! - [`simulate`]: a fake FreeSWITCH (call flows, ESL frames, mod_amqp keys) for demos, tests and benches.
//! - [`bench`]: the end-to-end benchmark (`switchhook bench`).
//! - [`config`], [`app`]: configuration and wiring.

pub mod api;
pub mod app;
pub mod auth;
pub mod bench;
pub mod config;
pub mod delivery;
pub mod event;
pub mod hook;
pub mod router;
pub mod simulate;
pub mod sources;
pub mod store;
pub mod telemetry;
