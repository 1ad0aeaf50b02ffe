//! The integration tests of `matroska-diesel`, in one test binary: the
//! shared module (`common`: the schema, per-test databases and cached
//! views, whose Diesel code is compiled once per backend) and Diesel's
//! generic code are compiled and linked once instead of once per file.
//!
//! ```text
//! cargo test -p matroska-diesel                                   # SQLite
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p matroska-diesel
//! cargo test -p matroska-diesel --test integration write_paths::  # one module
//! ```
//!
//! * `write_paths`: every row of the write-path table of the crate docs.
//! * `transactions`: transactions, savepoints, test transactions, abandoned
//!   writes, the forced race of two moves.
//! * `outbox`: the durable outbox.
//! * `adversarial`: regression tests from an adversarial review.

#![allow(missing_docs, unreachable_pub)]

#[macro_use]
mod common;
#[path = "../../../matroska/tests/common/redis_server.rs"]
mod redis_server;

mod adversarial;
mod outbox;
mod transactions;
mod write_paths;
