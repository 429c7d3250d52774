//! [`FeedError`]: why a feed could not be turned into a snapshot, for every step of the
//! build ([`super::read`], [`super::stop_times`], [`super::network`], [`super::dir`]), and
//! its translation from gtfs-structures' errors.

/// Why a feed could not be turned into a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The bytes are not a zip archive gtfs-structures can open.
    #[error("not a readable zip archive: {0}")]
    Zip(String),
    /// Required GTFS files are absent from the archive.
    #[error("required file(s) missing from the feed: {}", .0.join(", "))]
    MissingFiles(Vec<String>),
    /// A file could not be parsed as CSV or a row did not fit its GTFS columns.
    #[error("{file}{}: {detail}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Csv {
        file: String,
        /// 1-based line in the file (the header is line 1), when the parser knows it.
        line: Option<u64>,
        detail: String,
    },
    /// Any other reason gtfs-structures gave, with its whole error chain.
    #[error("invalid GTFS feed: {0}")]
    Invalid(String),
    /// Building the snapshot held more memory than the build may (`max_build_bytes`):
    /// it was stopped there.
    #[error(
        "building the snapshot held {held} bytes (beyond the zip), over max_build_bytes ({max}): refused"
    )]
    OverBudget { held: u64, max: u64 },
}

impl FeedError {
    /// Translates a gtfs-structures error. Its own messages are terse ("impossible to read
    /// csv file 'x'"); the useful part is in `source()`, so the chain is folded in.
    pub(super) fn from_gtfs(err: gtfs_structures::Error) -> Self {
        use gtfs_structures::Error as E;
        match err {
            E::Zip(e) => FeedError::Zip(e.to_string()),
            E::MissingFile(file) => FeedError::MissingFiles(vec![file]),
            E::CSVError {
                file_name,
                source,
                line_in_error,
            } => {
                let line = source.position().map(|p| p.line());
                let text = source.to_string();
                // "CSV deserialize error: record 3 (line: 4, byte: 120): field 5: invalid
                // digit found in string": keep what follows the position, and name the column.
                let mut detail = match text.split_once("): ") {
                    Some((head, rest)) if head.contains("(line: ") => rest.to_owned(),
                    _ => text,
                };
                if let Some(row) = &line_in_error {
                    if let Some((field, rest)) = detail
                        .strip_prefix("field ")
                        .and_then(|d| d.split_once(": "))
                        .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest)))
                        && let Some(column) = row.headers.get(field)
                    {
                        detail = format!("column {column}: {rest}");
                    }
                    let mut values = row.values.join(",");
                    if values.len() > 200 {
                        let cut = (0..=200).rev().find(|&i| values.is_char_boundary(i));
                        values.truncate(cut.unwrap_or(0));
                        values.push_str("...");
                    }
                    detail = format!(
                        "{detail} (row has {} fields, header {}: {values})",
                        row.values.len(),
                        row.headers.len()
                    );
                }
                FeedError::Csv {
                    file: file_name,
                    line,
                    detail,
                }
            }
            E::NamedFileIO { file_name, source } => FeedError::Csv {
                file: file_name,
                line: None,
                detail: format!("cannot be read: {source}"),
            },
            other => FeedError::Invalid(error_chain(&other)),
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
