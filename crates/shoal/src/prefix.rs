//! IP address prefixes (CIDR, `192.0.2.0/24`, `2001:db8::/32`), as configs write them: the
//! router's operator prefixes and the proxies a node trusts with its clients' addresses.

use std::net::IpAddr;
use std::str::FromStr;

/// A network and its prefix length, host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    /// The network address.
    pub network: IpAddr,
    /// Bits of the network part.
    pub length: u8,
}

impl IpPrefix {
    /// Whether `address` is inside the prefix. An IPv4 address a dual-stack socket reports as
    /// IPv4-mapped IPv6 (`::ffff:192.0.2.1`) is taken as the IPv4 address it is.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        address.is_ipv4() == self.network.is_ipv4() && mask(address, self.length) == self.network
    }
}

impl FromStr for IpPrefix {
    type Err = String;

    fn from_str(text: &str) -> Result<IpPrefix, String> {
        let invalid = || format!("`{text}`: expected a CIDR prefix such as 192.0.2.0/24");
        let (address, length) = match text.trim().split_once('/') {
            Some((address, length)) => (address, Some(length)),
            None => (text.trim(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| invalid())?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        // A bare address is the prefix of that one address.
        let length = match length {
            Some(length) => length.parse::<u8>().map_err(|_| invalid())?,
            None => bits,
        };
        if length > bits {
            return Err(invalid());
        }
        Ok(IpPrefix {
            network: mask(address, length),
            length,
        })
    }
}

impl std::fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.length)
    }
}

impl<'de> serde::Deserialize<'de> for IpPrefix {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for IpPrefix {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `address` with all but its first `length` bits cleared.
pub fn mask(address: IpAddr, length: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = u32::MAX.checked_shl(32 - u32::from(length)).unwrap_or(0);
            IpAddr::from((bits & mask).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX.checked_shl(128 - u32::from(length)).unwrap_or(0);
            IpAddr::from((bits & mask).to_be_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_contain_their_addresses_only() {
        let check = |prefix: &str, address: &str, expected: bool| {
            let prefix: IpPrefix = prefix.parse().unwrap();
            let address: IpAddr = address.parse().unwrap();
            assert_eq!(prefix.contains(address), expected, "{prefix} {address}");
        };
        check("10.0.0.0/8", "10.200.1.1", true);
        check("10.0.0.0/8", "11.0.0.1", false);
        check("10.1.2.3/8", "10.9.9.9", true);
        check("127.0.0.1", "127.0.0.1", true);
        check("127.0.0.1", "127.0.0.2", false);
        check("0.0.0.0/0", "192.0.2.1", true);
        check("0.0.0.0/0", "2001:db8::1", false);
        check("2001:db8::/32", "2001:db8:ffff::1", true);
        check("2001:db8::/32", "2001:db9::1", false);
        check("192.0.2.0/24", "::ffff:192.0.2.7", true);
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "ten/8",
            "10.0.0.0/-1",
            "",
        ] {
            assert!(bad.parse::<IpPrefix>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            "10.1.2.3/8".parse::<IpPrefix>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }
}
