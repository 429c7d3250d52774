//! A GTFS feed kept as a directory of `.txt` files instead of a zip (the demo's
//! `demo/feed`, or a feed being edited by hand).
//!
//! [`FeedDir::read`] reads the directory's files; [`FeedDir::version`] is its version, a
//! sha256 over the files (each file's name and bytes, in name order), so an unchanged
//! directory is recognised without being parsed, as an unchanged zip is by the sha256 of
//! its bytes. [`FeedDir::to_zip`] packs the files into an uncompressed zip in memory, which
//! then goes through exactly the same reader as a downloaded zip ([`super::read`]): the
//! same repairs, the same leniencies and the same [`FeedError`]s (a directory without
//! `routes.txt` is "required file(s) missing from the feed: routes.txt", as a zip without
//! it is). Packing costs one copy of the bytes, and only when the version has changed.
//!
//! Which files: the regular files (or links to them) directly in the directory whose name
//! ends in `.txt` and does not start with `.` (editors' lock and backup files). Anything
//! else (a README, sub-directories) is ignored and is not part of the version.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::FeedError;

/// The `.txt` files of a feed directory, read whole, in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedDir {
    files: Vec<(String, Vec<u8>)>,
    version: String,
}

impl FeedDir {
    /// Reads the `.txt` files of `path` (blocking file I/O: call it off the async
    /// runtime). More than `max_bytes` in all is refused before anything is read.
    pub fn read(path: &Path, max_bytes: u64) -> Result<Self, String> {
        let shown = path.display();
        let entries = std::fs::read_dir(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        let mut found = Vec::new();
        let mut total: u64 = 0;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {shown}: {e}"))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not UTF-8: no GTFS file name
            };
            if !name.ends_with(".txt") || name.starts_with('.') {
                continue;
            }
            let file = entry.path();
            // Follows links, as reading the file will.
            let meta = std::fs::metadata(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            if !meta.is_file() {
                continue;
            }
            total = total.saturating_add(meta.len());
            found.push((name, file));
        }
        if total > max_bytes {
            return Err(format!(
                "the .txt files of {shown} are {total} bytes, over max_feed_bytes ({max_bytes})"
            ));
        }
        found.sort();
        let mut files = Vec::with_capacity(found.len());
        for (name, file) in found {
            let bytes =
                std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            files.push((name, bytes));
        }
        Ok(Self::from_files(files))
    }

    /// A feed directory made of these files (sorted here by name); for tests and tools.
    pub fn from_files(mut files: Vec<(String, Vec<u8>)>) -> Self {
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let version = version_of(&files);
        Self { files, version }
    }

    /// The sha256 (hex) over the files: for each, in name order, its name, a NUL byte,
    /// its length (8 bytes, big-endian) and its bytes. The same files give the same
    /// version whatever their dates; renaming, adding or removing a file changes it.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The files' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|(name, _)| name.as_str())
    }

    /// The size of all the files.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// The files as an uncompressed zip, for [`super::snapshot::FeedSnapshot::from_zip_bytes`].
    pub fn to_zip(&self) -> Result<Vec<u8>, FeedError> {
        let fail =
            |e: &dyn std::fmt::Display| FeedError::Zip(format!("packing the directory: {e}"));
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, bytes) in &self.files {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .large_file(bytes.len() as u64 >= u64::from(u32::MAX));
            out.start_file(name.as_str(), options)
                .map_err(|e| fail(&e))?;
            out.write_all(bytes).map_err(|e| fail(&e))?;
        }
        Ok(out.finish().map_err(|e| fail(&e))?.into_inner())
    }
}

fn version_of(files: &[(String, Vec<u8>)]) -> String {
    let mut hash = Sha256::new();
    for (name, bytes) in files {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    }
    hex::encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::snapshot::FeedSnapshot;

    fn files(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, b)| (n.to_string(), b.as_bytes().to_vec()))
            .collect()
    }

    fn write(dir: &Path, list: &[(&str, &str)]) {
        for (name, text) in list {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn the_version_is_a_sha256_over_names_and_bytes_in_name_order() {
        let a = FeedDir::from_files(files(&[("routes.txt", "r"), ("agency.txt", "a")]));
        let b = FeedDir::from_files(files(&[("agency.txt", "a"), ("routes.txt", "r")]));
        assert_eq!(
            a.version(),
            b.version(),
            "the order files are listed in is not"
        );
        assert_eq!(a.names().collect::<Vec<_>>(), ["agency.txt", "routes.txt"]);

        // Computed independently: name, NUL, 8-byte big-endian length, bytes.
        let mut expected = Sha256::new();
        for (name, bytes) in [("agency.txt", "a"), ("routes.txt", "r")] {
            expected.update(name);
            expected.update([0u8]);
            expected.update((bytes.len() as u64).to_be_bytes());
            expected.update(bytes);
        }
        assert_eq!(a.version(), hex::encode(expected.finalize()));
        assert_eq!(a.version().len(), 64);

        // Any change of a byte, a name, or the set of files is a new version; moving bytes
        // from one file to the next is too (the lengths are hashed).
        let versions = [
            files(&[("agency.txt", "a"), ("routes.txt", "R")]),
            files(&[("agency.txt", "a"), ("route.txt", "r")]),
            files(&[("agency.txt", "a")]),
            files(&[("agency.txt", "a"), ("routes.txt", "r"), ("shapes.txt", "")]),
            files(&[("agency.txt", "ar"), ("routes.txt", "")]),
        ];
        let mut seen = std::collections::HashSet::from([a.version().to_owned()]);
        for f in versions {
            let v = FeedDir::from_files(f.clone());
            assert!(seen.insert(v.version().to_owned()), "{f:?}");
        }
    }

    #[test]
    fn only_the_directorys_own_txt_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                ("agency.txt", "x"),
                ("README.md", "not a feed file"),
                (".stops.txt", "an editor's backup"),
            ],
        );
        std::fs::create_dir(dir.path().join("old.txt")).unwrap();
        let read = FeedDir::read(dir.path(), 1000).unwrap();
        assert_eq!(read.names().collect::<Vec<_>>(), ["agency.txt"]);
        assert_eq!(
            read.version(),
            FeedDir::from_files(files(&[("agency.txt", "x")])).version()
        );
        assert_eq!(read.total_bytes(), 1);

        let err = FeedDir::read(dir.path(), 0).unwrap_err();
        assert!(err.contains("over max_feed_bytes (0)"), "{err}");
        let err = FeedDir::read(&dir.path().join("nope"), 1000).unwrap_err();
        assert!(err.starts_with("cannot read "), "{err}");
    }

    #[test]
    fn a_directory_reads_as_its_zip_would_missing_files_included() {
        let feed = [
            (
                "agency.txt",
                "agency_id,agency_name,agency_url,agency_timezone\nA,Agency,https://a.example,Europe/Zurich\n",
            ),
            (
                "routes.txt",
                "route_id,agency_id,route_short_name,route_long_name,route_type\nR1,A,1,One,3\n",
            ),
            (
                "stops.txt",
                "stop_id,stop_name,stop_lat,stop_lon\nS1,One,46,9\nS2,Two,46.1,9.1\n",
            ),
            ("trips.txt", "route_id,service_id,trip_id\nR1,D,T1\n"),
            (
                "calendar.txt",
                "service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,start_date,end_date\nD,1,1,1,1,1,1,1,20260101,20301231\n",
            ),
            (
                // A short row, repaired as in a zip.
                "stop_times.txt",
                "trip_id,arrival_time,departure_time,stop_id,stop_sequence,pickup_type\nT1,08:00:00,08:00:00,S1,1\nT1,25:00:00,25:00:00,S2,2,0\n",
            ),
        ];
        let dir = FeedDir::from_files(files(&feed));
        let snapshot =
            FeedSnapshot::from_zip_bytes("d", dir.version(), "dir", &dir.to_zip().unwrap())
                .unwrap();
        assert_eq!(snapshot.routes.len(), 1);
        assert_eq!(snapshot.trip("T1").unwrap().end_time, 25 * 3600);

        let without: Vec<_> = feed
            .iter()
            .copied()
            .filter(|(n, _)| *n != "routes.txt" && *n != "trips.txt")
            .collect();
        let dir = FeedDir::from_files(files(&without));
        let err =
            FeedSnapshot::from_zip_bytes("d", "v", "dir", &dir.to_zip().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "required file(s) missing from the feed: routes.txt, trips.txt"
        );
    }
}
