//! Reading a GTFS zip: from bytes to the tables the service uses, or a [`FeedError`] that
//! says what is wrong with the feed.
//!
//! This is the only place that talks to gtfs-structures' reader, so everything a zip can
//! do wrong is handled here, and the steps after it ([`super::network`]) work on rows that
//! are known to be there:
//!
//! - the zip is read with the raw reader ([`gtfs_structures::RawGtfs`]: one `Vec` of rows
//!   per file), without `shapes.txt`, and without `stop_times.txt`, which is only found
//!   here and read later as a stream ([`super::stop_times`]). Why not [`gtfs_structures::Gtfs`]: it re-links every
//!   stop_time to an `Arc<Stop>`, converts files this service never uses (fares, shapes,
//!   pathways, levels...) and refuses the whole feed when one of those is broken;
//! - a missing required file (`agency.txt`, `routes.txt`, `stops.txt`, `trips.txt`,
//!   `stop_times.txt`), a corrupt zip, or a row that does not parse in one of the files
//!   used is a [`FeedError`] naming the file, line and column when known;
//! - a broken optional file this service does not use (fares, shapes, transfers...) is a
//!   note in `Tables::notes`, not an error;
//! - two repairs: rows shorter than their header are padded with empty fields (real feeds
//!   have them and gtfs-structures refuses them), and a panic of the reader on a malformed
//!   value is this feed's error, not the process's.

use gtfs_structures::{
    Agency, Calendar, CalendarDate, GtfsReader, RawFrequency, RawGtfs, RawTrip, Route, Stop,
};

use super::error::FeedError;
use super::spool::ZipBytes;
use super::stop_times::StopTimesFile;

/// The GTFS files this service uses, each read whole and parsed (optional files that are
/// absent are empty), except `stop_times.txt`, the largest, which is found but not read.
pub(super) struct Tables<'z> {
    pub agencies: Vec<Agency>,
    pub routes: Vec<Route>,
    pub stops: Vec<Stop>,
    pub trips: Vec<RawTrip>,
    pub stop_times: StopTimesFile<'z>,
    pub frequencies: Vec<RawFrequency>,
    pub calendar: Vec<Calendar>,
    pub calendar_dates: Vec<CalendarDate>,
    /// Problems that were tolerated (unreadable files this service does not use), for the
    /// feed's one warning.
    pub notes: Vec<String>,
}

/// Reads the zip's tables. On a CSV error it tries once more with short rows padded:
/// gtfs-structures refuses rows with fewer fields than the header, which real feeds have
/// (sample-feed's stop_times). CPU-bound, as the caller is.
pub(super) fn tables<'z>(gtfs_id: &str, bytes: ZipBytes<'z>) -> Result<Tables<'z>, FeedError> {
    match read_once(bytes, bytes) {
        Err(err @ FeedError::Csv { .. }) => match pad_short_rows(bytes) {
            Some((padded, rows)) => {
                tracing::warn!(
                    gtfs_id,
                    rows,
                    "feed has CSV rows shorter than their header; padded them with empty fields"
                );
                // The padded copy only serves the other files: stop_times.txt is read
                // from the original, and pads its own rows.
                read_once(ZipBytes::Memory(&padded), bytes)
            }
            None => Err(err),
        },
        other => other,
    }
}

/// One read of the zip with gtfs-structures, then [`check`] of its files; `stop_times.txt`
/// is looked up in `original` (the same zip, unless `bytes` is a repaired copy).
fn read_once<'z>(bytes: ZipBytes<'_>, original: ZipBytes<'z>) -> Result<Tables<'z>, FeedError> {
    // gtfs-structures 0.52 panics on some malformed values: a 6-byte route_color that is
    // not ASCII (`parse_color` slices inside a character), an hour of 1193047 or more
    // (`parse_time` overflows u32; debug builds panic). That is this feed's error, not the
    // process's.
    let raw = std::panic::catch_unwind(|| {
        GtfsReader::default()
            .read_shapes(false)
            .read_stop_times(false)
            .raw()
            .read_from_reader(bytes.reader())
    })
    .map_err(|panic| {
        FeedError::Invalid(format!(
            "the GTFS reader failed on a malformed value: {}",
            panic_message(&*panic).chars().take(300).collect::<String>()
        ))
    })?
    .map_err(FeedError::from_gtfs)?;
    check(raw, StopTimesFile::find(original))
}

/// The files of a raw read, checked: every missing required file at once, then the first
/// unreadable file this service uses, is the error; an unreadable file it does not use is
/// only noted.
fn check(raw: RawGtfs, stop_times: Option<StopTimesFile<'_>>) -> Result<Tables<'_>, FeedError> {
    let RawGtfs {
        calendar,
        calendar_dates,
        stops,
        routes,
        trips,
        agencies,
        frequencies,
        shapes,
        fare_attributes,
        fare_rules,
        fare_products,
        fare_media,
        rider_categories,
        transfers,
        pathways,
        levels,
        feed_info,
        translations,
        ticketing_deep_links,
        ticketing_identifiers,
        attributions,
        licenses,
        ..
    } = raw;

    // Files this service does not use: a broken one is noted, not fatal.
    let mut notes = Vec::new();
    let unused = [
        ("shapes.txt", shapes.map(|r| r.map(drop))),
        ("fare_attributes.txt", fare_attributes.map(|r| r.map(drop))),
        ("fare_rules.txt", fare_rules.map(|r| r.map(drop))),
        ("fare_products.txt", fare_products.map(|r| r.map(drop))),
        ("fare_media.txt", fare_media.map(|r| r.map(drop))),
        (
            "rider_categories.txt",
            rider_categories.map(|r| r.map(drop)),
        ),
        ("transfers.txt", transfers.map(|r| r.map(drop))),
        ("pathways.txt", pathways.map(|r| r.map(drop))),
        ("levels.txt", levels.map(|r| r.map(drop))),
        ("feed_info.txt", feed_info.map(|r| r.map(drop))),
        ("translations.txt", translations.map(|r| r.map(drop))),
        (
            "ticketing_deep_links.txt",
            ticketing_deep_links.map(|r| r.map(drop)),
        ),
        (
            "ticketing_identifiers.txt",
            ticketing_identifiers.map(|r| r.map(drop)),
        ),
        ("attributions.txt", attributions.map(|r| r.map(drop))),
        ("licenses.txt", licenses.map(|r| r.map(drop))),
    ];
    for (file, result) in unused {
        if let Some(Err(e)) = result {
            notes.push(format!(
                "ignored unreadable {file} (not used here): {}",
                FeedError::from_gtfs(e)
            ));
        }
    }

    // Every missing required file at once, then the first unreadable one.
    let missing: Vec<String> = [
        ("agency.txt", is_missing(&agencies)),
        ("routes.txt", is_missing(&routes)),
        ("stops.txt", is_missing(&stops)),
        ("trips.txt", is_missing(&trips)),
        ("stop_times.txt", stop_times.is_none()),
    ]
    .into_iter()
    .filter(|(_, missing)| *missing)
    .map(|(file, _)| file.to_owned())
    .collect();
    let Some(stop_times) = stop_times.filter(|_| missing.is_empty()) else {
        return Err(FeedError::MissingFiles(missing));
    };
    Ok(Tables {
        agencies: agencies.map_err(FeedError::from_gtfs)?,
        routes: routes.map_err(FeedError::from_gtfs)?,
        stops: stops.map_err(FeedError::from_gtfs)?,
        trips: trips.map_err(FeedError::from_gtfs)?,
        stop_times,
        frequencies: optional(frequencies)?,
        calendar: optional(calendar)?,
        calendar_dates: optional(calendar_dates)?,
        notes,
    })
}

fn is_missing<T>(file: &Result<Vec<T>, gtfs_structures::Error>) -> bool {
    matches!(file, Err(gtfs_structures::Error::MissingFile(_)))
}

fn optional<T>(file: Option<Result<Vec<T>, gtfs_structures::Error>>) -> Result<Vec<T>, FeedError> {
    file.unwrap_or_else(|| Ok(Vec::new()))
        .map_err(FeedError::from_gtfs)
}

/// A copy of the zip with every CSV row shorter than its header padded with empty
/// fields, and how many rows were padded; `None` when no row is short (or the zip cannot be
/// read, in which case the original error stands).
fn pad_short_rows(zip_bytes: ZipBytes<'_>) -> Option<(Vec<u8>, usize)> {
    use std::io::{Read, Write};
    let mut archive = zip::ZipArchive::new(zip_bytes.reader()).ok()?;
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut padded = 0;
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).ok()?;
        let name = member.name().to_owned();
        let mut data = Vec::new();
        member.read_to_end(&mut data).ok()?;
        if name.ends_with(".txt") {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .has_headers(false)
                .from_reader(&data[..]);
            let mut writer = csv::Writer::from_writer(Vec::new());
            let mut width = None;
            for record in reader.records() {
                let mut fields: Vec<String> = record.ok()?.iter().map(str::to_owned).collect();
                let width = *width.get_or_insert(fields.len());
                if fields.len() < width {
                    padded += 1;
                    fields.resize(width, String::new());
                }
                writer.write_record(&fields).ok()?;
            }
            data = writer.into_inner().ok()?;
        }
        out.start_file(name, zip::write::SimpleFileOptions::default())
            .ok()?;
        out.write_all(&data).ok()?;
    }
    let bytes = out.finish().ok()?.into_inner();
    (padded > 0).then_some((bytes, padded))
}

/// The text a panic carried (`panic!` with a literal or a formatted message).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("no message")
}

#[cfg(test)]
mod tests {
    //! Expected values come from the zips themselves, read with the `zip` and `csv` crates
    //! (not gtfs-structures, not the code under test): see [`crate::feed::testkit`].

    use super::*;
    use crate::feed::model::format_gtfs_time;
    use crate::feed::snapshot::FeedSnapshot;
    use crate::feed::testkit::*;
    use jiff::civil::date;
    use std::io::{Read, Write};

    #[test]
    fn cdmx_loads_with_bom_quotes_frequencies_and_a_stray_file() {
        let bytes = fixture!("cdmx");
        assert!(read_member(&bytes, "desktop.ini").is_some());
        assert!(
            read_member(&bytes, "agency.txt")
                .unwrap()
                .starts_with(b"\xEF\xBB\xBF")
        );
        let snapshot = assert_counts_match_csv("cdmx", &bytes);

        // BOM: the first column of agency.txt is agency_id, read as such.
        let agencies = table(&bytes, "agency.txt").unwrap();
        let ids: Vec<Option<&str>> = agencies
            .rows
            .iter()
            .map(|r| agencies.get(r, "agency_id"))
            .collect();
        let got: Vec<Option<&str>> = snapshot
            .agencies
            .iter()
            .map(|a| a.agency_id.as_deref())
            .collect();
        assert_eq!(got, ids);
        assert!(snapshot.agencies.iter().any(|a| a.name == "Metrobús"));

        // Frequencies: one window per trip, as in frequencies.txt.
        let freq = table(&bytes, "frequencies.txt").unwrap();
        for row in &freq.rows {
            let trip = snapshot.trip(freq.get(row, "trip_id").unwrap()).unwrap();
            assert_eq!(trip.frequencies.len(), 1);
            let w = &trip.frequencies[0];
            assert_eq!(
                w.start_time,
                parse_time(freq.get(row, "start_time").unwrap())
            );
            assert_eq!(w.end_time, parse_time(freq.get(row, "end_time").unwrap()));
            assert_eq!(
                w.headway_secs.to_string(),
                freq.get(row, "headway_secs").unwrap()
            );
            assert_eq!(w.exact_times, freq.get(row, "exact_times") == Some("1"));
        }

        // Quoted fields: the long name of a route with a quoted, comma-holding desc.
        let routes = table(&bytes, "routes.txt").unwrap();
        for row in &routes.rows {
            let id = routes.get(row, "route_id").unwrap();
            let summary = snapshot.route(id).unwrap();
            assert_eq!(
                summary.long_name.as_deref(),
                routes.get(row, "route_long_name")
            );
            assert_eq!(
                summary.short_name.as_deref(),
                routes.get(row, "route_short_name")
            );
            assert_eq!(
                summary.color.as_deref(),
                routes
                    .get(row, "route_color")
                    .map(|c| c.to_ascii_lowercase())
                    .as_deref()
            );
        }

        let route = "ROUTE_36490";
        assert_eq!(
            snapshot.route_detail(route).unwrap().trip_count,
            csv_trips_of_route(&bytes, route).len()
        );
        assert_eq!(snapshot.trips_of_route(route).count(), 44);
        // No direction_id in cdmx: pattern ids say "x".
        assert!(
            snapshot.route_detail(route).unwrap().patterns[0]
                .pattern_id
                .starts_with("ROUTE_36490:x:")
        );
    }

    /// gtfs-structures refuses the sample feed: 13 rows of its stop_times.txt have fewer
    /// fields than the header. The snapshot pads them (13 rows) and loads the feed.
    #[test]
    fn sample_feed_short_rows_are_padded() {
        let bytes = fixture!("sample-feed");
        let (_, rows) = pad_short_rows(bytes[..].into()).expect("short rows found");
        assert_eq!(rows, 13);
        // A feed without short rows is left alone.
        assert!(pad_short_rows(fixture!("caltrain")[..].into()).is_none());
    }

    /// The sample feed, short rows and all, matches its CSVs.
    #[test]
    fn sample_feed_with_padded_rows_matches_the_csv() {
        let bytes = fixture!("sample-feed");
        let snapshot = assert_counts_match_csv("sample-feed", &bytes);
        assert_eq!(snapshot.counts.frequencies, 11);
        assert_eq!(snapshot.counts.stop_times, 28);
        let stba = snapshot.trip("STBA").unwrap();
        assert_eq!(stba.frequencies.len(), 1);
        assert_eq!(format_gtfs_time(stba.frequencies[0].start_time), "06:00:00");
        // FULLW runs every day of 2007-2010 except 2007-06-04.
        let days = [date(2007, 6, 4), date(2007, 6, 5), date(2011, 1, 1)];
        let totals = assert_trips_on_match_csv("sample-feed", &bytes, &days);
        assert!(totals[1] > totals[0], "{totals:?}");
        assert_eq!(totals[2], 0);
    }

    #[test]
    fn random_bytes_are_a_zip_error() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let err = FeedSnapshot::from_zip_bytes("x", "v", "s", &bytes).unwrap_err();
        assert!(matches!(err, FeedError::Zip(_)), "{err:?}");
        assert!(
            err.to_string().starts_with("not a readable zip archive"),
            "{err}"
        );
        let err = FeedSnapshot::from_zip_bytes("x", "v", "s", &[]).unwrap_err();
        assert!(matches!(err, FeedError::Zip(_)), "{err:?}");
    }

    #[test]
    fn a_truncated_zip_is_a_clear_error() {
        let bytes = fixture!("caltrain");
        let err =
            FeedSnapshot::from_zip_bytes("x", "v", "s", &bytes[..bytes.len() / 2]).unwrap_err();
        assert!(matches!(err, FeedError::Zip(_)), "{err:?}");
    }

    #[test]
    fn an_empty_zip_names_every_missing_required_file() {
        let err = FeedSnapshot::from_zip_bytes("x", "v", "s", &zip_of(&[])).unwrap_err();
        assert_eq!(
            err,
            FeedError::MissingFiles(
                [
                    "agency.txt",
                    "routes.txt",
                    "stops.txt",
                    "trips.txt",
                    "stop_times.txt"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        assert_eq!(
            err.to_string(),
            "required file(s) missing from the feed: agency.txt, routes.txt, stops.txt, trips.txt, stop_times.txt"
        );
    }

    #[test]
    fn a_zip_without_routes_txt_says_so() {
        let bytes = zip_of(&[
            ("agency.txt", AGENCY),
            ("stops.txt", STOPS),
            ("trips.txt", TRIPS),
            ("stop_times.txt", STOP_TIMES),
        ]);
        let err = FeedSnapshot::from_zip_bytes("x", "v", "s", &bytes).unwrap_err();
        assert_eq!(err, FeedError::MissingFiles(vec!["routes.txt".into()]));
    }

    #[test]
    fn a_broken_routes_row_names_file_line_and_column() {
        let routes = "route_id,agency_id,route_short_name,route_long_name,route_type\nR1,A,1,One,3\nR2,A,2,Two,bus\n";
        let err =
            FeedSnapshot::from_zip_bytes("x", "v", "s", &minimal_feed(routes, TRIPS, STOP_TIMES))
                .unwrap_err();
        let FeedError::Csv { file, line, detail } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(file, "routes.txt");
        assert_eq!(*line, Some(3));
        assert!(detail.starts_with("column route_type: "), "{detail}");
        assert!(detail.contains("R2,A,2,Two,bus"), "{detail}");
        assert!(
            err.to_string()
                .starts_with("routes.txt line 3: column route_type"),
            "{err}"
        );
    }

    #[test]
    fn garbage_inside_a_member_is_a_csv_error_not_a_panic() {
        let garbage = String::from_utf8_lossy(&[0xff, 0xfe, b'"', b'\n', 0, 1, 2]).into_owned();
        for file in ["routes.txt", "stop_times.txt", "calendar.txt"] {
            let mut files = vec![
                ("agency.txt", AGENCY),
                ("stops.txt", STOPS),
                ("routes.txt", ROUTES),
                ("trips.txt", TRIPS),
                ("stop_times.txt", STOP_TIMES),
                ("calendar.txt", CALENDAR),
            ];
            files.iter_mut().find(|(n, _)| *n == file).unwrap().1 = &garbage;
            let err = FeedSnapshot::from_zip_bytes("x", "v", "s", &zip_of(&files)).unwrap_err();
            assert!(err.to_string().starts_with(file), "{err}");
        }
        // An empty (0-byte) required file.
        let err = FeedSnapshot::from_zip_bytes("x", "v", "s", &minimal_feed("", TRIPS, STOP_TIMES))
            .unwrap_err();
        assert!(
            matches!(&err, FeedError::Csv { file, .. } if file == "routes.txt"),
            "{err:?}"
        );
    }

    #[test]
    fn a_broken_file_the_snapshot_does_not_use_is_ignored() {
        let mut files = vec![
            ("agency.txt", AGENCY),
            ("stops.txt", STOPS),
            ("routes.txt", ROUTES),
            ("trips.txt", TRIPS),
            ("stop_times.txt", STOP_TIMES),
            ("calendar.txt", CALENDAR),
        ];
        files.push(("fare_attributes.txt", "fare_id,price\nF1\n"));
        let snapshot = load("fares", &zip_of(&files));
        assert_eq!(snapshot.counts.trips, 1);
    }

    // ---- Panic hunting: mutated feeds must load or fail with a message ----

    /// The members of a zip, in order.
    fn members(zip_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
        (0..archive.len())
            .map(|i| {
                let mut member = archive.by_index(i).unwrap();
                let mut data = Vec::new();
                member.read_to_end(&mut data).unwrap();
                (member.name().to_owned(), data)
            })
            .collect()
    }

    fn zip_bytes(files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in files {
            // Stored, not deflated: debug builds deflate slowly, and thousands are made.
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            out.start_file(name.as_str(), options).unwrap();
            out.write_all(data).unwrap();
        }
        out.finish().unwrap().into_inner()
    }

    /// `files` with `name`'s content replaced by `f` of it.
    fn with_file(
        files: &[(String, Vec<u8>)],
        name: &str,
        f: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> Vec<(String, Vec<u8>)> {
        let mut out = files.to_vec();
        if let Some((_, d)) = out.iter_mut().find(|(n, _)| n == name) {
            *d = f(d);
        }
        out
    }

    /// A CSV file as rows of fields (naive split: the sample feed has no quotes).
    fn cells(data: &[u8]) -> Vec<Vec<String>> {
        String::from_utf8_lossy(data)
            .lines()
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect()
    }

    fn uncells(rows: &[Vec<String>]) -> Vec<u8> {
        let mut out = rows
            .iter()
            .map(|r| r.join(","))
            .collect::<Vec<_>>()
            .join("\n");
        out.push('\n');
        out.into_bytes()
    }

    /// Loads `bytes` under `catch_unwind`: a panic fails naming `case`; an error must have a
    /// message; a snapshot is read through its whole API.
    fn survives(case: &str, bytes: &[u8]) -> bool {
        let result = std::panic::catch_unwind(|| {
            FeedSnapshot::from_zip_bytes("x", "v", "s", bytes).map(|snapshot| {
                for route in &snapshot.routes {
                    let _ = snapshot.route(&route.route_id);
                    let _ = snapshot.route_detail(&route.route_id);
                    for day in [date(2007, 6, 4), date(2008, 1, 1)] {
                        let _ = snapshot.trips_on(&route.route_id, day);
                    }
                    for trip in snapshot.trips_of_route(&route.route_id) {
                        let _ = snapshot.trip(&trip.trip_id);
                        serde_json::to_string(trip).unwrap();
                    }
                }
                let _ = snapshot.calendar.service_range();
                snapshot.approx_bytes
            })
        });
        match result {
            Ok(Ok(_)) => true,
            Ok(Err(err)) => {
                let text = err.to_string();
                assert!(!text.trim().is_empty(), "{case}: empty error {err:?}");
                assert!(
                    text.len() < 4_000,
                    "{case}: {}-byte error: {text}",
                    text.len()
                );
                false
            }
            Err(payload) => {
                panic!(
                    "{case}: from_zip_bytes panicked: {}",
                    panic_message(&*payload)
                );
            }
        }
    }

    /// Values put in every cell of the first data rows of every file.
    const ODD_CELLS: &[&str] = &[
        "",
        " ",
        "-1",
        "0",
        "2",
        "99999999999999999999",
        "-9223372036854775809",
        "4294967295",
        "4294967296",
        "1e400",
        "NaN",
        "99:99:99",
        "25:00:00",
        "-1:00:00",
        "24:00:00",
        "1193046:28:15",
        "1193047:00:00",
        "4294967295:00:00",
        "00:00:4294967295",
        "1:2:3",
        "::",
        "20181341",
        "20180229",
        "00000000",
        "99991231",
        "-2018010",
        "1é2345",
        "é1234",
        "1é234",
        "ééé",
        "#FFFFFF",
        "GGGGGG",
        "\"a\n\"\"b\"",
        "\"unterminated",
        "\u{0}",
        "\u{feff}x",
        "NOPE",
        "FULLW",
        "AB1",
        "STAGECOACH",
    ];

    type Files = Vec<(String, Vec<u8>)>;

    /// Mutations of the sample feed, named: every file removed, emptied, cut, with a
    /// BOM, CRLF, invalid UTF-8, garbage, duplicated rows, odd rows, each column removed,
    /// each cell of the first row set to each of [`ODD_CELLS`] (cases named `... = ...`),
    /// hand-made dangling references and calendars, and 600 random byte mutations.
    fn mutated_sample_feeds() -> Vec<(String, Files)> {
        use rand::{Rng, SeedableRng};
        // Padded once here, so that loads go through the reader once (mutants with short
        // rows still take the padding path).
        let (padded, _) = pad_short_rows(fixture!("sample-feed")[..].into()).unwrap();
        let base = members(&padded);
        let names: Vec<String> = base.iter().map(|(n, _)| n.clone()).collect();
        assert!(survives("sample-feed as is", &zip_bytes(&base)));
        let mut cases: Vec<(String, Files)> = Vec::new();

        for name in &names {
            let data = &base.iter().find(|(n, _)| n == name).unwrap().1;
            let rows = cells(data);
            let push =
                |cases: &mut Vec<(String, Files)>, what: String, f: &dyn Fn(&[u8]) -> Vec<u8>| {
                    cases.push((format!("{name}: {what}"), with_file(&base, name, f)));
                };
            push(&mut cases, "removed".into(), &|_| Vec::new());
            cases.last_mut().unwrap().1.retain(|(n, _)| n != name);
            push(&mut cases, "empty".into(), &|_| Vec::new());
            push(&mut cases, "two bytes".into(), &|d| {
                d[..2.min(d.len())].to_vec()
            });
            push(&mut cases, "header only".into(), &|_| uncells(&rows[..1]));
            push(&mut cases, "BOM".into(), &|d| [b"\xef\xbb\xbf", d].concat());
            push(&mut cases, "double BOM".into(), &|d| {
                [b"\xef\xbb\xbf\xef\xbb\xbf", d].concat()
            });
            push(&mut cases, "CRLF".into(), &|d| {
                String::from_utf8_lossy(d)
                    .replace('\n', "\r\n")
                    .into_bytes()
            });
            push(&mut cases, "rows twice (duplicate ids)".into(), &|d| {
                let mut out = d.to_vec();
                out.push(b'\n');
                out.extend(uncells(&rows[1..]));
                out
            });
            push(&mut cases, "invalid UTF-8".into(), &|d| {
                let mut out = d.to_vec();
                out.splice(d.len() / 2..d.len() / 2, [0xff, 0xfe, 0xc3]);
                out
            });
            push(&mut cases, "garbage".into(), &|_| {
                (0..=255u8).cycle().take(1000).collect()
            });
            push(&mut cases, "a row longer than the header".into(), &|d| {
                [d, b"\na,b,c,d,e,f,g,h,i,j,k,l,m,n\n"].concat()
            });
            push(&mut cases, "a one-field row".into(), &|d| {
                [d, b"\nx\n"].concat()
            });
            for cut in (0..data.len()).step_by((data.len() / 12).max(1)) {
                push(&mut cases, format!("cut at {cut}"), &|d| d[..cut].to_vec());
            }
            for column in 0..rows[0].len() {
                push(
                    &mut cases,
                    format!("column {} removed", rows[0][column]),
                    &|_| {
                        let rows: Vec<Vec<String>> = rows
                            .iter()
                            .map(|r| {
                                let mut r = r.clone();
                                if column < r.len() {
                                    r.remove(column);
                                }
                                r
                            })
                            .collect();
                        uncells(&rows)
                    },
                );
                for odd in ODD_CELLS {
                    for row in 1..rows.len().min(2) {
                        push(
                            &mut cases,
                            format!("row {row} {} = {odd:?}", rows[0][column]),
                            &|_| {
                                let mut rows = rows.clone();
                                if let Some(cell) = rows[row].get_mut(column) {
                                    *cell = (*odd).to_owned();
                                }
                                uncells(&rows)
                            },
                        );
                    }
                }
            }
        }
        // Frequencies ending before they start, and calendar_dates.txt alone.
        cases.push((
            "frequencies end before start".into(),
            with_file(&base, "frequencies.txt", |_| {
                b"trip_id,start_time,end_time,headway_secs\nSTBA,22:00:00,6:00:00,0\nAB1,6:00:00,6:00:00,4294967295\n".to_vec()
            }),
        ));
        let mut dates_only = with_file(&base, "calendar_dates.txt", |_| {
            b"service_id,date,exception_type\nFULLW,20070604,1\nFULLW,20070604,2\nWE,20070605,1\nNOPE,20070606,1\nWE,20070607,3\n".to_vec()
        });
        dates_only.retain(|(n, _)| n != "calendar.txt");
        cases.push(("calendar_dates.txt only".into(), dates_only));
        cases.push((
            "a calendar of 8000 years".into(),
            with_file(&base, "calendar.txt", |_| {
                b"service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,start_date,end_date\nFULLW,0,0,0,0,0,0,0,00010101,99991231\nWE,1,1,1,1,1,1,1,99991231,00010101\n".to_vec()
            }),
        ));
        cases.push((
            "stop_times of unknown trips and stops".into(),
            with_file(&base, "stop_times.txt", |d| {
                [d, b"\nGHOST,6:00:00,6:00:00,STAGECOACH,1\nSTBA,6:30:00,6:30:00,NOWHERE,3\nSTBA,,,NOWHERE,4294967295\n".as_slice()].concat()
            }),
        ));

        // Random byte mutations of one file at a time.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6755);
        for i in 0..600 {
            let name = &names[rng.random_range(0..names.len())];
            cases.push((
                format!("{name}: random mutant {i}"),
                with_file(&base, name, |d| {
                    let mut d = d.to_vec();
                    for _ in 0..rng.random_range(1..=6) {
                        let at = rng.random_range(0..=d.len());
                        match rng.random_range(0..4) {
                            0 if at < d.len() => d[at] = rng.random(),
                            1 if at < d.len() => {
                                d.remove(at);
                            }
                            2 => {
                                const SIGNIFICANT: &[u8] = b",\"\n:\r0\xff";
                                d.insert(at, SIGNIFICANT[rng.random_range(0..SIGNIFICANT.len())]);
                            }
                            _ => d.insert(at, rng.random()),
                        }
                    }
                    d
                }),
            ));
        }

        cases
    }

    /// Loads each case; (cases, how many loaded).
    fn load_all<'c>(cases: impl Iterator<Item = &'c (String, Files)>) -> (usize, usize) {
        let (mut total, mut loaded) = (0, 0);
        for (case, files) in cases {
            total += 1;
            loaded += usize::from(survives(case, &zip_bytes(files)));
        }
        (total, loaded)
    }

    #[test]
    fn mutated_feeds_load_or_fail_without_panicking() {
        let cases = mutated_sample_feeds();
        let (total, loaded) = load_all(cases.iter().filter(|(name, _)| !name.contains(" = ")));
        eprintln!("{total} mutated feeds, {loaded} loaded");
        assert!(total > 900, "{total}");
        // Many mutations leave a loadable feed: the builder past the CSV reader is reached.
        assert!(loaded > total / 4, "{loaded} of {total}");
    }

    #[test]
    fn odd_values_in_every_cell_load_or_fail_without_panicking() {
        let cases = mutated_sample_feeds();
        let (total, loaded) = load_all(cases.iter().filter(|(name, _)| name.contains(" = ")));
        eprintln!("{total} feeds with an odd cell, {loaded} loaded");
        assert!(total > 2_000, "{total}");
        assert!(loaded > total / 4, "{loaded} of {total}");
    }

    /// gtfs-structures 0.52 panics on a 6-byte non-ASCII colour (in any build): a feed
    /// error, not a panic. An hour past 1193046 overflowed its `u32` (a panic in debug
    /// builds); stop_times.txt is read here now, and says so.
    #[test]
    fn a_panic_in_the_gtfs_reader_is_a_feed_error() {
        let routes = "route_id,agency_id,route_short_name,route_long_name,route_type,route_color\nR1,A,1,One,3,1\u{e9}234\n";
        let err =
            FeedSnapshot::from_zip_bytes("x", "v", "s", &minimal_feed(routes, TRIPS, STOP_TIMES))
                .unwrap_err();
        assert!(matches!(err, FeedError::Invalid(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("invalid GTFS feed: the GTFS reader failed on a malformed value: "),
            "{err}"
        );
        let stop_times = "trip_id,arrival_time,departure_time,stop_id,stop_sequence\nT1,1193047:00:00,1193047:00:00,S1,1\n";
        let err =
            FeedSnapshot::from_zip_bytes("x", "v", "s", &minimal_feed(ROUTES, TRIPS, stop_times))
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "stop_times.txt line 2: '1193047:00:00' is not a valid time; HH:MM:SS format is expected. (row has 5 fields, header 5: T1,1193047:00:00,1193047:00:00,S1,1)"
        );
    }

    #[test]
    fn mutated_zip_containers_fail_without_panicking() {
        use rand::{Rng, SeedableRng};
        let bytes = fixture!("sample-feed");
        let mut cases: Vec<(String, Vec<u8>)> = vec![
            ("nothing".into(), Vec::new()),
            (
                "html".into(),
                b"<html><body>502 Bad Gateway</body></html>".to_vec(),
            ),
            ("zip magic only".into(), b"PK\x03\x04".to_vec()),
            (
                "end record only".into(),
                [b"PK\x05\x06".as_slice(), &[0; 18]].concat(),
            ),
            ("1 MB of zeros".into(), vec![0; 1 << 20]),
        ];
        for cut in (0..bytes.len()).step_by(97) {
            cases.push((format!("cut at {cut}"), bytes[..cut].to_vec()));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x2197);
        for i in 0..300 {
            let mut b = bytes.clone();
            for _ in 0..rng.random_range(1..=3) {
                let at = rng.random_range(0..b.len());
                b[at] = rng.random();
            }
            cases.push((format!("byte flips {i}"), b));
        }
        // Every entry claiming a huge uncompressed size (local headers and central
        // directory), and one claiming 0.
        for (what, size) in [("huge", u32::MAX - 1), ("zero", 0)] {
            let mut b = zip_bytes(&members(&bytes));
            let mut at = 0;
            while at + 30 <= b.len() {
                let sig = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
                match sig {
                    0x0403_4b50 => b[at + 22..at + 26].copy_from_slice(&size.to_le_bytes()),
                    0x0201_4b50 => b[at + 24..at + 28].copy_from_slice(&size.to_le_bytes()),
                    _ => {}
                }
                at += 1;
            }
            cases.push((format!("{what} declared sizes"), b));
        }
        for (case, b) in &cases {
            survives(case, b);
        }
    }
}
