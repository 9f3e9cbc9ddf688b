//! The EDNS Client Subnet option of a query (RFC 7871): found, checked and echoed here, the
//! same way for both of the DNS server's paths.
//!
//! Read by hand rather than through hickory-proto's `ClientSubnet`, which differs from the RFC
//! both ways: it refuses FAMILY 0, which §7.1.2 lets a stub send with SOURCE PREFIX-LENGTH 0
//! (the whole message then fails to parse), and it accepts what §6 says a server should refuse
//! with FORMERR (more address octets than the prefix needs, bits set past it). Its echo would
//! also rewrite the FAMILY and ADDRESS from its parsed form, where §7.2.1 wants them as sent.

use std::net::IpAddr;

/// The option, as a query carried it.
#[derive(Clone, Copy, Debug)]
pub(super) struct ClientSubnet {
    /// The client's subnet, or `None` for SOURCE PREFIX-LENGTH 0: the sender asked that no
    /// address be used, so the query's source address places the client (§7.1.2).
    pub address: Option<IpAddr>,
    /// FAMILY: 1 (IPv4), 2 (IPv6), or 0 with no address.
    pub family: u16,
    /// Where its data (FAMILY, SOURCE and SCOPE PREFIX-LENGTH, ADDRESS) starts in the query.
    pub at: usize,
    /// The length of that data.
    pub length: usize,
}

/// A client subnet option (or the OPT record framing it) that breaks RFC 7871 §6 or RFC 6891:
/// the query is answered FORMERR.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Malformed;

const SUBNET: u16 = 8;
const OPT: u16 = 41;

impl ClientSubnet {
    /// The address the answer is chosen for: the subnet's, else the query's `source`.
    pub fn client(&self, source: IpAddr) -> IpAddr {
        self.address.unwrap_or(source)
    }

    /// The SCOPE PREFIX-LENGTH to answer with, `decided` being the prefix length of the data
    /// that chose the answer: 0 when the sender gave no address bits (§7.1.2), so that its
    /// resolver does not cache the answer as valid for a subnet it never named.
    pub fn scope(&self, decided: impl FnOnce() -> u8) -> u8 {
        match self.address {
            Some(_) => decided(),
            None => 0,
        }
    }

    /// Appends the option's data as it came in `query`, but with `scope` (§7.2.1: FAMILY,
    /// SOURCE PREFIX-LENGTH and ADDRESS as sent).
    pub fn echo(&self, query: &[u8], scope: u8, out: &mut Vec<u8>) {
        let sent = &query[self.at..self.at + self.length];
        out.extend_from_slice(&sent[..3]);
        out.push(scope);
        out.extend_from_slice(&sent[4..]);
    }

    /// `message` (the one this option was found in) as hickory-proto can parse it: FAMILY 0
    /// written as 1, which with no address bits means the same.
    pub fn parseable<'a>(&self, message: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        match self.family {
            0 => [&message[..self.at], &[0, 1], &message[self.at + 2..]]
                .concat()
                .into(),
            _ => message.into(),
        }
    }

    /// The option whose data is `query[at..at + length]`: FAMILY 1 or 2 with a SOURCE
    /// PREFIX-LENGTH no longer than the family's addresses, exactly the address octets that
    /// prefix needs and no bit set past it; or FAMILY 0 with SOURCE PREFIX-LENGTH 0 and no
    /// address. The SCOPE PREFIX-LENGTH of a query should be 0; another value is ignored.
    fn read(query: &[u8], at: usize, length: usize) -> Result<ClientSubnet, Malformed> {
        let data = query.get(at..at + length).ok_or(Malformed)?;
        let [family_high, family_low, source, _scope, address @ ..] = data else {
            return Err(Malformed);
        };
        let (family, source) = (u16::from_be_bytes([*family_high, *family_low]), *source);
        let width = match family {
            0 if source == 0 => 0,
            1 => 32,
            2 => 128,
            _ => return Err(Malformed),
        };
        if source > width || address.len() != usize::from(source).div_ceil(8) {
            return Err(Malformed);
        }
        if source % 8 != 0 && address.last().ok_or(Malformed)? & (0xFF >> (source % 8)) != 0 {
            return Err(Malformed);
        }
        let address = match (family, source) {
            (_, 0) => None,
            (1, _) => {
                let mut octets = [0u8; 4];
                octets[..address.len()].copy_from_slice(address);
                Some(IpAddr::from(octets))
            }
            _ => {
                let mut octets = [0u8; 16];
                octets[..address.len()].copy_from_slice(address);
                Some(IpAddr::from(octets))
            }
        };
        Ok(ClientSubnet {
            address,
            family,
            at,
            length,
        })
    }
}

/// The client subnet option among the options of an OPT record, `query[start..end]`; more
/// than one is malformed, as is an option that runs past the record.
pub(super) fn in_options(
    query: &[u8],
    start: usize,
    end: usize,
) -> Result<Option<ClientSubnet>, Malformed> {
    let mut found = None;
    let mut at = start;
    while at < end {
        let code = u16_at(query, at)?;
        let length = usize::from(u16_at(query, at + 2)?);
        let data = at + 4;
        if data + length > end {
            return Err(Malformed);
        }
        if code == SUBNET {
            if found.is_some() {
                return Err(Malformed);
            }
            found = Some(ClientSubnet::read(query, data, length)?);
        }
        at = data + length;
    }
    Ok(found)
}

/// The client subnet option of any message: its header, questions and records are walked to
/// the OPT record (names skipped, compressed or not). A message too short for what its header
/// counts is malformed, as the full parser would find it.
pub(super) fn in_message(query: &[u8]) -> Result<Option<ClientSubnet>, Malformed> {
    let count = |at: usize| u16_at(query, at).map(usize::from);
    let (questions, records) = (count(4)?, count(6)? + count(8)? + count(10)?);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(query, at)? + 4;
    }
    for _ in 0..records {
        let fields = skip_name(query, at)?;
        let kind = u16_at(query, fields)?;
        let data = fields + 10;
        let end = data + usize::from(u16_at(query, fields + 8)?);
        if end > query.len() {
            return Err(Malformed);
        }
        if kind == OPT {
            return in_options(query, data, end);
        }
        at = end;
    }
    Ok(None)
}

/// Where the name at `at` ends: after its root label, or after a compression pointer.
fn skip_name(query: &[u8], mut at: usize) -> Result<usize, Malformed> {
    loop {
        let length = *query.get(at).ok_or(Malformed)?;
        match length >> 6 {
            0 if length == 0 => return Ok(at + 1),
            0 => at += 1 + usize::from(length),
            3 => return Ok(at + 2),
            _ => return Err(Malformed),
        }
    }
}

fn u16_at(query: &[u8], at: usize) -> Result<u16, Malformed> {
    match query.get(at..at + 2) {
        Some(&[high, low]) => Ok(u16::from_be_bytes([high, low])),
        _ => Err(Malformed),
    }
}
