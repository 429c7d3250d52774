//! The compressed representations of a cached answer, made once per entry.
//!
//! Real clients (browsers, OkHttp, reqwest with its defaults) ask for `gzip` or
//! `gzip, deflate, br`. Compressing the same cached bytes again for every such request cost
//! more than everything else a hit does, so each entry keeps its gzip and brotli forms,
//! made once, off the request that hits (see [`crate::cache::RouteCache::encodings`]).
//! Both are made at high levels (they are made once and served many times), and a form is
//! kept only when it is smaller than the identity bytes: a tiny answer is served as it is.

use std::io::Write;

use bytes::Bytes;

/// Answers shorter than this are not worth compressing (headers outweigh the gain).
pub const MIN_BYTES: usize = 256;

/// gzip level: the highest. Made once per entry, so the extra time is paid once.
const GZIP_LEVEL: u32 = 9;
/// brotli quality 9 of 11: within a few percent of 11 at a fraction of its time (11 takes
/// about 30 ms for a 40 KB answer), and still much smaller than gzip's best.
const BROTLI_QUALITY: u32 = 9;
/// brotli window: 2^22 bytes, larger than any route answer.
const BROTLI_LGWIN: u32 = 22;

/// The encodings of one answer that are worth serving: each `None` when it would not be
/// smaller than the identity bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    pub gzip: Option<Bytes>,
    pub br: Option<Bytes>,
}

impl Encoded {
    /// Bytes held by the encodings, for the cache's weight.
    pub fn len(&self) -> usize {
        self.gzip.as_ref().map_or(0, Bytes::len) + self.br.as_ref().map_or(0, Bytes::len)
    }

    /// No encoding worth serving.
    pub fn is_empty(&self) -> bool {
        self.gzip.is_none() && self.br.is_none()
    }
}

/// gzip and brotli forms of `body`, each kept only when smaller than `body`. CPU-bound
/// (a few milliseconds for a 40 KB answer): call it off the async workers.
pub fn encode(body: &[u8]) -> Encoded {
    if body.len() < MIN_BYTES {
        return Encoded::default();
    }
    let smaller = |coded: Vec<u8>| (coded.len() < body.len()).then(|| Bytes::from(coded));
    Encoded {
        gzip: smaller(gzip(body)),
        br: smaller(brotli(body)),
    }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut out = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::new(GZIP_LEVEL),
    );
    // Writing into a Vec cannot fail.
    out.write_all(body).expect("writing to a Vec");
    out.finish().expect("writing to a Vec")
}

fn brotli(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() / 4);
    {
        let mut writer =
            brotli::CompressorWriter::new(&mut out, 4096, BROTLI_QUALITY, BROTLI_LGWIN);
        writer.write_all(body).expect("writing to a Vec");
        writer.flush().expect("writing to a Vec");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn answer() -> Vec<u8> {
        let stops: Vec<String> = (0..400)
            .map(|i| format!("{{\"id\":\"stop-{i}\",\"name\":\"Stop number {i}\"}}"))
            .collect();
        format!("{{\"stops\":[{}]}}", stops.join(",")).into_bytes()
    }

    fn gunzip(coded: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(coded)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn unbrotli(coded: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        brotli::Decompressor::new(coded, 4096)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn every_encoding_decodes_to_exactly_the_identity_bytes() {
        let body = answer();
        let coded = encode(&body);
        let gzip = coded.gzip.as_ref().expect("gzip pays for itself");
        let br = coded.br.as_ref().expect("brotli pays for itself");
        assert_eq!(gunzip(gzip), body);
        assert_eq!(unbrotli(br), body);
        assert!(br.len() < gzip.len(), "{} vs {}", br.len(), gzip.len());
        assert_eq!(coded.len(), gzip.len() + br.len());
    }

    #[test]
    fn small_or_incompressible_answers_keep_no_encoding() {
        assert!(encode(b"{\"n\":1}").is_empty());
        // Bytes that do not compress: each form would be larger, so none is kept.
        let mut noise = Vec::with_capacity(4096);
        let mut x: u32 = 0x1234_5678;
        for _ in 0..4096 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            noise.push(x as u8);
        }
        assert!(encode(&noise).is_empty());
    }
}
