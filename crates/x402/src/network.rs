//! Networks: x402 v2 names them in CAIP-2 (`eip155:84532`), v1 by name (`base-sepolia`). Only
//! EVM chains (the `eip155` namespace) are supported.

use std::fmt;
use std::str::FromStr;

/// The v1 network names and their chain ids, as the reference implementation (`@x402/evm`
/// 2.27.0, `EVM_NETWORK_CHAIN_ID_MAP`) knows them.
const V1_NAMES: &[(&str, u64)] = &[
    ("ethereum", 1),
    ("sepolia", 11_155_111),
    ("abstract", 2741),
    ("abstract-testnet", 11_124),
    ("base-sepolia", 84_532),
    ("base", 8453),
    ("avalanche-fuji", 43_113),
    ("avalanche", 43_114),
    ("iotex", 4689),
    ("sei", 1329),
    ("sei-testnet", 1328),
    ("polygon", 137),
    ("polygon-amoy", 80_002),
    ("peaq", 3338),
    ("story", 1514),
    ("educhain", 41_923),
    ("skale-base-sepolia", 324_705_682),
    ("megaeth", 4326),
    ("monad", 143),
    ("stable", 988),
    ("stable-testnet", 2201),
    ("celo", 42_220),
    ("flare", 14),
];

/// An EVM network, identified by its chain id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Network {
    chain_id: u64,
}

/// Why a text is not a supported network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// Not `<namespace>:<reference>`.
    #[error("network {0:?} is not a CAIP-2 id (namespace:reference)")]
    NotCaip2(String),
    /// A CAIP-2 namespace other than `eip155` (e.g. `solana`).
    #[error("network namespace {0:?} is not supported (only eip155)")]
    UnsupportedNamespace(String),
    /// `eip155:` followed by something that is not a canonical non-zero decimal chain id.
    #[error("eip155 chain id {0:?} is not a canonical non-zero decimal number")]
    InvalidChainId(String),
    /// A v1 network name this crate does not know.
    #[error("v1 network name {0:?} is unknown")]
    UnknownV1Name(String),
    /// A chain with no v1 name cannot be offered to v1 clients.
    #[error("chain {0} has no x402 v1 network name")]
    NoV1Name(u64),
}

impl Network {
    /// Base mainnet, `eip155:8453`.
    pub const BASE: Network = Network { chain_id: 8453 };
    /// Base Sepolia, `eip155:84532` (also what the offline test chain uses).
    pub const BASE_SEPOLIA: Network = Network { chain_id: 84_532 };

    /// The EVM chain with this id. Chain id 0 does not exist and is refused.
    pub fn eip155(chain_id: u64) -> Result<Network, NetworkError> {
        if chain_id == 0 {
            return Err(NetworkError::InvalidChainId("0".into()));
        }
        Ok(Network { chain_id })
    }

    /// The EIP-155 chain id (the EIP-712 domain's `chainId`).
    pub fn chain_id(self) -> u64 {
        self.chain_id
    }

    /// The CAIP-2 id, as x402 v2 writes it: `eip155:84532`.
    pub fn caip2(self) -> String {
        format!("eip155:{}", self.chain_id)
    }

    /// Parses a CAIP-2 id. Only `eip155:<chain id>` is supported.
    pub fn parse_caip2(s: &str) -> Result<Network, NetworkError> {
        let (namespace, reference) = s
            .split_once(':')
            .ok_or_else(|| NetworkError::NotCaip2(s.to_owned()))?;
        let namespace_ok = (3..=8).contains(&namespace.len())
            && namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let reference_ok = (1..=32).contains(&reference.len())
            && reference
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !namespace_ok || !reference_ok {
            return Err(NetworkError::NotCaip2(s.to_owned()));
        }
        if namespace != "eip155" {
            return Err(NetworkError::UnsupportedNamespace(namespace.to_owned()));
        }
        let invalid = || NetworkError::InvalidChainId(reference.to_owned());
        if !reference.bytes().all(|b| b.is_ascii_digit()) || reference.starts_with('0') {
            return Err(invalid());
        }
        let chain_id: u64 = reference.parse().map_err(|_| invalid())?;
        Network::eip155(chain_id)
    }

    /// The x402 v1 name (`base-sepolia`), if the chain has one.
    pub fn v1_name(self) -> Result<&'static str, NetworkError> {
        V1_NAMES
            .iter()
            .find(|(_, id)| *id == self.chain_id)
            .map(|(name, _)| *name)
            .ok_or(NetworkError::NoV1Name(self.chain_id))
    }

    /// Parses an x402 v1 network name (`base-sepolia`).
    pub fn from_v1_name(name: &str) -> Result<Network, NetworkError> {
        V1_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, id)| Network { chain_id: *id })
            .ok_or_else(|| NetworkError::UnknownV1Name(name.to_owned()))
    }
}

impl FromStr for Network {
    type Err = NetworkError;
    /// CAIP-2 (`eip155:84532`); see [`Network::parse_caip2`].
    fn from_str(s: &str) -> Result<Network, NetworkError> {
        Network::parse_caip2(s)
    }
}

/// The CAIP-2 id.
impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "eip155:{}", self.chain_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caip2() {
        assert_eq!("eip155:84532".parse(), Ok(Network::BASE_SEPOLIA));
        assert_eq!(Network::BASE_SEPOLIA.to_string(), "eip155:84532");
        assert_eq!(
            "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp".parse::<Network>(),
            Err(NetworkError::UnsupportedNamespace("solana".into()))
        );
        assert_eq!(
            "eip155:084532".parse::<Network>(),
            Err(NetworkError::InvalidChainId("084532".into()))
        );
        assert_eq!(
            "eip155:0".parse::<Network>(),
            Err(NetworkError::InvalidChainId("0".into()))
        );
        assert_eq!(
            "eip155:99999999999999999999".parse::<Network>(),
            Err(NetworkError::InvalidChainId("99999999999999999999".into()))
        );
        assert!(matches!(
            "base-sepolia".parse::<Network>(),
            Err(NetworkError::NotCaip2(_))
        ));
        assert!(matches!(
            "EIP155:1".parse::<Network>(),
            Err(NetworkError::NotCaip2(_))
        ));
    }

    #[test]
    fn v1_names() {
        assert_eq!(
            Network::from_v1_name("base-sepolia"),
            Ok(Network::BASE_SEPOLIA)
        );
        assert_eq!(Network::BASE.v1_name(), Ok("base"));
        assert_eq!(
            Network::eip155(31337).unwrap().v1_name(),
            Err(NetworkError::NoV1Name(31337))
        );
        assert_eq!(
            Network::from_v1_name("Base-Sepolia"),
            Err(NetworkError::UnknownV1Name("Base-Sepolia".into()))
        );
        for (name, id) in V1_NAMES {
            let n = Network::from_v1_name(name).unwrap();
            assert_eq!(n.chain_id(), *id);
            assert_eq!(n.v1_name(), Ok(*name), "names are unique per chain");
        }
    }
}
