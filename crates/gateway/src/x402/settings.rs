//! The `[x402]` section parsed once ([`X402Settings`]), the offer of a priced service
//! ([`X402Offer`]), and the facilitator's HTTP API (`Facilitator`: timeouts, bounded answers,
//! a settle never retried).

use std::time::Duration;

use serde_json::Value;
use turnpike_x402::{
    Network, PaymentRequirements, SettleResponse, TokenAmount, TokenDomain, VerifyResponse,
    parse_address,
};

use crate::config::{ConfigError, TokenPrice, X402Config};

/// Largest facilitator answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The `[x402]` section, parsed once: the chain, token, recipient and facilitator.
#[derive(Debug)]
pub struct X402Settings {
    network: Network,
    asset: turnpike_x402::Address,
    pay_to: turnpike_x402::Address,
    domain: TokenDomain,
    decimals: u8,
    max_timeout_secs: u64,
    pub(crate) facilitator: Facilitator,
}

impl X402Settings {
    /// Checks `[x402]`; errors name the key (`x402.asset`) and never repeat the URL.
    pub fn parse(c: &X402Config) -> Result<X402Settings, ConfigError> {
        let bad = |key: &str, m: &dyn std::fmt::Display| ConfigError::Invalid {
            key: format!("x402.{key}"),
            message: m.to_string(),
        };
        let network = Network::parse_caip2(&c.network).map_err(|e| bad("network", &e))?;
        let asset = parse_address(&c.asset).map_err(|e| bad("asset", &e))?;
        let pay_to = parse_address(&c.pay_to).map_err(|e| bad("pay_to", &e))?;
        if pay_to.is_zero() {
            return Err(bad("pay_to", &"must not be the zero address"));
        }
        for (key, text) in [
            ("token_name", &c.token_name),
            ("token_version", &c.token_version),
        ] {
            if text.is_empty() || text.len() > 64 {
                return Err(bad(key, &"must be 1 to 64 characters"));
            }
        }
        if c.decimals > 30 {
            return Err(bad("decimals", &"must be at most 30"));
        }
        if c.max_timeout_secs < 30 || c.max_timeout_secs > 86_400 {
            return Err(bad(
                "max_timeout_secs",
                &"must be between 30 and 86400 seconds",
            ));
        }
        for (key, ms) in [
            ("verify_timeout_ms", c.verify_timeout_ms),
            ("settle_timeout_ms", c.settle_timeout_ms),
        ] {
            if ms == 0 || ms > 600_000 {
                return Err(bad(key, &"must be between 1 and 600000"));
            }
        }
        let facilitator = Facilitator::new(c).map_err(|m| bad("facilitator_url", &m))?;
        Ok(X402Settings {
            network,
            asset,
            pay_to,
            domain: TokenDomain {
                name: c.token_name.clone(),
                version: c.token_version.clone(),
            },
            decimals: c.decimals,
            max_timeout_secs: c.max_timeout_secs,
            facilitator,
        })
    }

    /// The offer of a service priced `price`: what its 402 carries and what a payment must
    /// match exactly. Errors are messages for the `price_usdc` key.
    pub fn offer(&self, price: &TokenPrice) -> Result<X402Offer, String> {
        let amount = match price {
            TokenPrice::BaseUnits(n) => TokenAmount::from_base_units(u128::from(*n)),
            TokenPrice::Text(t) => match t.strip_suffix('u') {
                Some(units) => TokenAmount::parse_base_units(units).map_err(|e| e.to_string())?,
                None => TokenAmount::parse_decimal(t, self.decimals).map_err(|e| e.to_string())?,
            },
        };
        if amount == TokenAmount::ZERO {
            return Err(
                "must be above zero (a free service sets price_sats = 0 and no x402)".into(),
            );
        }
        Ok(X402Offer {
            requirements: PaymentRequirements {
                network: self.network,
                amount,
                asset: self.asset,
                pay_to: self.pay_to,
                max_timeout_seconds: self.max_timeout_secs,
                extra: self.domain.clone(),
            },
            decimals: self.decimals,
        })
    }
}

/// What a service offers over x402.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X402Offer {
    /// The one `accepts` entry (scheme `exact`).
    pub requirements: PaymentRequirements,
    /// The token's decimals, to show the price to people.
    pub decimals: u8,
}

impl X402Offer {
    /// The price as people write it (`"0.01"`).
    pub fn price_text(&self) -> String {
        self.requirements.amount.to_decimal_string(self.decimals)
    }
}

/// The facilitator's HTTP API, with timeouts; a settle is never retried.
#[derive(Debug)]
pub(crate) struct Facilitator {
    verify_url: reqwest::Url,
    settle_url: reqwest::Url,
    verify_timeout: Duration,
    settle_timeout: Duration,
    client: reqwest::Client,
}

/// Why the facilitator did not accept or settle a payment.
#[derive(Debug)]
pub(crate) enum FacilitatorFailure {
    /// `/verify` answered that the payment is invalid (its reason code). Nothing moved.
    Refused(String),
    /// It could not be asked (for `/settle`: the request never left), or `/verify` gave no
    /// usable answer. Nothing moved.
    Unavailable(String),
    /// A `/settle` was sent and no usable answer came: the payment may have moved.
    Unknown(String),
}

impl Facilitator {
    fn new(c: &X402Config) -> Result<Facilitator, String> {
        let base =
            reqwest::Url::parse(&c.facilitator_url).map_err(|_| "is not a URL".to_owned())?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err("must be an http:// or https:// URL".into());
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err("must not hold user:password@".into());
        }
        let join = |p: &str| {
            let mut u = base.clone();
            let path = format!("{}/{p}", base.path().trim_end_matches('/'));
            u.set_path(&path);
            u
        };
        turnpike_lightning::ensure_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Facilitator {
            verify_url: join("verify"),
            settle_url: join("settle"),
            verify_timeout: Duration::from_millis(c.verify_timeout_ms),
            settle_timeout: Duration::from_millis(c.settle_timeout_ms),
            client,
        })
    }

    /// `POST /verify`: `Ok` only for `isValid: true`. Nothing moves either way.
    pub(crate) async fn verify(&self, body: &Value) -> Result<(), FacilitatorFailure> {
        let answer = self
            .post(&self.verify_url, body, self.verify_timeout)
            .await
            .map_err(|(_, why)| FacilitatorFailure::Unavailable(why))?;
        let v = VerifyResponse::from_json(&answer)
            .map_err(|e| FacilitatorFailure::Unavailable(format!("malformed answer: {e}")))?;
        match v.is_valid {
            true => Ok(()),
            false => Err(FacilitatorFailure::Refused(
                v.invalid_reason.unwrap_or_else(|| "invalid_payload".into()),
            )),
        }
    }

    /// `POST /settle`, once: never retried.
    pub(crate) async fn settle(&self, body: &Value) -> Result<SettleResponse, FacilitatorFailure> {
        let answer = self
            .post(&self.settle_url, body, self.settle_timeout)
            .await
            .map_err(|(sent, why)| match sent {
                false => FacilitatorFailure::Unavailable(why),
                true => FacilitatorFailure::Unknown(why),
            })?;
        SettleResponse::from_json(&answer)
            .map_err(|e| FacilitatorFailure::Unknown(format!("malformed /settle answer: {e}")))
    }

    /// POSTs `body` as JSON and reads a 200 answer (at most [`MAX_ANSWER_BYTES`]). The error
    /// says whether the request may have reached the facilitator, and why it failed.
    async fn post(
        &self,
        url: &reqwest::Url,
        body: &Value,
        timeout: Duration,
    ) -> Result<Vec<u8>, (bool, String)> {
        let mut resp = self
            .client
            .post(url.clone())
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| (!e.is_connect(), transport(&e)))?;
        let status = resp.status();
        let mut answer = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                        return Err((true, "answer too large".into()));
                    }
                    answer.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err((true, transport(&e))),
            }
        }
        if status != reqwest::StatusCode::OK {
            return Err((
                true,
                format!(
                    "status {status}: {}",
                    String::from_utf8_lossy(&answer[..answer.len().min(200)])
                ),
            ));
        }
        Ok(answer)
    }
}

fn transport(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> X402Config {
        X402Config {
            facilitator_url: "http://127.0.0.1:18547/".into(),
            network: "eip155:84532".into(),
            asset: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512".into(),
            token_name: "USDC".into(),
            token_version: "2".into(),
            decimals: 6,
            pay_to: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".into(),
            max_timeout_secs: 300,
            verify_timeout_ms: 1000,
            settle_timeout_ms: 1000,
        }
    }

    #[test]
    fn settings_and_prices_are_parsed_once_with_named_errors() {
        let s = X402Settings::parse(&config()).unwrap();
        assert_eq!(
            s.facilitator.verify_url.as_str(),
            "http://127.0.0.1:18547/verify"
        );
        let amount = |p: TokenPrice| s.offer(&p).map(|o| o.requirements.amount.base_units());
        assert_eq!(amount(TokenPrice::Text("0.01".into())), Ok(10_000));
        assert_eq!(amount(TokenPrice::Text("10000u".into())), Ok(10_000));
        assert_eq!(amount(TokenPrice::BaseUnits(7)), Ok(7));
        for bad in ["0.0000001", "-1", "1e3", "", "0", "0u", "0.000000", " 1"] {
            assert!(amount(TokenPrice::Text(bad.into())).is_err(), "{bad}");
        }
        assert!(amount(TokenPrice::BaseUnits(0)).is_err());
        type Edit = fn(&mut X402Config);
        let cases: Vec<(Edit, &str)> = vec![
            (|c| c.network = "solana:x".into(), "x402.network"),
            (|c| c.network = "84532".into(), "x402.network"),
            (|c| c.asset = "0x12".into(), "x402.asset"),
            (
                |c| c.pay_to = format!("0x{}", "0".repeat(40)),
                "x402.pay_to",
            ),
            (|c| c.token_name = String::new(), "x402.token_name"),
            (|c| c.decimals = 77, "x402.decimals"),
            (|c| c.max_timeout_secs = 5, "x402.max_timeout_secs"),
            (|c| c.settle_timeout_ms = 0, "x402.settle_timeout_ms"),
            (
                |c| c.facilitator_url = "ftp://x/".into(),
                "x402.facilitator_url",
            ),
            (
                |c| c.facilitator_url = "http://u:s3cr3t@h/".into(),
                "x402.facilitator_url",
            ),
        ];
        for (edit, key) in cases {
            let mut c = config();
            edit(&mut c);
            let e = X402Settings::parse(&c).unwrap_err().to_string();
            assert!(e.contains(&format!("{key}:")), "{key}: {e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
    }
}
