//! Where a client is: country, continent and AS number from MaxMind databases (the `maxminddb`
//! crate), for the access log's traffic report and the router's rules. Lookups borrow from the
//! database (no allocation); a missing entry is `None`.

use std::net::IpAddr;
use std::path::Path;

/// The MaxMind databases, each optional.
pub struct Geo {
    country: Option<maxminddb::Reader<Vec<u8>>>,
    asn: Option<maxminddb::Reader<Vec<u8>>>,
}

#[derive(serde::Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow)]
    country: Option<Code<'a>>,
    #[serde(borrow)]
    continent: Option<ContinentCode<'a>>,
}

#[derive(serde::Deserialize)]
struct Code<'a> {
    iso_code: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct ContinentCode<'a> {
    code: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct AsnRecord {
    autonomous_system_number: Option<u32>,
}

/// The length of the network of `reader` that holds `ip`, in `ip`'s family (0 when there is
/// no database, or its answer comes from above the IPv4 part of an IPv6 database).
fn network_length(reader: Option<&maxminddb::Reader<Vec<u8>>>, ip: IpAddr) -> u8 {
    let Some(network) = reader.and_then(|reader| reader.lookup(ip).ok()?.network().ok()) else {
        return 0;
    };
    if network.is_ipv4() == ip.is_ipv4() {
        network.prefix()
    } else {
        0
    }
}

/// A two-letter code (country: ISO 3166-1; continent: EU, NA, ...), uppercase.
pub type Code2 = [u8; 2];

fn code2(text: &str) -> Option<Code2> {
    match text.as_bytes() {
        [a, b] => Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()]),
        _ => None,
    }
}

impl Geo {
    /// Opens the databases given; the error names the file that cannot be read.
    pub fn open(country: Option<&Path>, asn: Option<&Path>) -> Result<Geo, String> {
        let open = |path: Option<&Path>| {
            path.map(|path| {
                maxminddb::Reader::open_readfile(path).map_err(|error| {
                    format!(
                        "cannot read the MaxMind database {}: {error}",
                        path.display()
                    )
                })
            })
            .transpose()
        };
        Ok(Geo {
            country: open(country)?,
            asn: open(asn)?,
        })
    }

    /// No database at all.
    pub fn none() -> Geo {
        Geo {
            country: None,
            asn: None,
        }
    }

    /// Whether no database is loaded.
    pub fn is_empty(&self) -> bool {
        self.country.is_none() && self.asn.is_none()
    }

    /// The country and continent of `ip`.
    pub fn location(&self, ip: IpAddr) -> (Option<Code2>, Option<Code2>) {
        let Some(reader) = &self.country else {
            return (None, None);
        };
        match reader
            .lookup(ip)
            .and_then(|found| found.decode::<CountryRecord<'_>>())
        {
            Ok(Some(record)) => (
                record.country.and_then(|c| c.iso_code).and_then(code2),
                record.continent.and_then(|c| c.code).and_then(code2),
            ),
            Ok(None) | Err(_) => (None, None),
        }
    }

    /// The prefix length of the country database's network that holds `ip` (with data or
    /// without): every address in it has the same location. 0 without the database.
    pub fn location_network(&self, ip: IpAddr) -> u8 {
        network_length(self.country.as_ref(), ip)
    }

    /// As [`Geo::location_network`], for the AS database.
    pub fn asn_network(&self, ip: IpAddr) -> u8 {
        network_length(self.asn.as_ref(), ip)
    }

    /// The ISO code of the country of `ip`, as text.
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let (country, _) = self.location(ip);
        country.map(|code| String::from_utf8_lossy(&code).into_owned())
    }

    /// The AS number `ip` belongs to.
    pub fn asn(&self, ip: IpAddr) -> Option<u32> {
        let record: AsnRecord = self.asn.as_ref()?.lookup(ip).ok()?.decode().ok()??;
        record.autonomous_system_number
    }
}
