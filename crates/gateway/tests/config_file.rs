//! A config file as a user writes it: parsed, its services checked, every error naming the key
//! at fault and never repeating a value from the file.

use turnpike_gateway::config::GatewayConfig;
use turnpike_gateway::router::Router;

const GOOD: &str = r#"
    listen = "127.0.0.1:9999"
    [backend]
    kind = "dev"
    [[services]]
    name = "weather"
    path = "/weather"
    upstream = "http://127.0.0.1:9000/base/"
    price_sats = 5
    calls_per_payment = 3
"#;

#[test]
fn parses_a_good_config_with_defaults() {
    let c = GatewayConfig::parse(GOOD).unwrap();
    assert_eq!(c.listen.port(), 9999);
    assert_eq!(c.invoice_expiry_secs, 600);
    assert_eq!(c.services[0].calls_per_payment, Some(3));
    assert!(c.services[0].refund_on_5xx);
    assert_eq!(c.services[0].upstream_timeout_secs, 60);
    assert!(c.store_url().ends_with("turnpike-data/turnpike.db"));
    let router = Router::from_configs(&c.services).unwrap();
    assert_eq!(router.services()[0].upstream.base_path, "/base");
}

/// The error a config file gets, whether from parsing or from its services.
fn err(text: &str) -> String {
    match GatewayConfig::parse(text) {
        Ok(c) => Router::from_configs(&c.services).unwrap_err().to_string(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_never_echo_secrets() {
    let secrets = [
        // A syntax error on a secret's line.
        GOOD.replace(
            "kind = \"dev\"",
            "kind = \"lnbits\"\ninvoice_key = \"s3cr3t-value",
        ),
        // A secret where another type is expected.
        format!("master_key = 5\n{GOOD}")
            .replace("price_sats = 5", "price_sats = \"s3cr3t-value\""),
        GOOD.replace("listen = \"127.0.0.1:9999\"", "listen = \"s3cr3t-value\""),
        GOOD.replace(
            "http://127.0.0.1:9000/base/",
            "http://user:s3cr3t-value@127.0.0.1:9000/",
        ),
        GOOD.replace("http://127.0.0.1:9000/base/", "http://s3cr3t-value:x:y/"),
        format!("[store]\nurl = \"mysql://u:s3cr3t-value@h/db\"\n{GOOD}"),
    ];
    for text in secrets {
        let e = err(&text);
        assert!(!e.contains("s3cr3t"), "{e}");
        assert!(
            e.contains("line") || e.contains('.') || e.contains("store"),
            "{e}"
        );
    }
    let e = err(&GOOD.replace("price_sats = 5", "price_sats = \"five\""));
    assert!(e.contains("line 9, key price_sats"), "{e}");
}

#[test]
fn upstream_credentials_and_uncanonical_paths_are_refused() {
    let e = err(&GOOD.replace("http://127.0.0.1:9000/base/", "http://u:p@127.0.0.1:9000/"));
    assert!(
        e.contains("services[0].upstream") && e.contains("user:password@"),
        "{e}"
    );
    for bad in ["/a/../b", "//a", "/a;x", "/a%2fb", "/a%zz", "a"] {
        let e = err(&GOOD.replace("path = \"/weather\"", &format!("path = {bad:?}")));
        assert!(e.contains("services[0].path"), "{bad}: {e}");
    }
    let c = GatewayConfig::parse(&GOOD.replace("/weather", "/weather/")).unwrap();
    assert!(Router::from_configs(&c.services).is_ok());
    let e = err(&GOOD.replace("path = \"/weather\"", "host = \"a.test:80\""));
    assert!(e.contains("services[0].host"), "{e}");
}

#[test]
fn unknown_keys_are_named() {
    assert!(err(&format!("{GOOD}\nbogus_key = 1")).contains("bogus_key"));
    let e = err(&GOOD.replace("price_sats = 5", "price_sats = 5\nprise = 1"));
    assert!(e.contains("prise"), "{e}");
    let e = err(&GOOD.replace("kind = \"dev\"", "kind = \"dev\"\nurl = \"x\""));
    assert!(e.contains("url"), "{e}");
    let e = err(&GOOD.replace("kind = \"dev\"", "kind = \"nope\""));
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn invalid_values_are_named() {
    assert!(err(&GOOD.replace("price_sats = 5", "price_sats = -5")).contains("price_sats"));
    assert!(
        err(&GOOD.replace("calls_per_payment = 3", "calls_per_payment = 0"))
            .contains("services[0].calls_per_payment")
    );
    assert!(
        err(&GOOD.replace("name = \"weather\"", "name = \"we ather\""))
            .contains("services[0].name")
    );
    assert!(
        err(&GOOD.replace("http://127.0.0.1:9000/base/", "ftp://x"))
            .contains("services[0].upstream")
    );
    assert!(err(&GOOD.replace("/weather", "weather")).contains("services[0].path"));
    assert!(
        err(&GOOD.replace("listen = \"127.0.0.1:9999\"", "listen = \"nowhere\""))
            .contains("listen")
    );
    assert!(err(&format!("invoice_expiry_secs = 1\n{GOOD}")).contains("invoice_expiry_secs"));
    let dup = format!(
        "{GOOD}\n[[services]]\nname = \"weather\"\nupstream = \"http://x\"\nprice_sats = 1\n"
    );
    assert!(err(&dup).contains("duplicate"));
    assert!(
        err("[[services]]\nname=\"a\"\nupstream=\"http://x\"\nprice_sats=1").contains("backend")
    );
}

#[test]
fn the_admin_listener_has_defaults_and_never_takes_the_public_address() {
    let c = GatewayConfig::parse(GOOD).unwrap();
    assert!(c.admin.enabled);
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:8403");
    assert_eq!(c.admin.sync_interval_secs, 2);
    assert!(c.admin.token.is_none());
    let head = |admin: &str| {
        format!("listen = \"127.0.0.1:9999\"\n[admin]\n{admin}\n[backend]\nkind = \"dev\"\n")
    };
    for same in ["listen = \"127.0.0.1:9999\"", "listen = \"0.0.0.0:9999\""] {
        let e = err(&head(same));
        assert!(e.contains("admin.listen"), "{e}");
    }
    // Turned off, its address does not matter.
    GatewayConfig::parse(&head("enabled = false\nlisten = \"127.0.0.1:9999\"")).unwrap();
    let e = err(&head("sync_interval_secs = 0"));
    assert!(e.contains("admin.sync_interval_secs"), "{e}");
    let e = err(&head("bogus = 1"));
    assert!(e.contains("bogus"), "{e}");
    let c =
        GatewayConfig::parse(&head("token = { env = \"T\" }\nlisten = \"127.0.0.1:0\"")).unwrap();
    assert!(c.admin.token.is_some());
}

#[test]
fn an_x402_config_is_parsed_with_the_gateway_section() {
    let text = r#"
    [backend]
    kind = "dev"
    [x402]
    facilitator_url = "https://facilitator.example.com/x402"
    network = "eip155:8453"
    asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    token_name = "USD Coin"
    token_version = "2"
    decimals = 6
    pay_to = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
    [[services]]
    name = "both"
    path = "/both"
    upstream = "http://127.0.0.1:9000"
    price_sats = 5
    rails = ["l402", "x402"]
    price_usdc = "0.25"
    [[services]]
    name = "units"
    path = "/units"
    upstream = "http://127.0.0.1:9000"
    price_sats = 0
    rails = ["x402"]
    price_usdc = 1234
"#;
    let c = GatewayConfig::parse(text).unwrap();
    let settings = turnpike_gateway::x402::X402Settings::parse(c.x402.as_ref().unwrap()).unwrap();
    let router = Router::from_configs_with(&c.services, Some(&settings)).unwrap();
    let offer = |i: usize| {
        router.services()[i]
            .x402
            .as_ref()
            .unwrap()
            .requirements
            .amount
            .base_units()
    };
    assert_eq!((offer(0), offer(1)), (250_000, 1_234));
    assert_eq!(c.x402.as_ref().unwrap().max_timeout_secs, 300);
    // Without the section, the service naming x402 is refused, by key.
    let e = Router::from_configs(&c.services).unwrap_err().to_string();
    assert!(e.contains("services[0].rails"), "{e}");
    // An unknown rail or key in [x402] fails parsing.
    assert!(err(&text.replace(r#"["x402"]"#, r#"["bitcoin"]"#)).contains("rails"));
    assert!(err(&text.replace("decimals = 6", "decimals = 6\n    colour = 1")).contains("colour"));
}
