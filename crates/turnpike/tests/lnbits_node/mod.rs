//! A real LNbits for end-to-end tests (1.6.2 from PyPI, FakeWallet: no real money), from the
//! info JSON `scripts/lnbits.sh start` writes (`TURNPIKE_LNBITS_INFO`): fresh wallets, funded
//! by the super user, their keys and balances.
#![allow(dead_code)]

use serde_json::{Value, json};
use turnpike_lightning::lnbits::{LnbitsBackend, LnbitsConfig};
use turnpike_lightning::{Msat, PaymentBackend, SecretSource};

pub struct Node {
    pub url: String,
    pub token: String,
    pub http: reqwest::Client,
}

pub struct Keys {
    pub id: String,
    pub admin: String,
    pub invoice: String,
}

/// The LNbits of `TURNPIKE_LNBITS_INFO`; `None` (skipped, said) without it, a failure under
/// `TURNPIKE_STRICT_TESTS=1`.
pub fn node() -> Option<Node> {
    let problem = match std::env::var("TURNPIKE_LNBITS_INFO").map(std::fs::read_to_string) {
        Ok(Ok(text)) => {
            let info: Value = serde_json::from_str(&text).expect("LNbits info is JSON");
            turnpike_lightning::ensure_crypto_provider();
            return Some(Node {
                url: info["url"].as_str().unwrap().to_owned(),
                token: info["access_token"].as_str().unwrap().to_owned(),
                http: reqwest::Client::new(),
            });
        }
        Ok(Err(e)) => format!("cannot read TURNPIKE_LNBITS_INFO: {e}"),
        Err(_) => "TURNPIKE_LNBITS_INFO is not set".to_owned(),
    };
    if std::env::var("TURNPIKE_STRICT_TESTS").as_deref() == Ok("1") {
        panic!("needs a real LNbits: {problem}; run scripts/test.sh");
    }
    eprintln!("SKIPPED: LNbits end-to-end test: {problem}; run scripts/test.sh");
    None
}

impl Node {
    /// A fresh wallet credited with `sats`.
    pub async fn wallet(&self, name: &str, sats: u64) -> Keys {
        let w: Value = self
            .http
            .post(format!("{}/api/v1/account", self.url))
            .json(&json!({ "name": format!("{name}-{}", turnpike_l402::TokenId::random().to_hex()[..8].to_owned()) }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let keys = Keys {
            id: w["id"].as_str().unwrap().into(),
            admin: w["adminkey"].as_str().unwrap().into(),
            invoice: w["inkey"].as_str().unwrap().into(),
        };
        let patched = self
            .http
            .patch(format!("{}/api/v1/wallet", self.url))
            .header("X-Api-Key", &keys.admin)
            .json(&json!({ "currency": "" }))
            .send()
            .await
            .unwrap();
        assert!(patched.status().is_success());
        if sats > 0 {
            let credited = self
                .http
                .put(format!("{}/users/api/v1/balance", self.url))
                .bearer_auth(&self.token)
                .json(&json!({ "id": keys.id, "amount": sats }))
                .send()
                .await
                .unwrap();
            assert!(credited.status().is_success());
        }
        keys
    }

    /// The wallet as a payer (its admin key).
    pub fn payer(&self, keys: &Keys) -> LnbitsBackend {
        LnbitsBackend::new(&LnbitsConfig {
            admin_key: Some(SecretSource::Inline(keys.admin.clone())),
            ..LnbitsConfig::new(self.url.clone())
        })
        .unwrap()
    }
}

/// The wallet's balance.
pub async fn balance(node: &Node, keys: &Keys) -> Msat {
    node.payer(keys).balance().await.unwrap()
}

/// The hub payout of an LNbits wallet (its invoice key).
pub fn lnbits_payout(node: &Node, keys: &Keys) -> Value {
    json!({ "kind": "lnbits", "url": node.url, "invoice_key": keys.invoice })
}

/// Pays the 402 `challenge` (its JSON body) from `payer`: the `Authorization` value to retry
/// with.
pub async fn pay_challenge(node: &Node, payer: &Keys, challenge: &Value) -> String {
    use turnpike_l402::credential::Credential;
    use turnpike_l402::macaroon::Macaroon;
    let invoice = challenge["invoice"].as_str().unwrap();
    let paid = node
        .payer(payer)
        .pay_invoice(invoice, Msat(10_000))
        .await
        .unwrap();
    let macaroon = Macaroon::from_base64(challenge["macaroon"].as_str().unwrap()).unwrap();
    Credential {
        macaroon,
        preimage: paid.preimage,
    }
    .authorization_value()
}
