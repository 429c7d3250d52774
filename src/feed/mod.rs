//! Feed data: the common [`model`], and snapshots built from GTFS zips.
//!
//! - [`model`]: the shapes every source is turned into (and the route API answers with).
//! - [`calendar`]: GTFS service dates (calendar.txt weekdays plus calendar_dates.txt exceptions).
//! - [`store`]: every known feed with its current version, swapped in atomically.
//! - [`snapshot`]: an immutable in-memory [`snapshot::FeedSnapshot`] built from a GTFS zip's bytes.

pub mod calendar;
pub mod model;
pub mod snapshot;
pub mod store;
