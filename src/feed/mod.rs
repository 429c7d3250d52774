//! Feed data: the common [`model`], and snapshots built from GTFS zips (or directories).
//!
//! - [`model`]: the shapes every source is turned into (and the route API answers with),
//!   the route list's order, and GTFS times.
//! - [`calendar`]: GTFS service dates (calendar.txt weekdays plus calendar_dates.txt exceptions).
//! - [`store`]: every known feed with its current version, swapped in atomically.
//! - [`snapshot`]: an immutable in-memory [`snapshot::FeedSnapshot`] built from a GTFS zip's
//!   bytes, and its queries. It is built in two steps, one module each:
//!   - [`read`]: the zip's bytes to the tables used, with the repairs and the
//!     [`error::FeedError`] that says what is wrong with a feed (its own module, since
//!     every step of the build returns it);
//!   - [`network`]: those tables to routes, patterns and trips, in named steps, with
//!     `stop_times.txt` read as a stream ([`stop_times`]) and folded trip by trip.
//! - [`spool`]: a zip's bytes between where they come from and the build and the store,
//!   in an anonymous temporary file once large, hashed as written, read at positions.
//! - [`dir`]: a feed kept as a directory of `.txt` files: its version (a sha256 over the
//!   files) and the files packed as a zip for the same reader.
//!
//! Imports run one way: `snapshot` → `network` → `read` → `stop_times`, all → `model`
//! and `error`; `dir` → `read`; `snapshot`, `stop_times` and `read` → `spool`, which
//! imports nothing of the feed's.

pub mod calendar;
pub mod dir;
pub mod error;
pub mod model;
pub mod network;
pub mod read;
pub mod snapshot;
pub mod spool;
mod stop_times;
pub mod store;
#[cfg(test)]
mod testkit;
