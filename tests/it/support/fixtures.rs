//! The shared fixture feeds, read independently of the service's own code: the zip crate
//! and the csv crate, so expected values do not come from the code under test.

use std::io::Read;
use std::path::PathBuf;

use serde_json::{Value, json};

/// A caltrain route with trips on [`CALTRAIN_DAY`], and that day.
pub const CALTRAIN_ROUTE: &str = "Lo-130";
pub const CALTRAIN_DAY: &str = "2018-06-01";

/// A waybill for `vehicle` (driven by `driver-{vehicle}`) on caltrain's
/// [`CALTRAIN_ROUTE`] on [`CALTRAIN_DAY`], running trip `trip_id`.
pub fn caltrain_waybill(trip_id: &str, vehicle: &str) -> Value {
    json!({
        "service_date": CALTRAIN_DAY,
        "vehicle_id": vehicle,
        "driver_id": format!("driver-{vehicle}"),
        "gtfs_id": "caltrain",
        "route_id": CALTRAIN_ROUTE,
        "trip_ids": [trip_id],
    })
}

/// Path of a fixture feed, `../shared/fixtures/gtfs/{name}.zip`.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../shared/fixtures/gtfs/{name}.zip"))
}

/// The records of `file` inside the feed `name` (header excluded), as string maps.
pub fn fixture_csv(name: &str, file: &str) -> Vec<std::collections::HashMap<String, String>> {
    let bytes = std::fs::read(fixture_path(name)).expect("fixture zip");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("fixture is a zip");
    let mut text = String::new();
    match archive.by_name(file) {
        Ok(mut f) => f.read_to_string(&mut text).expect("utf-8 csv"),
        Err(_) => return Vec::new(),
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader.headers().expect("csv header").clone();
    reader
        .records()
        .map(|r| {
            let r = r.expect("csv record");
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

/// How many records `file` of feed `name` has.
pub fn fixture_rows(name: &str, file: &str) -> usize {
    fixture_csv(name, file).len()
}

/// The named `columns` of every record of `file` in feed `name`, in file order (an absent
/// column reads as ""). Much lighter than [`fixture_csv`] on large files such as wmata's
/// `stop_times.txt`; empty when the file is absent.
pub fn fixture_table(name: &str, file: &str, columns: &[&str]) -> Vec<Vec<String>> {
    let bytes = std::fs::read(fixture_path(name)).expect("fixture zip");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("fixture is a zip");
    let mut text = String::new();
    match archive.by_name(file) {
        Ok(mut f) => f.read_to_string(&mut text).expect("utf-8 csv"),
        Err(_) => return Vec::new(),
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader.headers().expect("csv header").clone();
    let positions: Vec<Option<usize>> = columns
        .iter()
        .map(|c| headers.iter().position(|h| h == *c))
        .collect();
    let mut record = csv::StringRecord::new();
    let mut rows = Vec::new();
    while reader.read_record(&mut record).expect("csv record") {
        rows.push(
            positions
                .iter()
                .map(|p| p.and_then(|i| record.get(i)).unwrap_or_default().to_owned())
                .collect(),
        );
    }
    rows
}

/// A GTFS time `H:MM:SS` (hours may pass 23) in seconds; `None` when empty.
pub fn parse_gtfs_time(s: &str) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    let parts: Vec<u32> = s
        .split(':')
        .map(|p| p.parse().unwrap_or_else(|_| panic!("time {s:?}")))
        .collect();
    assert_eq!(parts.len(), 3, "time {s:?}");
    Some(parts[0] * 3600 + parts[1] * 60 + parts[2])
}

/// Seconds as GTFS `HH:MM:SS` (hours may pass 23).
pub fn format_gtfs_time(secs: u32) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A GTFS date, `YYYYMMDD`.
pub fn parse_gtfs_date(s: &str) -> jiff::civil::Date {
    let n = |r: std::ops::Range<usize>| s[r].parse::<i16>().unwrap();
    jiff::civil::Date::new(n(0..4), n(4..6) as i8, n(6..8) as i8)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Feed `name`'s zip with a member no reader looks at (`padding.bin`, stored, not
/// deflated) that takes it past the size at which the service spools a zip to a temporary
/// file; with `damage`, 64 bytes of its stop_times.txt member's compressed data changed.
pub fn padded_fixture_zip(name: &str, damage: bool) -> Vec<u8> {
    use std::io::Write;
    let zip = std::fs::read(fixture_path(name)).expect("fixture zip");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&zip)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).unwrap();
        let name = member.name().to_owned();
        let mut data = Vec::new();
        member.read_to_end(&mut data).unwrap();
        let options = zip::write::SimpleFileOptions::default();
        out.start_file(name, options).unwrap();
        out.write_all(&data).unwrap();
    }
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    out.start_file("padding.bin", stored).unwrap();
    let padding = gtfs_fetch::feed::spool::SPOOL_AT as usize + (1 << 20);
    let mut state = 0x2545_f491_u32;
    let noise: Vec<u8> = (0..padding)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    out.write_all(&noise).unwrap();
    let mut bytes = out.finish().unwrap().into_inner();
    if damage {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.clone())).unwrap();
        let member = archive.by_name("stop_times.txt").unwrap();
        let start = member.data_start().unwrap() as usize + member.compressed_size() as usize / 3;
        for b in &mut bytes[start..start + 64] {
            *b ^= 0x5a;
        }
    }
    bytes
}
