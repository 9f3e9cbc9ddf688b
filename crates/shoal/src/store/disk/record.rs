//! The on-disk format: segment headers, records and segment summaries. Every piece carries an
//! XXH3-64 checksum; anything that does not verify is treated as absent.
//!
//! A segment file starts with a [`SEGMENT_HEADER_LEN`]-byte header (magic, sequence number,
//! checksum) followed by records written back to back:
//!
//! ```text
//! offset  size  field
//!      0     4  magic "SHRC"
//!      4     1  kind (1 object, 2 tombstone)
//!      5     3  zero
//!      8     8  sequence number of the segment it was written into
//!     16    16  cache key
//!     32     8  variant hash (0 in a tombstone: every variant)
//!     40     4  metadata length M
//!     44     4  body length B
//!     48     8  XXH3-64 of bytes 0..48, the metadata and the body
//!     56     M  metadata (see `encode_meta`)
//!   56+M     B  body
//! ```
//!
//! The sequence number tells a record of the segment's current life from a leftover of an
//! earlier one, so a scan skips records that are torn, corrupt or stale, and resumes at the
//! next record of the current life that verifies. A sealed
//! segment also has a summary file listing its records, so that a restart reads summaries
//! instead of whole segments.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use xxhash_rust::xxh3::Xxh3;

use crate::cache::policy::{Freshness, Timing};
use crate::cache::CacheKey;
use crate::store::{Fields, ObjectMeta};

/// Bytes reserved at the start of each segment for its header.
pub const SEGMENT_HEADER_LEN: u64 = 4096;
/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 56;

const SEGMENT_MAGIC: &[u8; 8] = b"SHOALSG1";
pub const RECORD_MAGIC: &[u8; 4] = b"SHRC";
const SUMMARY_MAGIC: &[u8; 8] = b"SHOALIX1";
const META_VERSION: u8 = 1;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A stored object: metadata and body.
    Object = 1,
    /// The key's variants were removed (purge or invalidation).
    Tombstone = 2,
}

/// A record's fixed-size header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Object or tombstone.
    pub kind: Kind,
    /// Sequence number of the segment's life it was written in.
    pub sequence: u64,
    /// The URL's key.
    pub key: CacheKey,
    /// Hash of the variant's request values.
    pub variant: u64,
    /// Length of the metadata.
    pub meta_len: u32,
    /// Length of the body.
    pub body_len: u32,
    /// Checksum of header, metadata and body.
    pub checksum: u64,
}

impl RecordHeader {
    /// Bytes of the whole record.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.meta_len) + u64::from(self.body_len)
    }

    /// Parses a header; `None` when it is not one (no magic, unknown kind).
    pub fn parse(bytes: &[u8]) -> Option<RecordHeader> {
        let bytes: &[u8; RECORD_HEADER_LEN] = bytes.get(..RECORD_HEADER_LEN)?.try_into().ok()?;
        if &bytes[0..4] != RECORD_MAGIC {
            return None;
        }
        let kind = match bytes[4] {
            1 => Kind::Object,
            2 => Kind::Tombstone,
            _ => return None,
        };
        Some(RecordHeader {
            kind,
            sequence: u64_at(bytes, 8),
            key: CacheKey(u128::from_le_bytes(bytes[16..32].try_into().ok()?)),
            variant: u64_at(bytes, 32),
            meta_len: u32_at(bytes, 40),
            body_len: u32_at(bytes, 44),
            checksum: u64_at(bytes, 48),
        })
    }

    /// Whether `record` (header, metadata and body) is intact.
    pub fn verifies(&self, record: &[u8]) -> bool {
        record.len() as u64 == self.record_len()
            && checksum(&[&record[..48], &record[RECORD_HEADER_LEN..]]) == self.checksum
    }
}

/// Encodes a record. The body is passed as pieces so that it is not gathered first.
pub fn encode_record(
    out: &mut Vec<u8>,
    kind: Kind,
    sequence: u64,
    key: CacheKey,
    variant: u64,
    meta: &[u8],
    body: &[Bytes],
) {
    let body_len: usize = body.iter().map(Bytes::len).sum();
    let start = out.len();
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&[kind as u8, 0, 0, 0]);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&key.0.to_le_bytes());
    out.extend_from_slice(&variant.to_le_bytes());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    let mut hasher = Xxh3::new();
    hasher.update(&out[start..start + 48]);
    hasher.update(meta);
    for piece in body {
        hasher.update(piece);
    }
    out.extend_from_slice(&hasher.digest().to_le_bytes());
    out.extend_from_slice(meta);
    for piece in body {
        out.extend_from_slice(piece);
    }
}

/// The header written at the start of a segment for its life number `sequence`.
pub fn segment_header(sequence: u64) -> [u8; 24] {
    let mut header = [0u8; 24];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..16].copy_from_slice(&sequence.to_le_bytes());
    let sum = checksum(&[&header[..16]]);
    header[16..24].copy_from_slice(&sum.to_le_bytes());
    header
}

/// The sequence number in a segment header, if it verifies.
pub fn parse_segment_header(bytes: &[u8]) -> Option<u64> {
    let bytes = bytes.get(..24)?;
    (&bytes[..8] == SEGMENT_MAGIC && checksum(&[&bytes[..16]]) == u64_at(bytes, 16))
        .then(|| u64_at(bytes, 8))
}

/// One record as listed in a segment summary (and in the in-memory index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SummaryEntry {
    /// Object or tombstone.
    pub kind: Kind,
    /// The URL's key.
    pub key: CacheKey,
    /// The variant hash.
    pub variant: u64,
    /// Where the record starts in the segment.
    pub offset: u32,
    /// The record's length.
    pub length: u32,
}

const SUMMARY_ENTRY_LEN: usize = 33;

/// Encodes the summary of a segment in its life `sequence`.
pub fn encode_summary(sequence: u64, entries: &[SummaryEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(28 + entries.len() * SUMMARY_ENTRY_LEN);
    out.extend_from_slice(SUMMARY_MAGIC);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for entry in entries {
        out.push(entry.kind as u8);
        out.extend_from_slice(&entry.key.0.to_le_bytes());
        out.extend_from_slice(&entry.variant.to_le_bytes());
        out.extend_from_slice(&entry.offset.to_le_bytes());
        out.extend_from_slice(&entry.length.to_le_bytes());
    }
    let sum = checksum(&[&out]);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Decodes a summary: its sequence number and entries, if it is whole and verifies.
pub fn decode_summary(bytes: &[u8]) -> Option<(u64, Vec<SummaryEntry>)> {
    if bytes.len() < 28 || &bytes[..8] != SUMMARY_MAGIC {
        return None;
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    if checksum(&[body]) != u64_at(sum, 0) {
        return None;
    }
    let sequence = u64_at(body, 8);
    let count = u32_at(body, 16) as usize;
    let list = &body[20..];
    if list.len() != count * SUMMARY_ENTRY_LEN {
        return None;
    }
    let entries = list
        .chunks_exact(SUMMARY_ENTRY_LEN)
        .map(|entry| {
            Some(SummaryEntry {
                kind: match entry[0] {
                    1 => Kind::Object,
                    2 => Kind::Tombstone,
                    _ => return None,
                },
                key: CacheKey(u128::from_le_bytes(entry[1..17].try_into().ok()?)),
                variant: u64_at(entry, 17),
                offset: u32_at(entry, 25),
                length: u32_at(entry, 29),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some((sequence, entries))
}

/// Serializes everything of [`ObjectMeta`] that is not derived from the header fields.
pub fn encode_meta(meta: &ObjectMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + meta.fields.byte_len());
    out.push(META_VERSION);
    out.extend_from_slice(&meta.status.as_u16().to_le_bytes());
    out.extend_from_slice(&meta.content_length.unwrap_or(u64::MAX).to_le_bytes());
    out.extend_from_slice(&meta.slice_size.to_le_bytes());
    out.extend_from_slice(&meta.slices_since.to_le_bytes());
    let timing = &meta.timing;
    for value in [
        timing.request_time,
        timing.response_time,
        timing.date,
        timing.age,
    ] {
        out.extend_from_slice(&value.to_le_bytes());
    }
    let freshness = &meta.freshness;
    for value in [
        freshness.lifetime,
        freshness.stale_while_revalidate,
        freshness.stale_if_error,
    ] {
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.push(u8::from(freshness.always_revalidate) | u8::from(freshness.forbids_stale) << 1);
    put_bytes(&mut out, meta.url.as_bytes());
    out.extend_from_slice(&(meta.variant.len() as u32).to_le_bytes());
    for (name, value) in &meta.variant {
        put_bytes(&mut out, name.as_bytes());
        match value {
            Some(value) => {
                out.push(1);
                put_bytes(&mut out, value.as_bytes());
            }
            None => out.push(0),
        }
    }
    out.extend_from_slice(&(meta.fields.count() as u32).to_le_bytes());
    for (name, value) in meta.fields.iter() {
        put_bytes(&mut out, name);
        put_bytes(&mut out, value.as_bytes());
    }
    out
}

/// Rebuilds the metadata written by [`encode_meta`]; `None` if it does not decode.
pub fn decode_meta(bytes: &[u8]) -> Option<ObjectMeta> {
    let mut input = Input(bytes);
    if input.u8()? != META_VERSION {
        return None;
    }
    let status = StatusCode::from_u16(u16::from_le_bytes(input.take(2)?.try_into().ok()?)).ok()?;
    let length = input.u64()?;
    let slice_size = input.u32()?;
    let slices_since = input.u64()?;
    let timing = Timing {
        request_time: input.u64()?,
        response_time: input.u64()?,
        date: input.u64()?,
        age: input.u64()?,
    };
    let (lifetime, stale_while_revalidate, stale_if_error) =
        (input.u64()?, input.u64()?, input.u64()?);
    let flags = input.u8()?;
    let freshness = Freshness {
        lifetime,
        stale_while_revalidate,
        stale_if_error,
        always_revalidate: flags & 1 != 0,
        forbids_stale: flags & 2 != 0,
    };
    let url = String::from_utf8(input.bytes()?.to_vec()).ok()?;
    let variant_count = input.u32()?;
    let mut variant = Vec::with_capacity(variant_count.min(64) as usize);
    for _ in 0..variant_count {
        let name = String::from_utf8(input.bytes()?.to_vec()).ok()?;
        let value = match input.u8()? {
            0 => None,
            _ => Some(String::from_utf8(input.bytes()?.to_vec()).ok()?),
        };
        variant.push((name, value));
    }
    let header_count = input.u32()?;
    let mut headers = HeaderMap::with_capacity(header_count.min(256) as usize);
    for _ in 0..header_count {
        let name = HeaderName::from_bytes(input.bytes()?).ok()?;
        let value = HeaderValue::from_bytes(input.bytes()?).ok()?;
        headers.append(name, value);
    }
    if !input.0.is_empty() {
        return None;
    }
    Some(ObjectMeta {
        url,
        status,
        fields: Fields::new(&headers),
        variant,
        timing,
        freshness,
        content_length: (length != u64::MAX).then_some(length),
        slice_size,
        slices_since,
    })
}

/// The hash identifying a variant among a URL's variants (0 for "no `Vary`").
pub fn variant_hash(variant: &[(String, Option<String>)]) -> u64 {
    if variant.is_empty() {
        return 0;
    }
    let mut hasher = Xxh3::new();
    for (name, value) in variant {
        hasher.update(name.as_bytes());
        hasher.update(&[0xff]);
        match value {
            Some(value) => {
                hasher.update(&[1]);
                hasher.update(value.as_bytes());
            }
            None => hasher.update(&[0]),
        }
        hasher.update(&[0xfe]);
    }
    hasher.digest().max(1)
}

fn checksum(pieces: &[&[u8]]) -> u64 {
    let mut hasher = Xxh3::new();
    for piece in pieces {
        hasher.update(piece);
    }
    hasher.digest()
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default())
}

/// A cursor over metadata bytes; every read is bounds-checked.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ObjectMeta {
        let mut headers = HeaderMap::new();
        headers.insert("etag", HeaderValue::from_static("\"v1\""));
        headers.append("x-many", HeaderValue::from_static("a"));
        headers.append("x-many", HeaderValue::from_static("b"));
        headers.insert(
            "last-modified",
            HeaderValue::from_static("Tue, 15 Nov 1994 12:45:26 GMT"),
        );
        ObjectMeta {
            url: "http://example.test/a?b".into(),
            status: StatusCode::NOT_FOUND,
            fields: Fields::new(&headers),
            variant: vec![
                ("accept-encoding".into(), Some("gzip".into())),
                ("x".into(), None),
            ],
            timing: Timing {
                request_time: 1,
                response_time: 2,
                date: 3,
                age: 4,
            },
            freshness: Freshness {
                lifetime: 5,
                stale_while_revalidate: 6,
                stale_if_error: 7,
                always_revalidate: true,
                forbids_stale: false,
            },
            content_length: Some(11),
            slice_size: 1 << 20,
            slices_since: 99,
        }
    }

    #[test]
    fn metadata_survives_the_round_trip() {
        let original = meta();
        let decoded = decode_meta(&encode_meta(&original)).unwrap();
        assert_eq!(decoded.url, original.url);
        assert_eq!(decoded.status, original.status);
        assert_eq!(decoded.fields, original.fields);
        assert_eq!(decoded.fields.to_map().get_all("x-many").iter().count(), 2);
        assert_eq!(decoded.variant, original.variant);
        assert_eq!(decoded.timing, original.timing);
        assert_eq!(decoded.freshness, original.freshness);
        assert_eq!(decoded.fields.etag().unwrap(), "\"v1\"");
        assert_eq!(decoded.fields.last_modified(), Some(784_903_526_000));
        assert_eq!(decoded.content_length, Some(11));
        assert_eq!(decoded.slice_size, 1 << 20);
        assert_eq!(decoded.slices_since, 99);
    }

    #[test]
    fn truncated_metadata_does_not_decode() {
        let bytes = encode_meta(&meta());
        for cut in 0..bytes.len() {
            assert!(decode_meta(&bytes[..cut]).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn a_record_verifies_until_a_byte_changes() {
        let mut record = Vec::new();
        let body = [Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        encode_record(
            &mut record,
            Kind::Object,
            9,
            CacheKey(42),
            7,
            b"meta",
            &body,
        );
        let header = RecordHeader::parse(&record).unwrap();
        assert_eq!(header.sequence, 9);
        assert_eq!(header.key, CacheKey(42));
        assert_eq!(header.record_len(), record.len() as u64);
        assert!(header.verifies(&record));
        for at in [0, 20, 50, RECORD_HEADER_LEN + 1, record.len() - 1] {
            let mut damaged = record.clone();
            damaged[at] ^= 0x40;
            let still = RecordHeader::parse(&damaged).is_some_and(|h| h.verifies(&damaged));
            assert!(!still, "a flipped byte at {at} went unnoticed");
        }
        assert!(!header.verifies(&record[..record.len() - 1]));
    }

    #[test]
    fn summaries_round_trip_and_reject_damage() {
        let entries = vec![
            SummaryEntry {
                kind: Kind::Object,
                key: CacheKey(1 << 100),
                variant: 3,
                offset: 4096,
                length: 100,
            },
            SummaryEntry {
                kind: Kind::Tombstone,
                key: CacheKey(5),
                variant: 0,
                offset: 4196,
                length: 56,
            },
        ];
        let bytes = encode_summary(12, &entries);
        assert_eq!(decode_summary(&bytes), Some((12, entries)));
        let mut damaged = bytes.clone();
        damaged[30] ^= 1;
        assert_eq!(decode_summary(&damaged), None);
        assert_eq!(decode_summary(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn segment_headers_verify() {
        let header = segment_header(77);
        assert_eq!(parse_segment_header(&header), Some(77));
        let mut damaged = header;
        damaged[9] ^= 1;
        assert_eq!(parse_segment_header(&damaged), None);
        assert_eq!(parse_segment_header(&[0u8; 24]), None);
    }

    #[test]
    fn variant_hashes_tell_variants_apart() {
        assert_eq!(variant_hash(&[]), 0);
        let gzip = variant_hash(&[("accept-encoding".into(), Some("gzip".into()))]);
        let none = variant_hash(&[("accept-encoding".into(), None)]);
        let empty = variant_hash(&[("accept-encoding".into(), Some(String::new()))]);
        assert!(gzip != none && none != empty && gzip != empty && gzip != 0);
    }
}
