//! The header fields of a stored response, held once, as the block of HTTP/1.1 field lines that
//! a hit writes.
//!
//! Why not an `http::HeaderMap`: a map of a typical response's seven or eight fields reserves a
//! dozen buckets of about 110 bytes each, plus an index, so it weighs some 1.4 KiB, more than a
//! small body; and it is a second copy, next to the serialized block every HTTP/1 hit needs. The
//! block alone is a fifth of that. The paths that want a map (HTTP/2 hits, ranges, 304s,
//! revalidation) build one from the block, with values that are slices of it (no copy).

use bytes::Bytes;
use http::header::{ETAG, LAST_MODIFIED};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::cache::policy;

/// A stored response's end-to-end header fields, as `name: value\r\n` lines, with the
/// validators read from them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    block: Bytes,
    /// `ETag`, a slice of `block`.
    etag: Option<HeaderValue>,
    /// `Last-Modified`, in milliseconds since the epoch.
    last_modified: Option<u64>,
}

impl Fields {
    /// The fields of `headers`.
    pub fn new(headers: &HeaderMap) -> Fields {
        // Sized exactly: one allocation, which `Bytes` then takes over as it is.
        let size = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        let mut block = Vec::with_capacity(size);
        // The entity tag's place in the block, noted while writing it rather than found again
        // by reading the block back: this runs once per stored response, on the miss path.
        let mut etag = None;
        for (name, value) in headers {
            block.extend_from_slice(name.as_str().as_bytes());
            block.extend_from_slice(b": ");
            if name == ETAG && etag.is_none() {
                etag = Some(block.len()..block.len() + value.len());
            }
            block.extend_from_slice(value.as_bytes());
            block.extend_from_slice(b"\r\n");
        }
        let block = Bytes::from(block);
        Fields {
            // A slice of the block, so the value costs no allocation of its own.
            etag: etag.and_then(|place| HeaderValue::from_maybe_shared(block.slice(place)).ok()),
            last_modified: policy::http_date(headers, LAST_MODIFIED),
            block,
        }
    }

    /// The field lines, as an HTTP/1.1 response head carries them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.block
    }

    /// The entity tag, strong or weak.
    pub fn etag(&self) -> Option<&HeaderValue> {
        self.etag.as_ref()
    }

    /// `Last-Modified`, in milliseconds since the epoch.
    pub fn last_modified(&self) -> Option<u64> {
        self.last_modified
    }

    /// The first value of the field `name`.
    pub fn get(&self, name: &HeaderName) -> Option<HeaderValue> {
        self.get_all(name).next()
    }

    /// Every value of the field `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = HeaderValue> + 'a {
        self.lines()
            .filter(move |(line_name, _)| *line_name == name.as_str().as_bytes())
            .filter_map(|(_, value)| self.value(value))
    }

    /// Every field as `(name, value)`, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], HeaderValue)> + '_ {
        self.lines()
            .filter_map(|(name, value)| Some((name, self.value(value)?)))
    }

    /// The fields as a map, for the paths that edit or look up many of them.
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.count());
        for (name, value) in self.iter() {
            if let Ok(name) = HeaderName::from_bytes(name) {
                map.append(name, value);
            }
        }
        map
    }

    /// How many fields there are.
    pub fn count(&self) -> usize {
        self.lines().count()
    }

    /// Bytes held, for the RAM budget.
    pub fn byte_len(&self) -> usize {
        self.block.len()
    }

    /// Each line's name and the place of its value in the block. The block was written by
    /// [`Fields::new`] from valid fields: a value holds no CR, a name no colon.
    fn lines(&self) -> impl Iterator<Item = (&[u8], std::ops::Range<usize>)> + '_ {
        let block = &self.block[..];
        let mut start = 0;
        std::iter::from_fn(move || {
            let rest = block.get(start..)?;
            let line = &rest[..rest.iter().position(|&byte| byte == b'\r')?];
            let colon = line.iter().position(|&byte| byte == b':')?;
            let name = &line[..colon];
            let value = start + (colon + 2).min(line.len())..start + line.len();
            start += line.len() + 2;
            Some((name, value))
        })
    }

    fn value(&self, range: std::ops::Range<usize>) -> Option<HeaderValue> {
        HeaderValue::from_maybe_shared(self.block.slice(range)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::header_map as map;

    #[test]
    fn the_block_reads_back_as_the_map_it_was_written_from() {
        let headers = map(&[
            ("content-type", "text/plain"),
            ("set-cookie", "a=1"),
            ("x-empty", ""),
            ("etag", "\"v1\""),
            ("set-cookie", "b=2; Path=/x:y"),
            ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ]);
        let fields = Fields::new(&headers);
        assert_eq!(fields.to_map(), headers);
        assert_eq!(
            fields.as_bytes(),
            &b"content-type: text/plain\r\nset-cookie: a=1\r\nset-cookie: b=2; Path=/x:y\r\n\
               x-empty: \r\netag: \"v1\"\r\nlast-modified: Tue, 01 Dec 2026 10:00:00 GMT\r\n"[..]
        );
        let cookies: Vec<_> = fields
            .get_all(&http::header::SET_COOKIE)
            .map(|value| value.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(cookies, ["a=1", "b=2; Path=/x:y"]);
        assert_eq!(fields.etag().unwrap(), "\"v1\"");
        assert_eq!(fields.last_modified(), Some(1_796_119_200_000));
        assert_eq!(fields.get(&http::header::DATE), None);
        assert_eq!(fields.count(), 6);
    }

    #[test]
    fn no_fields_is_an_empty_block() {
        let fields = Fields::new(&HeaderMap::new());
        assert_eq!((fields.count(), fields.byte_len()), (0, 0));
        assert_eq!(fields.to_map(), HeaderMap::new());
        assert_eq!(fields.etag(), None);
    }
}
