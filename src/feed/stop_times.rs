//! `stop_times.txt`, read as a stream: the largest file of a feed (tens of millions of
//! rows in a national feed) is never held whole, neither as text nor as rows.
//!
//! [`StopTimesFile::for_each_row`] inflates the zip member and hands each row to the
//! caller as a [`StopTimeRow`] that borrows from the CSV record: no allocation per row.
//! The rules are gtfs-structures' own, so a feed loads or fails as it did when the file
//! was read whole with its `RawStopTime`:
//!
//! - the member is found the way gtfs-structures finds it (any folder, the last entry of
//!   that name wins), a UTF-8 BOM is skipped, fields and headers are trimmed;
//! - every column `RawStopTime` knows is checked with gtfs-structures' own types (pickup
//!   and drop-off types, timepoint, ...), and times follow its `HH:MM:SS` rule;
//! - an error names the file, line and column, and is made by the same
//!   [`FeedError::from_gtfs`] as every other file's;
//! - a row shorter than its header is padded with empty fields (the repair
//!   [`super::read`] makes for the other files; gtfs-structures refuses such rows), and
//!   counted.
//!
//! One difference: an hour of 1193047 or more overflowed gtfs-structures' `u32` (a panic
//! in debug builds, a wrapped time in release builds); here it is a clear error.

use std::io::Read;
use std::ops::ControlFlow;

use gtfs_structures::{ContinuousPickupDropOff, PickupDropOffType, TicketingType, TimepointType};
use serde::{Deserialize, Deserializer};

use super::error::FeedError;
use super::spool::ZipBytes;

/// The file's name in the zip and in errors.
const FILE: &str = "stop_times.txt";

/// `stop_times.txt` inside a zip's bytes, not read yet.
pub(super) struct StopTimesFile<'z> {
    zip: ZipBytes<'z>,
    /// Index of the member in the archive.
    member: usize,
}

/// One row of `stop_times.txt`: what the snapshot uses, borrowed from the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StopTimeRow<'r> {
    pub trip_id: &'r str,
    pub arrival_time: Option<u32>,
    pub departure_time: Option<u32>,
    pub stop_id: &'r str,
    pub stop_sequence: u32,
}

/// A row as gtfs-structures' `RawStopTime` reads it (by column name, each column with its
/// type), for the rows [`Columns::fast`] does not take, and for the error of a row that
/// does not parse. The columns the snapshot does not use are checked, then forgotten.
#[derive(Deserialize)]
struct CheckedRow<'r> {
    trip_id: &'r str,
    #[serde(deserialize_with = "optional_time")]
    arrival_time: Option<u32>,
    #[serde(deserialize_with = "optional_time")]
    departure_time: Option<u32>,
    stop_id: &'r str,
    stop_sequence: u32,
    #[serde(borrow, rename = "stop_headsign")]
    _stop_headsign: Option<&'r str>,
    #[serde(default, rename = "pickup_type")]
    _pickup_type: PickupDropOffType,
    #[serde(default, rename = "drop_off_type")]
    _drop_off_type: PickupDropOffType,
    #[serde(default, rename = "continuous_pickup")]
    _continuous_pickup: ContinuousPickupDropOff,
    #[serde(default, rename = "continuous_drop_off")]
    _continuous_drop_off: ContinuousPickupDropOff,
    #[serde(rename = "shape_dist_traveled")]
    _shape_dist_traveled: Option<f32>,
    #[serde(default, rename = "timepoint")]
    _timepoint: TimepointType,
    #[serde(default, rename = "ticketing_type")]
    _ticketing_type: TicketingType,
}

impl<'r> From<CheckedRow<'r>> for StopTimeRow<'r> {
    fn from(row: CheckedRow<'r>) -> Self {
        StopTimeRow {
            trip_id: row.trip_id,
            arrival_time: row.arrival_time,
            departure_time: row.departure_time,
            stop_id: row.stop_id,
            stop_sequence: row.stop_sequence,
        }
    }
}

/// Values of a checked-then-forgotten column that [`CheckedRow`] surely accepts.
#[derive(Clone, Copy)]
enum Accepts {
    /// `pickup_type`, `drop_off_type`, `continuous_pickup`, `continuous_drop_off`.
    EmptyOrZeroToThree,
    /// `timepoint`.
    EmptyZeroOrOne,
    /// `ticketing_type`: a present but empty value is refused by gtfs-structures.
    ZeroOrOne,
    /// `shape_dist_traveled`.
    EmptyOrFloat,
}

impl Accepts {
    fn accepts(self, value: &str) -> bool {
        match self {
            Accepts::EmptyOrZeroToThree => matches!(value, "" | "0" | "1" | "2" | "3"),
            Accepts::EmptyZeroOrOne => matches!(value, "" | "0" | "1"),
            Accepts::ZeroOrOne => matches!(value, "0" | "1"),
            Accepts::EmptyOrFloat => {
                value.is_empty() || is_plain_decimal(value) || value.parse::<f32>().is_ok()
            }
        }
    }
}

/// Digits with at most one `.` and at least one digit (`12`, `12.5`, `.5`, `5.`): a value
/// `f32`'s parser surely takes, checked faster than parsing it.
fn is_plain_decimal(value: &str) -> bool {
    let mut dots = 0;
    let mut digits = 0;
    for b in value.bytes() {
        match b {
            b'0'..=b'9' => digits += 1,
            b'.' => dots += 1,
            _ => return false,
        }
    }
    dots <= 1 && digits > 0
}

/// The header's column positions, for reading a row by position instead of by name (the
/// serde way costs a name lookup per field per row). Only made when every column of
/// [`CheckedRow`] appears at most once and the five the snapshot uses are all there.
struct Columns {
    width: usize,
    trip_id: usize,
    arrival_time: usize,
    departure_time: usize,
    stop_id: usize,
    stop_sequence: usize,
    checked: Vec<(usize, Accepts)>,
}

impl Columns {
    fn of(headers: &csv::StringRecord) -> Option<Columns> {
        let position = |name: &str| -> Result<Option<usize>, ()> {
            let mut found = headers.iter().enumerate().filter(|(_, h)| *h == name);
            match (found.next(), found.next()) {
                (Some((i, _)), None) => Ok(Some(i)),
                (None, _) => Ok(None),
                (Some(_), Some(_)) => Err(()),
            }
        };
        let required = |name: &str| position(name).ok().flatten();
        let mut checked = Vec::new();
        for (name, accepts) in [
            ("pickup_type", Accepts::EmptyOrZeroToThree),
            ("drop_off_type", Accepts::EmptyOrZeroToThree),
            ("continuous_pickup", Accepts::EmptyOrZeroToThree),
            ("continuous_drop_off", Accepts::EmptyOrZeroToThree),
            ("timepoint", Accepts::EmptyZeroOrOne),
            ("ticketing_type", Accepts::ZeroOrOne),
            ("shape_dist_traveled", Accepts::EmptyOrFloat),
        ] {
            if let Some(i) = position(name).ok()? {
                checked.push((i, accepts));
            }
        }
        position("stop_headsign").ok()?;
        Some(Columns {
            width: headers.len(),
            trip_id: required("trip_id")?,
            arrival_time: required("arrival_time")?,
            departure_time: required("departure_time")?,
            stop_id: required("stop_id")?,
            stop_sequence: required("stop_sequence")?,
            checked,
        })
    }

    /// The row read by position, when its every value is one that [`CheckedRow`] reads the
    /// same way; `None` sends the row the serde way (which then reads it or names its
    /// error).
    fn fast<'r>(&self, record: &'r csv::StringRecord) -> Option<StopTimeRow<'r>> {
        if record.len() != self.width {
            return None;
        }
        let time = |i: usize| -> Option<Option<u32>> {
            match &record[i] {
                "" => Some(None),
                text => fast_time(text).map(Some),
            }
        };
        let sequence = &record[self.stop_sequence];
        if sequence.is_empty()
            || sequence.len() > 9
            || !sequence.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        if !self.checked.iter().all(|&(i, a)| a.accepts(&record[i])) {
            return None;
        }
        Some(StopTimeRow {
            trip_id: &record[self.trip_id],
            arrival_time: time(self.arrival_time)?,
            departure_time: time(self.departure_time)?,
            stop_id: &record[self.stop_id],
            stop_sequence: sequence.parse().ok()?,
        })
    }
}

/// What a read of the whole file saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct RowCount {
    /// Data rows (the header is not one).
    pub rows: usize,
    /// Rows shorter than their header that were padded with empty fields.
    pub padded: usize,
}

impl<'z> StopTimesFile<'z> {
    /// Finds `stop_times.txt` in the zip: `None` when the archive has none (or cannot be
    /// opened, which the caller has already reported).
    pub fn find(zip: ZipBytes<'z>) -> Option<Self> {
        let archive = zip::ZipArchive::new(zip.reader()).ok()?;
        // As gtfs-structures: a member named stop_times.txt in any folder; the last wins.
        let member = (0..archive.len()).rev().find(|&i| {
            archive.name_for_index(i).is_some_and(|name| {
                std::path::Path::new(name).file_name() == Some(std::ffi::OsStr::new(FILE))
            })
        })?;
        Some(StopTimesFile { zip, member })
    }

    /// Reads the rows in file order and gives each to `each`, until `each` breaks (the count
    /// is then of the rows read so far). Stops at the first row that does not parse, with
    /// the error that names it.
    pub fn for_each_row(
        &self,
        mut each: impl FnMut(StopTimeRow<'_>) -> ControlFlow<()>,
    ) -> Result<RowCount, FeedError> {
        let mut archive =
            zip::ZipArchive::new(self.zip.reader()).map_err(|e| FeedError::Zip(e.to_string()))?;
        let mut member = archive
            .by_index(self.member)
            .map_err(|e| FeedError::Zip(e.to_string()))?;
        let mut bom = [0u8; 3];
        member.read_exact(&mut bom).map_err(|e| {
            FeedError::from_gtfs(gtfs_structures::Error::NamedFileIO {
                file_name: FILE.to_owned(),
                source: Box::new(e),
            })
        })?;
        let head: &[u8] = if bom == [0xef, 0xbb, 0xbf] { &[] } else { &bom };
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .buffer_capacity(1 << 16)
            .from_reader(head.chain(member));
        let headers: csv::StringRecord = reader
            .headers()
            .map_err(|e| csv_error(e, None))?
            .iter()
            .map(str::trim)
            .collect();
        let columns = Columns::of(&headers);
        let mut count = RowCount::default();
        // Inflating and splitting the CSV take as long as reading the rows and folding
        // them: the first runs on a thread of its own, a batch of records ahead.
        std::thread::scope(|scope| {
            let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Batch>(BATCHES_AHEAD);
            let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<csv::StringRecord>>();
            scope.spawn(move || split_records(reader, full_tx, empty_rx));
            for batch in full_rx {
                let Batch { mut records, end } = batch;
                for record in &mut records {
                    count.rows += 1;
                    let flow = read_row(record, &headers, columns.as_ref(), &mut count, &mut each)?;
                    if flow.is_break() {
                        return Ok(count);
                    }
                }
                match end {
                    None => {
                        // The splitter may be gone already: then the batch is just dropped.
                        let _ = empty_tx.send(records);
                    }
                    Some(Ok(())) => break,
                    Some(Err(e)) => return Err(csv_error(e, None)),
                }
            }
            Ok(count)
        })
    }
}

/// Records split from the file, and after the last one, how the file ended.
struct Batch {
    records: Vec<csv::StringRecord>,
    /// `None`: more batches follow. `Some(Ok)`: the end of the file. `Some(Err)`: the CSV
    /// error that stopped the split.
    end: Option<Result<(), csv::Error>>,
}

/// Records per [`Batch`], and batches split ahead of the reader.
const BATCH_RECORDS: usize = 1024;
const BATCHES_AHEAD: usize = 4;

/// The splitting thread: fills batches (reusing the ones given back) until the file ends,
/// a CSV error, or the reader stops listening.
fn split_records<R: Read>(
    mut reader: csv::Reader<R>,
    full: std::sync::mpsc::SyncSender<Batch>,
    empty: std::sync::mpsc::Receiver<Vec<csv::StringRecord>>,
) {
    loop {
        let mut records = empty.try_recv().unwrap_or_default();
        records.resize_with(BATCH_RECORDS, csv::StringRecord::new);
        let mut filled = 0;
        let mut end = None;
        while filled < BATCH_RECORDS {
            match reader.read_record(&mut records[filled]) {
                Ok(true) => filled += 1,
                Ok(false) => {
                    end = Some(Ok(()));
                    break;
                }
                Err(e) => {
                    end = Some(Err(e));
                    break;
                }
            }
        }
        records.truncate(filled);
        let last = end.is_some();
        if full.send(Batch { records, end }).is_err() || last {
            return;
        }
    }
}

/// One record to a row for `each`: trimmed and padded as gtfs-structures' reader would
/// need, read by position when it can be, else the serde way (or its error).
fn read_row(
    record: &mut csv::StringRecord,
    headers: &csv::StringRecord,
    columns: Option<&Columns>,
    count: &mut RowCount,
    each: &mut impl FnMut(StopTimeRow<'_>) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, FeedError> {
    // As gtfs-structures' reader does (`csv::Trim::Fields`), but only for the rare record
    // that has something to trim: trimming rebuilds the record.
    if record
        .iter()
        .any(|f| f.starts_with(char::is_whitespace) || f.ends_with(char::is_whitespace))
    {
        record.trim();
    }
    if record.len() < headers.len() {
        count.padded += 1;
        while record.len() < headers.len() {
            record.push_field("");
        }
    }
    let record: &csv::StringRecord = record;
    Ok(match columns.and_then(|c| c.fast(record)) {
        Some(row) => each(row),
        None => match record.deserialize::<CheckedRow>(Some(headers)) {
            Ok(row) => each(row.into()),
            Err(e) => return Err(csv_error(e, Some((headers, record)))),
        },
    })
}

/// A CSV error of this file, with the row when there is one, worded as every other file's.
fn csv_error(
    source: csv::Error,
    row: Option<(&csv::StringRecord, &csv::StringRecord)>,
) -> FeedError {
    FeedError::from_gtfs(gtfs_structures::Error::CSVError {
        file_name: FILE.to_owned(),
        source,
        line_in_error: row.map(|(headers, values)| gtfs_structures::error::LineError {
            headers: headers.iter().map(String::from).collect(),
            values: values.iter().map(String::from).collect(),
        }),
    })
}

/// An optional GTFS time, as gtfs-structures reads `arrival_time` and `departure_time`.
fn optional_time<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let text: Option<&str> = Deserialize::deserialize(deserializer)?;
    text.map(|t| parse_time(t).map_err(serde::de::Error::custom))
        .transpose()
}

/// [`parse_time`] for the usual text, digits only (`H:MM:SS`, up to 9 digits of hours):
/// `None` sends anything else to [`parse_time`].
fn fast_time(text: &str) -> Option<u32> {
    let b = text.as_bytes();
    let n = b.len();
    if !(7..=15).contains(&n) || b[n - 3] != b':' || b[n - 6] != b':' {
        return None;
    }
    let digits = |r: &[u8]| -> Option<u32> {
        r.iter().try_fold(0u32, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let (h, m, s) = (
        digits(&b[..n - 6])?,
        digits(&b[n - 5..n - 3])?,
        digits(&b[n - 2..])?,
    );
    h.checked_mul(3600)?.checked_add(m * 60 + s)
}

/// `H:MM:SS` (hours may exceed 24 and have any number of digits) in seconds: the rule of
/// gtfs-structures' `parse_time`, with the same error, and no overflow.
fn parse_time(text: &str) -> Result<u32, gtfs_structures::Error> {
    let invalid = || gtfs_structures::Error::InvalidTime(text.to_owned());
    if text.len() < 7 {
        return Err(invalid());
    }
    let mut parts = text.split(':');
    let (Some(h), Some(m), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    if m.len() != 2 || s.len() != 2 {
        return Err(invalid());
    }
    let (h, m, s): (u32, u32, u32) = match (h.parse(), m.parse(), s.parse()) {
        (Ok(h), Ok(m), Ok(s)) => (h, m, s),
        _ => return Err(invalid()),
    };
    h.checked_mul(3600)
        .and_then(|t| t.checked_add(m * 60 + s))
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::parse_time;
    use super::*;
    use crate::feed::testkit::{AGENCY, ROUTES, TRIPS, fixture, minimal_feed, zip_of};

    /// Every row, as gtfs-structures reads it whole with `RawStopTime`.
    fn reference_rows(zip: &[u8]) -> Result<Vec<gtfs_structures::RawStopTime>, String> {
        gtfs_structures::GtfsReader::default()
            .read_shapes(false)
            .raw()
            .read_from_reader(std::io::Cursor::new(zip))
            .map_err(|e| e.to_string())?
            .stop_times
            .map_err(|e| FeedError::from_gtfs(e).to_string())
    }

    type Kept = (String, Option<u32>, Option<u32>, String, u32);

    fn streamed_rows(zip: &[u8]) -> Result<Vec<Kept>, String> {
        let file = StopTimesFile::find(ZipBytes::from(zip)).ok_or("no stop_times.txt")?;
        let mut rows = Vec::new();
        file.for_each_row(|r| {
            rows.push((
                r.trip_id.to_owned(),
                r.arrival_time,
                r.departure_time,
                r.stop_id.to_owned(),
                r.stop_sequence,
            ));
            ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
        Ok(rows)
    }

    /// The stream gives exactly the rows gtfs-structures reads, on every fixture feed with
    /// rows that parse as they are (sample-feed has short rows: see below).
    #[test]
    fn the_stream_reads_what_gtfs_structures_reads() {
        for (name, zip) in [
            ("bart", fixture!("bart")),
            ("caltrain", fixture!("caltrain")),
            ("cdmx", fixture!("cdmx")),
            ("wmata", fixture!("wmata")),
        ] {
            let want: Vec<Kept> = reference_rows(&zip)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .into_iter()
                .map(|r| {
                    (
                        r.trip_id,
                        r.arrival_time,
                        r.departure_time,
                        r.stop_id,
                        r.stop_sequence,
                    )
                })
                .collect();
            assert!(!want.is_empty(), "{name}");
            assert_eq!(streamed_rows(&zip).unwrap(), want, "{name}");
        }
    }

    /// Broken values fail with the very message gtfs-structures' read gives (file, line,
    /// column, the row).
    #[test]
    fn a_broken_row_fails_as_gtfs_structures_says() {
        let header = "trip_id,arrival_time,departure_time,stop_id,stop_sequence,pickup_type,timepoint,shape_dist_traveled";
        for bad in [
            "T1,08:00:00,08:00:00,S1,x,0,1,",
            "T1,8:00,08:00:00,S1,1,0,1,",
            "T1,08:00:00,08:00:00,S1,1,zz,1,",
            "T1,08:00:00,08:00:00,S1,1,0,7.5,",
            "T1,08:00:00,08:00:00,S1,1,0,1,far",
            "T1,08:0:00,08:00:00,S1,1,0,1,",
        ] {
            let stop_times = format!("{header}\nT1,07:00:00,07:00:00,S1,0,0,1,\n{bad}\n");
            let zip = minimal_feed(ROUTES, TRIPS, &stop_times);
            let want = reference_rows(&zip).expect_err(bad);
            assert_eq!(streamed_rows(&zip).expect_err(bad), want, "{bad}");
        }
    }

    /// Short rows, which gtfs-structures refuses, are padded with empty fields and
    /// counted; one that still does not parse is the error of the padded row.
    #[test]
    fn short_rows_are_padded() {
        let stop_times = "trip_id,stop_id,stop_sequence,pickup_type,arrival_time,departure_time\nT1,S1,1,0,07:00:00,07:00:00\nT1,S2,2\nT1,S3,3,0,07:20:00,07:20:00\n";
        let zip = minimal_feed(ROUTES, TRIPS, stop_times);
        assert!(reference_rows(&zip).is_err());
        let mut times = Vec::new();
        let count = StopTimesFile::find(ZipBytes::from(&zip[..]))
            .unwrap()
            .for_each_row(|r| {
                times.push((r.stop_sequence, r.arrival_time));
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(count, RowCount { rows: 3, padded: 1 });
        assert_eq!(
            times,
            [(1, Some(7 * 3600)), (2, None), (3, Some(7 * 3600 + 1200))]
        );

        let stop_times = "trip_id,arrival_time,departure_time,stop_id,stop_sequence\nT1,07:00:00,07:00:00,S1,1\nT1,07:10:00,07:10:00,S2\n";
        let zip = minimal_feed(ROUTES, TRIPS, stop_times);
        let err = StopTimesFile::find(ZipBytes::from(&zip[..]))
            .unwrap()
            .for_each_row(|_| ControlFlow::Continue(()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "stop_times.txt line 3: column stop_sequence: cannot parse integer from empty string (row has 5 fields, header 5: T1,07:10:00,07:10:00,S2,)"
        );
    }

    /// The by-position read takes a row only if the by-name read gives the same row: tried
    /// with odd values in every column, and on every row of the fixture feeds.
    #[test]
    fn the_fast_read_agrees_with_the_checked_read() {
        let header = "trip_id,arrival_time,departure_time,stop_id,stop_sequence,stop_headsign,pickup_type,drop_off_type,continuous_pickup,continuous_drop_off,shape_dist_traveled,timepoint,ticketing_type";
        let headers: csv::StringRecord = header.split(',').collect();
        let columns = Columns::of(&headers).unwrap();
        let base = [
            "T1", "08:00:00", "08:01:00", "S1", "3", "", "0", "1", "", "", "1.5", "1", "0",
        ];
        let odd = [
            "",
            " ",
            "0",
            "1",
            "2",
            "3",
            "4",
            "-1",
            "+1",
            "0x1f",
            "1e3",
            "NaN",
            "inf",
            "07",
            "8:00:00",
            "08:00:00",
            "123:59:59",
            "1193046:28:15",
            "1193047:00:00",
            "08:0:00",
            "+8:00:00",
            "08:00:00:00",
            "999999999:00:00",
            "0000000008:00:00",
            "4294967295",
            "4294967296",
            "é",
            "\u{0}",
            ".",
            "5.",
            ".5",
            "1.2.3",
            "12.750",
            "-0.5",
        ];
        let mut taken = 0;
        for column in 0..base.len() {
            for value in odd {
                let mut fields = base;
                fields[column] = value;
                let record: csv::StringRecord = fields.iter().collect();
                let checked = record
                    .deserialize::<CheckedRow>(Some(&headers))
                    .map(StopTimeRow::from);
                if let Some(fast) = columns.fast(&record) {
                    taken += 1;
                    assert_eq!(Ok(fast), checked.map_err(|e| e.to_string()), "{fields:?}");
                }
            }
        }
        assert!(taken > base.len() * 5, "{taken}");
        // Duplicated or missing columns: no by-position read at all.
        for header in [
            "trip_id,arrival_time,departure_time,stop_id,stop_sequence,pickup_type,pickup_type",
            "trip_id,arrival_time,stop_id,stop_sequence",
            "trip_id,arrival_time,departure_time,stop_id,stop_sequence,stop_headsign,stop_headsign",
        ] {
            let headers: csv::StringRecord = header.split(',').collect();
            assert!(Columns::of(&headers).is_none(), "{header}");
        }
    }

    #[test]
    fn times_follow_the_gtfs_structures_rule_without_overflow() {
        assert_eq!(parse_time("08:05:09").unwrap(), 8 * 3600 + 5 * 60 + 9);
        assert_eq!(parse_time("125:00:00").unwrap(), 125 * 3600);
        assert_eq!(parse_time("1193046:28:15").unwrap(), u32::MAX);
        for bad in [
            "1193047:00:00",
            "8:5:09",
            "08:05",
            "0a:00:00",
            "08:05:09:00",
            "",
        ] {
            assert_eq!(
                parse_time(bad).unwrap_err().to_string(),
                format!("'{bad}' is not a valid time; HH:MM:SS format is expected."),
            );
        }
    }

    #[test]
    fn the_member_is_found_in_a_folder_and_a_bom_is_skipped() {
        let stop_times = "\u{feff}trip_id, arrival_time,departure_time,stop_id,stop_sequence\nT1,07:00:00,07:00:00,S1,1\n T2 , 07:00:00,07:00:00 ,\u{a0}S1,\t2\n";
        let zip = zip_of(&[("feed/stop_times.txt", stop_times), ("agency.txt", AGENCY)]);
        let file = StopTimesFile::find(ZipBytes::from(&zip[..])).unwrap();
        let mut ids = Vec::new();
        let count = file
            .for_each_row(|r| {
                ids.push(r.trip_id.to_owned());
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(count.rows, 2);
        // Fields and headers trimmed, as gtfs-structures does.
        assert_eq!(ids, ["T1", "T2"]);
        let whole = zip_of(&[("stop_times.txt", stop_times)]);
        let want: Vec<_> = gtfs_structures::GtfsReader::default()
            .raw()
            .read_from_reader(std::io::Cursor::new(&whole))
            .unwrap()
            .stop_times
            .unwrap()
            .into_iter()
            .map(|r| (r.trip_id, r.stop_id, r.arrival_time, r.stop_sequence))
            .collect();
        let mut got = Vec::new();
        StopTimesFile::find(ZipBytes::from(&whole[..]))
            .unwrap()
            .for_each_row(|r| {
                got.push((
                    r.trip_id.to_owned(),
                    r.stop_id.to_owned(),
                    r.arrival_time,
                    r.stop_sequence,
                ));
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(got, want);
        assert!(
            StopTimesFile::find(ZipBytes::from(&zip_of(&[("agency.txt", AGENCY)])[..])).is_none()
        );
    }
}
