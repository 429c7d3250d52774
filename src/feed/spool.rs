//! A feed zip's bytes on their way from where they come from (a download, a local file,
//! the feed store) to the feed build and the store, held outside the heap when large.
//!
//! A national feed's zip is 100-200 MB. Held in memory, it is resident for the whole
//! build next to the tables being built, and is most of what the build's peak holds
//! beyond the snapshot (BENCHMARKS.md, "The zip out of memory"). So a [`SpoolWriter`]
//! keeps the bytes in memory up to [`SPOOL_AT`], then moves them to an anonymous temporary
//! file (in `TMPDIR`, deleted by the system when the last handle closes, even after a
//! crash) and writes on there. It hashes them (sha256, the zip's version and its address
//! in the feed store) as they are written, so nothing reads them twice to know that.
//!
//! A [`Spool`] is read through [`ZipBytes`], which the build's zip readers take: each
//! reader has its own position (positioned reads, `pread`), so several may read one file at
//! once (the `stop_times.txt` stream reads on a thread of its own). Reads are buffered
//! reads, not a memory map: a mapped file's pages would count in the process's resident
//! set, which is what the spool is for keeping small. The file's pages sit in the page
//! cache, which the kernel may drop or write out under pressure.
//!
//! Where no temporary file can be made (a read-only filesystem), the bytes stay in memory,
//! as before there was a spool, and the build is the same; a warning says so once.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Bytes kept in memory before a spool moves to a temporary file (8 MiB): a small feed's
/// zip costs no file, a large one's stays out of the heap.
pub const SPOOL_AT: u64 = 8 << 20;

/// Buffer of the file writes and of each reader (the zip and CSV readers read a few KiB at
/// a time).
const BUFFER_BYTES: usize = 256 << 10;

/// Whether the "no temporary file" warning was given.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Bytes being written to a spool: in memory, then in a temporary file past a threshold.
pub struct SpoolWriter {
    spool_at: u64,
    hasher: Sha256,
    len: u64,
    memory: Vec<u8>,
    file: Option<BufWriter<File>>,
}

impl Default for SpoolWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl SpoolWriter {
    /// A writer that moves to a file past [`SPOOL_AT`] bytes.
    pub fn new() -> Self {
        Self::spooling_at(SPOOL_AT)
    }

    /// A writer that moves to a file once it holds more than `spool_at` bytes (0: at the
    /// first byte).
    pub fn spooling_at(spool_at: u64) -> Self {
        Self {
            spool_at,
            hasher: Sha256::new(),
            len: 0,
            memory: Vec::new(),
            file: None,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `chunk`. An error is the temporary file's (a full disk): the spool is then
    /// unusable.
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
        if self.file.is_none() && self.len > self.spool_at {
            self.file = to_file(&self.memory)?;
            if self.file.is_some() {
                self.memory = Vec::new();
            }
        }
        match &mut self.file {
            Some(file) => file.write_all(chunk),
            None => {
                self.memory.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    /// The bytes written, ready to be read.
    pub fn finish(self) -> io::Result<Spool> {
        let sha256 = hex::encode(self.hasher.finalize());
        let data = match self.file {
            Some(file) => Data::File(Arc::new(file.into_inner().map_err(|e| e.into_error())?)),
            None => Data::Memory(self.memory.into()),
        };
        Ok(Spool {
            data,
            len: self.len,
            sha256,
        })
    }
}

/// A temporary file holding `memory`, or `None` when none can be made (then the spool
/// stays in memory).
fn to_file(memory: &[u8]) -> io::Result<Option<BufWriter<File>>> {
    match tempfile::tempfile() {
        Ok(file) => {
            let mut file = BufWriter::with_capacity(BUFFER_BYTES, file);
            file.write_all(memory)?;
            Ok(Some(file))
        }
        Err(e) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    dir = %std::env::temp_dir().display(),
                    "cannot make a temporary file for a large feed zip, so it is held in \
                     memory during the build (set TMPDIR to a writable directory): {e}"
                );
            }
            Ok(None)
        }
    }
}

/// A feed zip's bytes, written once, then read by any number of readers; cheap to clone
/// (the file or the bytes are shared).
#[derive(Clone)]
pub struct Spool {
    data: Data,
    len: u64,
    sha256: String,
}

#[derive(Clone)]
enum Data {
    Memory(Bytes),
    File(Arc<File>),
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("len", &self.len)
            .field("in_file", &self.in_file())
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl Spool {
    /// Everything `reader` gives (a local file), read a chunk at a time.
    pub fn from_reader(mut reader: impl Read) -> io::Result<Self> {
        let mut spool = SpoolWriter::new();
        let mut buf = vec![0u8; BUFFER_BYTES];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return spool.finish(),
                Ok(n) => spool.write(&buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Bytes already in memory, kept there (a directory's packed zip, tests).
    pub fn from_bytes(bytes: Bytes) -> Self {
        Self {
            sha256: hex::encode(Sha256::digest(&bytes)),
            len: bytes.len() as u64,
            data: Data::Memory(bytes),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes' sha256, lowercase hex.
    pub fn sha256_hex(&self) -> &str {
        &self.sha256
    }

    /// Whether the bytes are in a temporary file (rather than in memory).
    pub fn in_file(&self) -> bool {
        matches!(self.data, Data::File(_))
    }

    /// The bytes, for the zip readers.
    pub fn bytes(&self) -> ZipBytes<'_> {
        match &self.data {
            Data::Memory(bytes) => ZipBytes::Memory(bytes),
            Data::File(file) => ZipBytes::File {
                file,
                len: self.len,
            },
        }
    }

    /// All the bytes, in memory (small contents: a route index's JSON).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len as usize);
        self.bytes().reader().read_to_end(&mut out)?;
        Ok(out)
    }

    /// Fills `buf` with the bytes from `offset` on; an error past the end.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.bytes().read_exact_at(offset, buf)
    }
}

/// A zip's bytes, borrowed: in memory, or in a file read at positions. Each [`reader`]
/// has a position of its own.
///
/// [`reader`]: ZipBytes::reader
#[derive(Clone, Copy, Debug)]
pub enum ZipBytes<'z> {
    Memory(&'z [u8]),
    File { file: &'z File, len: u64 },
}

impl<'z> From<&'z [u8]> for ZipBytes<'z> {
    fn from(bytes: &'z [u8]) -> Self {
        ZipBytes::Memory(bytes)
    }
}

impl<'z> ZipBytes<'z> {
    pub fn len(self) -> u64 {
        match self {
            ZipBytes::Memory(bytes) => bytes.len() as u64,
            ZipBytes::File { len, .. } => len,
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// A reader from the start, buffered when it reads a file.
    pub fn reader(self) -> ZipReader<'z> {
        match self {
            ZipBytes::Memory(bytes) => ZipReader::Memory(io::Cursor::new(bytes)),
            ZipBytes::File { file, len } => ZipReader::File(io::BufReader::with_capacity(
                BUFFER_BYTES,
                FileAt { file, len, pos: 0 },
            )),
        }
    }

    fn read_exact_at(self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut reader = self.reader();
        reader.seek(SeekFrom::Start(offset))?;
        match &mut reader {
            // Straight into `buf`, not through the reader's buffer.
            ZipReader::File(buffered) => buffered.get_mut().read_exact(buf),
            ZipReader::Memory(cursor) => cursor.read_exact(buf),
        }
    }
}

/// A reader of [`ZipBytes`]: `Read + Seek`, what the zip crate takes.
pub enum ZipReader<'z> {
    Memory(io::Cursor<&'z [u8]>),
    File(io::BufReader<FileAt<'z>>),
}

impl Read for ZipReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ZipReader::Memory(r) => r.read(buf),
            ZipReader::File(r) => r.read(buf),
        }
    }
}

impl Seek for ZipReader<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match self {
            ZipReader::Memory(r) => r.seek(pos),
            ZipReader::File(r) => r.seek(pos),
        }
    }
}

/// A file read at a position of its own (`pread`), not the file's shared offset.
pub struct FileAt<'z> {
    file: &'z File,
    len: u64,
    pos: u64,
}

impl Read for FileAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let want = buf.len().min((self.len - self.pos) as usize);
        let n = read_at(self.file, &mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for FileAt<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let to = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match to {
            Some(to) => {
                self.pos = to;
                Ok(to)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the zip",
            )),
        }
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spooled(bytes: &[u8], spool_at: u64, chunk: usize) -> Spool {
        let mut w = SpoolWriter::spooling_at(spool_at);
        for c in bytes.chunks(chunk.max(1)) {
            w.write(c).unwrap();
        }
        assert_eq!(w.len(), bytes.len() as u64);
        w.finish().unwrap()
    }

    fn read_all(spool: &Spool) -> Vec<u8> {
        let mut out = Vec::new();
        spool.bytes().reader().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn small_bytes_stay_in_memory_and_large_ones_go_to_a_file() {
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let small = spooled(&bytes, bytes.len() as u64, 4096);
        assert!(!small.in_file());
        let large = spooled(&bytes, 1000, 4096);
        assert!(large.in_file());
        for spool in [&small, &large] {
            assert_eq!(spool.len(), bytes.len() as u64);
            assert_eq!(read_all(spool), bytes);
            assert_eq!(spool.sha256_hex(), hex::encode(Sha256::digest(&bytes)));
        }
        assert_eq!(
            Spool::from_bytes(bytes.clone().into()).sha256_hex(),
            large.sha256_hex()
        );
    }

    #[test]
    fn readers_keep_positions_of_their_own() {
        let bytes: Vec<u8> = (0..50_000u32).map(|i| (i % 256) as u8).collect();
        let spool = spooled(&bytes, 0, 777);
        let zip = spool.bytes();
        let (mut a, mut b) = (zip.reader(), zip.reader());
        let mut buf = [0u8; 10];
        a.seek(SeekFrom::Start(40_000)).unwrap();
        b.read_exact(&mut buf).unwrap();
        assert_eq!(buf[..], bytes[..10]);
        a.read_exact(&mut buf).unwrap();
        assert_eq!(buf[..], bytes[40_000..40_010]);
        assert_eq!(b.seek(SeekFrom::End(-5)).unwrap(), 49_995);
        let mut tail = Vec::new();
        b.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, bytes[49_995..]);
        assert!(b.seek(SeekFrom::Current(-60_000)).is_err());

        let mut chunk = vec![0u8; 1000];
        spool.read_exact_at(12_345, &mut chunk).unwrap();
        assert_eq!(chunk, bytes[12_345..13_345]);
        let err = spool.read_exact_at(49_500, &mut chunk).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_reader_is_spooled_whole() {
        let bytes: Vec<u8> = (0..(SPOOL_AT as u32 + 300_000))
            .map(|i| (i % 253) as u8)
            .collect();
        let spool = Spool::from_reader(&bytes[..]).unwrap();
        assert!(spool.in_file());
        assert!(spool.to_vec().unwrap() == bytes);
        let small = Spool::from_reader(&bytes[..1000]).unwrap();
        assert!(!small.in_file());
        assert_eq!(small.to_vec().unwrap(), bytes[..1000]);
    }

    #[test]
    fn an_empty_spool_reads_empty() {
        let spool = SpoolWriter::spooling_at(0).finish().unwrap();
        assert!(spool.is_empty() && !spool.in_file());
        assert!(read_all(&spool).is_empty());
    }
}
