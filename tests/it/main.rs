//! The one integration-test binary: everything that needs real sockets, a real
//! PostgreSQL or the built executable. Shared helpers live in `support`.

mod cache;
mod cli;
mod config;
mod console;
mod cors;
mod demo;
mod deploy;
mod docs;
mod encoding;
mod feed_store;
mod fetch;
mod hits;
mod lifecycle;
mod openapi;
mod ops;
mod otp_robustness;
mod otp_sim_selftest;
mod real_otp;
mod replica_processes;
mod replicas;
mod routes;
mod support;
mod trace;
mod waybills;
