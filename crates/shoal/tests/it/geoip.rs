//! The GeoIP test databases in `testdata/geoip/` are made here, from the tables below, with
//! networks and values the project chose (documented in `testdata/geoip/README.md`), so that
//! nothing depends on a database from outside the checkout. The test checks that the files
//! are exactly what the tables give; after changing a table, write them again with
//!
//! ```text
//! SHOAL_WRITE_GEOIP=1 cargo test --test it geoip
//! ```

use std::net::IpAddr;
use std::path::PathBuf;

use maxminddb_writer::metadata::IpVersion;
use maxminddb_writer::paths::IpAddrWithMask;
use maxminddb_writer::Database;

/// (network, country, continent). The addresses the tests and `examples/route.toml` use are
/// in the first rows: 81.2.69.142 is in GB, 89.160.20.130 in SE, 216.160.83.57 in the US.
const COUNTRIES: &[(&str, &str, &str)] = &[
    ("81.2.69.0/24", "GB", "EU"),
    ("2.125.160.216/29", "GB", "EU"),
    ("89.160.20.0/24", "SE", "EU"),
    ("216.160.83.0/24", "US", "NA"),
    ("175.16.199.0/24", "CN", "AS"),
    ("67.43.156.0/24", "BT", "AS"),
    ("202.196.224.0/20", "PH", "AS"),
    ("2a02:cf40::/29", "GB", "EU"),
    ("2a02:d3c0::/29", "SE", "EU"),
];

/// (network, AS number, organization). 81.2.69.0/24 has none; the last rows have an AS but
/// no country.
const NETWORKS: &[(&str, u32, &str)] = &[
    ("89.160.20.0/24", 29518, "Bredband2 AB"),
    ("216.160.83.0/24", 209, "Qwest Communications Company, LLC"),
    ("67.43.156.0/24", 35908, "Example Networks"),
    ("2a02:d3c0::/29", 29518, "Bredband2 AB"),
    ("1.0.0.0/24", 15169, "Example Anycast"),
    ("12.81.92.0/22", 7018, "Example Transit"),
    ("50.114.0.0/22", 6939, "Example Exchange"),
];

#[derive(serde::Serialize)]
struct CountryRecord {
    country: Code,
    continent: ContinentCode,
}

#[derive(serde::Serialize)]
struct Code {
    iso_code: &'static str,
}

#[derive(serde::Serialize)]
struct ContinentCode {
    code: &'static str,
}

#[derive(serde::Serialize)]
struct AsnRecord {
    autonomous_system_number: u32,
    autonomous_system_organization: &'static str,
}

/// An IPv6 database (IPv4 networks under `::/96`, where MaxMind readers look for them).
fn database<T: serde::Serialize>(
    kind: &str,
    rows: impl IntoIterator<Item = (&'static str, T)>,
) -> Vec<u8> {
    let mut database = Database::default();
    database.metadata.ip_version = IpVersion::V6;
    database.metadata.database_type = kind.to_owned();
    database.metadata.languages = vec!["en".to_owned()];
    database.metadata.binary_format_major_version = 2;
    // Fixed, so that the files come out the same every time.
    database.metadata.build_epoch = 1_767_225_600;
    for (network, record) in rows {
        let (address, length) = network.split_once('/').unwrap();
        let address: IpAddr = address.parse().unwrap();
        let length: u8 = length.parse().unwrap();
        let path = match address {
            IpAddr::V4(v4) => IpAddrWithMask::new(IpAddr::V6(v4.to_ipv6_compatible()), 96 + length),
            IpAddr::V6(_) => IpAddrWithMask::new(address, length),
        };
        let data = database.insert_value(record).unwrap();
        database.insert_node(path, data);
    }
    database.write_to(Vec::new()).unwrap()
}

/// The files and their contents, from the tables.
fn fixtures() -> [(&'static str, Vec<u8>); 2] {
    let countries = COUNTRIES.iter().map(|&(network, country, continent)| {
        let record = CountryRecord {
            country: Code { iso_code: country },
            continent: ContinentCode { code: continent },
        };
        (network, record)
    });
    let networks = NETWORKS.iter().map(|&(network, number, organization)| {
        let record = AsnRecord {
            autonomous_system_number: number,
            autonomous_system_organization: organization,
        };
        (network, record)
    });
    [
        ("country.mmdb", database("Shoal-Test-Country", countries)),
        ("asn.mmdb", database("Shoal-Test-ASN", networks)),
    ]
}

fn directory() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/geoip")
}

#[test]
fn the_geoip_test_databases_are_made_from_their_tables() {
    for (name, bytes) in fixtures() {
        let path = directory().join(name);
        if std::env::var_os("SHOAL_WRITE_GEOIP").is_some() {
            std::fs::write(&path, &bytes).unwrap();
        }
        let written = std::fs::read(&path).unwrap_or_default();
        assert!(
            written == bytes,
            "{} is not what tests/it/geoip.rs makes: SHOAL_WRITE_GEOIP=1 cargo test --test it geoip",
            path.display()
        );
    }
    // And they read back, through the reader the node uses, as the tables say.
    let geo = shoal::geo::Geo::open(
        Some(&directory().join("country.mmdb")),
        Some(&directory().join("asn.mmdb")),
    )
    .unwrap();
    let ip = |text: &str| text.parse::<IpAddr>().unwrap();
    for &(network, country, _) in COUNTRIES {
        let address = ip(network.split_once('/').unwrap().0);
        assert_eq!(geo.country(address).as_deref(), Some(country), "{network}");
    }
    for &(network, number, _) in NETWORKS {
        let address = ip(network.split_once('/').unwrap().0);
        assert_eq!(geo.asn(address), Some(number), "{network}");
    }
    assert_eq!(geo.country(ip("81.2.69.142")).as_deref(), Some("GB"));
    assert_eq!(geo.asn(ip("81.2.69.142")), None);
    assert_eq!(geo.asn(ip("89.160.20.130")), Some(29518));
    assert_eq!(geo.country(ip("8.8.8.8")), None);
    assert_eq!(geo.asn(ip("8.8.8.8")), None);
    assert_eq!(geo.country(ip("127.0.0.1")), None);
    assert_eq!(geo.location_network(ip("81.2.69.142")), 24);
    assert_eq!(geo.country(ip("2a02:cf40::1")).as_deref(), Some("GB"));
}
