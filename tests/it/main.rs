//! The one integration-test binary: everything that needs real sockets, a real
//! PostgreSQL or the built executable. Shared helpers live in `support`.

mod cli;
mod config;
mod lifecycle;
mod ops;
mod support;
