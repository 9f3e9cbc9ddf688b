//! `Range: bytes=…` requests (RFC 9110 §14): parsing, resolution against a length, and the
//! limits that keep a many-ranges request from being used as an amplifier.

/// Most ranges honoured in one request; beyond it the whole representation is sent.
pub const MAX_RANGES: usize = 16;

/// A resolved, satisfiable byte range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// What a `Range` header asks of a representation of a given length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable `Range`: send the whole representation (absent, not `bytes`, malformed, or too
    /// many ranges, all of which RFC 9110 lets a server ignore).
    Whole,
    /// These ranges, in request order.
    Parts(Vec<ByteRange>),
    /// None of the ranges overlaps the representation: 416.
    Unsatisfiable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spec {
    From(u64, Option<u64>),
    Suffix(u64),
}

/// Parses the specs of a `Range` header, or `None` if it is not a valid `bytes` range set.
fn parse(header: &str) -> Option<Vec<Spec>> {
    let (unit, set) = header.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    for item in set.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (first, last) = item.split_once('-')?;
        let number = |text: &str| -> Option<u64> {
            let text = text.trim();
            (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| text.parse().ok())?
        };
        let spec = if first.trim().is_empty() {
            Spec::Suffix(number(last)?)
        } else {
            let start = number(first)?;
            let end = if last.trim().is_empty() {
                None
            } else {
                Some(number(last)?)
            };
            if end.is_some_and(|end| end < start) {
                return None;
            }
            Spec::From(start, end)
        };
        specs.push(spec);
    }
    (!specs.is_empty()).then_some(specs)
}

/// Resolves a `Range` header against a representation of `length` bytes.
pub fn resolve(header: Option<&str>, length: u64) -> RangeRequest {
    let Some(specs) = header.and_then(parse) else {
        return RangeRequest::Whole;
    };
    if specs.len() > MAX_RANGES {
        return RangeRequest::Whole;
    }
    let ranges: Vec<ByteRange> = specs
        .into_iter()
        .filter_map(|spec| match spec {
            Spec::From(start, _) if start >= length => None,
            Spec::From(start, end) => Some(ByteRange {
                start,
                end: end.map_or(length, |end| end.saturating_add(1).min(length)),
            }),
            // RFC 9110 §14.1.1: a suffix range needs a non-zero length on both sides.
            Spec::Suffix(0) => None,
            Spec::Suffix(_) if length == 0 => None,
            Spec::Suffix(count) => Some(ByteRange {
                start: length.saturating_sub(count),
                end: length,
            }),
        })
        .collect();
    if ranges.is_empty() {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Parts(coalesced(ranges))
    }
}

/// `ranges` as they are, unless some overlap or touch: then sorted and merged
/// (RFC 9110 §14.2 allows it whatever the order asked), so that `bytes=0-,0-,0-…` costs the
/// representation once, not sixteen times.
fn coalesced(mut ranges: Vec<ByteRange>) -> Vec<ByteRange> {
    if ranges.len() < 2 {
        return ranges;
    }
    let mut sorted = ranges.clone();
    sorted.sort_unstable_by_key(|range| range.start);
    let crowded = sorted.windows(2).any(|pair| pair[1].start <= pair[0].end);
    if !crowded {
        return ranges;
    }
    ranges.clear();
    for range in sorted {
        match ranges.last_mut() {
            Some(last) if range.start <= last.end => {
                last.end = last.end.max(range.end);
            }
            _ => ranges.push(range),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(list: &[(u64, u64)]) -> RangeRequest {
        RangeRequest::Parts(
            list.iter()
                .map(|&(start, end)| ByteRange { start, end })
                .collect(),
        )
    }

    #[test]
    fn resolve_table() {
        let check = |header: &str, expected: RangeRequest| {
            assert_eq!(resolve(Some(header), 1000), expected, "{header}");
        };
        check("bytes=0-99", parts(&[(0, 100)]));
        check("bytes=900-", parts(&[(900, 1000)]));
        check("bytes=-100", parts(&[(900, 1000)]));
        check("bytes=-5000", parts(&[(0, 1000)]));
        check("bytes=990-2000", parts(&[(990, 1000)]));
        check("bytes=0-0,-1", parts(&[(0, 1), (999, 1000)]));
        // Apart, in the order asked; overlapping or touching, merged in order.
        check("bytes=500-599,0-99", parts(&[(500, 600), (0, 100)]));
        check("bytes=0-,0-,0-,0-", parts(&[(0, 1000)]));
        check("bytes=500-599,0-99,50-549", parts(&[(0, 600)]));
        check("bytes=0-9,10-19,800-899", parts(&[(0, 20), (800, 900)]));
        check(
            "bytes=800-899,0-9,30-39",
            parts(&[(800, 900), (0, 10), (30, 40)]),
        );
        check("bytes= 1-2 , 5-6", parts(&[(1, 3), (5, 7)]));
        check("bytes=1000-", RangeRequest::Unsatisfiable);
        check("bytes=-0", RangeRequest::Unsatisfiable);
        check("bytes=5-1", RangeRequest::Whole);
        check("bytes=abc", RangeRequest::Whole);
        check("items=0-1", RangeRequest::Whole);
        check("bytes=", RangeRequest::Whole);
        let many = format!(
            "bytes={}",
            (0..20)
                .map(|i| format!("{i}-{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        check(&many, RangeRequest::Whole);
        assert_eq!(resolve(None, 10), RangeRequest::Whole);
        // Found by the `range` fuzz target: nothing of an empty representation is satisfiable.
        assert_eq!(resolve(Some("bytes=-99"), 0), RangeRequest::Unsatisfiable);
        assert_eq!(resolve(Some("bytes=0-"), 0), RangeRequest::Unsatisfiable);
    }
}
