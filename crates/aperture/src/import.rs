//! `turnpike import-aperture`: an `aperture.yaml` converted into a `turnpike.toml`, with a note
//! for every key that could not be converted (or not exactly) and why.
//!
//! What maps, and how:
//!
//! | Aperture | Turnpike |
//! |---|---|
//! | `listenaddr` | `listen` (`localhost` becomes `127.0.0.1`) |
//! | `authenticator.lndhost`, `tlspath`, `macdir` | `[backend] kind = "lnd"` (REST on port 8080) |
//! | `dbbackend` + `sqlite.dbfile` / `postgres.*` | `[aperture] secrets`: its tokens stay valid |
//! | `strictverify: true` | `check_settlement = true` |
//! | `idletimeout` | `connections.keep_alive_timeout_secs` |
//! | `services[].name` | `name` (the `services=` caveat of existing tokens) |
//! | `hostregexp` | `host` when it is `^literal$`, else `host_regex` (without any `:port`) |
//! | `pathregexp` | `path` when it is `^/prefix/`, `^/prefix/.*$` or `^/prefix(/.*)?$`, else `path_regex` |
//! | `address` + `protocol` + `rewrite.prefix` | `upstream` URL |
//! | `price` (0 or unset: 1 sat) | `price_sats` |
//! | `timeout` | `time_pass_secs` (one payment: unlimited calls until then) |
//! | `auth: off` / `freebie N` | `price_sats = 0` / `free_tier = { calls = N, window_secs = 86400 }` |
//! | `authwhitelistpaths` | free `routes` (`path_regex`, case-sensitive as in Aperture) |
//! | `headers` (literal or a whole `${VAR}`) | `headers` (inline or `{ env = "VAR" }`) |
//! | `ratelimits` without `pathregexp` | gateway-wide `rate_limits.per_token` and `per_ip` |

use std::fmt;

use toml::{Table, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// A key that was not converted, or not exactly, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The Aperture key, for example `services[0].dynamicprice`.
    pub key: String,
    /// What happened to it.
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The converted configuration.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// The `turnpike.toml` text (the notes are repeated in it as comments).
    pub toml: String,
    /// Every key not converted, or not exactly.
    pub notes: Vec<Note>,
}

/// Why a file could not be converted at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not YAML.
    #[error("not valid YAML: {0}")]
    Yaml(String),
    /// Not a YAML mapping at the top.
    #[error("the file is not a YAML mapping of Aperture's keys")]
    NotAMapping,
}

/// Top-level keys with no Turnpike counterpart, and why.
const NOT_CONVERTED: &[(&str, &str)] = &[
    (
        "staticroot",
        "Turnpike serves no static files: unmatched requests get 404",
    ),
    (
        "servestatic",
        "Turnpike serves no static files: unmatched requests get 404",
    ),
    ("debuglevel", "logging is set with RUST_LOG"),
    ("logging", "logging is set with RUST_LOG"),
    ("configfile", "pass the file with turnpike serve --config"),
    ("basedir", "Turnpike keeps its files in data_dir"),
    (
        "autocert",
        "Turnpike serves plain HTTP: put a TLS-terminating proxy in front",
    ),
    (
        "servername",
        "Turnpike serves plain HTTP: put a TLS-terminating proxy in front",
    ),
    (
        "insecure",
        "Turnpike serves plain HTTP: put a TLS-terminating proxy in front",
    ),
    ("profile", "no pprof endpoint"),
    (
        "invoicebatchsize",
        "Turnpike asks the backend once per token instead of reading all invoices",
    ),
    (
        "readtimeout",
        "Turnpike bounds request heads (connections.header_read_timeout_secs) and bodies (body_read_timeout_secs) separately",
    ),
    (
        "writetimeout",
        "Turnpike closes a client that stops reading after connections.send_timeout_secs",
    ),
    ("wspinginterval", "no WebSocket ping settings"),
    ("wspongwait", "no WebSocket ping settings"),
    (
        "blocklist",
        "no IP blocklist: block addresses in a firewall or the proxy in front",
    ),
    (
        "tor",
        "no Tor onion service: run Tor's own HiddenServicePort towards the listener",
    ),
    ("hashmail", "no Lightning Node Connect mailbox"),
    (
        "prometheus",
        "Turnpike's metrics are served on the admin listener",
    ),
    (
        "admin",
        "Turnpike's admin API and dashboard have their own [admin] settings",
    ),
];

/// Converts the text of an `aperture.yaml`.
pub fn convert(yaml: &str) -> Result<Conversion, ImportError> {
    let docs = YamlLoader::load_from_str(yaml).map_err(|e| ImportError::Yaml(e.to_string()))?;
    let Some(Yaml::Hash(top)) = docs.into_iter().next() else {
        return Err(ImportError::NotAMapping);
    };
    let mut c = Converter::default();
    let mut db = Database::default();
    for (k, v) in &top {
        let key = key_text(k);
        c.top_key(&key, v, &mut db);
    }
    c.database(&db);
    if !c.out.contains_key("backend") {
        c.dev_backend("authenticator", "no lnd connection was configured");
    }
    if let Some(limit) = c.strictest_limit.take() {
        let mut limits = Table::new();
        limits.insert("per_token".into(), Value::Table(limit.clone()));
        limits.insert("per_ip".into(), Value::Table(limit));
        c.out.insert("rate_limits".into(), Value::Table(limits));
    }
    if !c.services.is_empty() {
        c.out.insert(
            "services".into(),
            Value::Array(std::mem::take(&mut c.services)),
        );
    }
    Ok(c.finish())
}

#[derive(Default)]
struct Database {
    backend: Option<String>,
    sqlite: Option<Yaml>,
    postgres: Option<Yaml>,
    etcd: bool,
}

#[derive(Default)]
struct Converter {
    out: Table,
    services: Vec<Value>,
    notes: Vec<Note>,
    /// The strictest service-wide rate limit seen, and its rate (requests per second).
    strictest_limit: Option<Table>,
    strictest_rate: f64,
}

fn key_text(k: &Yaml) -> String {
    match k {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        _ => "?".into(),
    }
}

/// A scalar as text (YAML reads `1s` as a string, `10` as an integer, `on` as a string).
fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn int(v: &Yaml) -> Option<i64> {
    match v {
        Yaml::Integer(i) => Some(*i),
        Yaml::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn truthy(v: &Yaml) -> bool {
    matches!(v, Yaml::Boolean(true))
        || scalar(v)
            .is_some_and(|s| matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"))
}

impl Converter {
    fn note(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.notes.push(Note {
            key: key.into(),
            message: message.into(),
        });
    }

    fn top_key(&mut self, key: &str, v: &Yaml, db: &mut Database) {
        match key {
            "listenaddr" => self.listen(v),
            "services" => self.all_services(v),
            "authenticator" => self.authenticator(v),
            "dbbackend" => db.backend = scalar(v),
            "sqlite" => db.sqlite = Some(v.clone()),
            "postgres" => db.postgres = Some(v.clone()),
            "etcd" => db.etcd = true,
            "strictverify" => {
                if truthy(v) {
                    self.out
                        .insert("check_settlement".into(), Value::Boolean(true));
                    self.note(key, "became check_settlement = true: the backend is asked once per token, not for every request");
                }
            }
            "idletimeout" => match scalar(v).as_deref().and_then(go_duration_secs) {
                Some(secs) if secs >= 1.0 => {
                    let mut conn = Table::new();
                    conn.insert(
                        "keep_alive_timeout_secs".into(),
                        Value::Integer(secs.ceil() as i64),
                    );
                    self.out.insert("connections".into(), Value::Table(conn));
                }
                _ => self.note(
                    key,
                    "not a duration of at least 1 s: the default (75 s) applies",
                ),
            },
            _ => match NOT_CONVERTED.iter().find(|(k, _)| *k == key) {
                Some((_, why)) => self.note(key, format!("not converted: {why}")),
                None => self.note(key, "not converted: unknown to the converter"),
            },
        }
    }

    fn listen(&mut self, v: &Yaml) {
        let Some(addr) = scalar(v) else {
            return self.note(
                "listenaddr",
                "not a host:port: the default 127.0.0.1:8402 applies",
            );
        };
        let (host, port) = addr.rsplit_once(':').unwrap_or((&addr, "8081"));
        let host = match host.trim_start_matches('[').trim_end_matches(']') {
            "" => "0.0.0.0",
            "localhost" => "127.0.0.1",
            h => h,
        };
        let ip: Result<std::net::IpAddr, _> = host.parse();
        match (ip, port.parse::<u16>()) {
            (Ok(ip), Ok(port)) => {
                let addr = std::net::SocketAddr::new(ip, port).to_string();
                self.out.insert("listen".into(), Value::String(addr));
            }
            _ => self.note(
                "listenaddr",
                "not converted: Turnpike listens on an IP address and port, not a host name",
            ),
        }
    }

    fn authenticator(&mut self, v: &Yaml) {
        let Yaml::Hash(a) = v else { return };
        let get = |k: &str| a.get(&Yaml::String(k.into()));
        if get("disable").is_some_and(truthy) {
            self.dev_backend(
                "authenticator.disable",
                "Aperture ran with authentication disabled",
            );
            return;
        }
        if let Some(host) = get("lndhost").and_then(scalar) {
            self.lnd_backend(
                &host,
                get("tlspath").and_then(scalar),
                get("macdir").and_then(scalar),
            );
        } else if get("passphrase").is_some() {
            self.dev_backend(
                "authenticator.passphrase",
                "Lightning Node Connect is not supported: set [backend] to your node (lnd, cln, phoenixd, lnbits, nwc)",
            );
        }
        for (k, _) in a {
            let k = key_text(k);
            let why = match k.as_str() {
                "lndhost" | "tlspath" | "macdir" | "disable" => continue,
                "passphrase" if get("lndhost").is_none() => continue,
                "passphrase" => {
                    "not converted: Lightning Node Connect is not supported (lndhost is used)"
                }
                "network" => "not needed: Turnpike reads the network from the node",
                "mailboxaddress" | "devserver" => {
                    "not converted: Lightning Node Connect is not supported"
                }
                "enablempp"
                | "mpprealm"
                | "enablesessions"
                | "sessiondepositmultiplier"
                | "sessionidletimeout" => "not converted: the MPP Payment scheme is not supported",
                "wavelengthgateway" | "wavelengthmacaroonpath" => {
                    "not converted: Wavelength wallets are not supported"
                }
                _ => "not converted: unknown to the converter",
            };
            self.note(format!("authenticator.{k}"), why);
        }
    }

    fn lnd_backend(&mut self, lndhost: &str, tls: Option<String>, macdir: Option<String>) {
        let host = lndhost.rsplit_once(':').map_or(lndhost, |(h, _)| h);
        let mut b = Table::new();
        b.insert("kind".into(), Value::String("lnd".into()));
        b.insert("url".into(), Value::String(format!("https://{host}:8080")));
        if let Some(dir) = macdir {
            let file = format!("{}/invoice.macaroon", dir.trim_end_matches('/'));
            b.insert("macaroon_file".into(), Value::String(file));
        }
        if let Some(tls) = tls {
            b.insert("tls_cert_path".into(), Value::String(tls));
        }
        self.out.insert("backend".into(), Value::Table(b));
        self.note(
            "authenticator.lndhost",
            format!("Turnpike talks to lnd over REST: its port is assumed to be 8080 on {host} (check restlisten in lnd.conf)"),
        );
    }

    fn dev_backend(&mut self, key: &str, why: &str) {
        let mut b = Table::new();
        b.insert("kind".into(), Value::String("dev".into()));
        self.out.insert("backend".into(), Value::Table(b));
        self.note(
            key,
            format!("{why}; [backend] is the dev backend (no real money) until you set one"),
        );
    }

    fn database(&mut self, db: &Database) {
        let backend = db.backend.as_deref().map(str::to_ascii_lowercase);
        for (section, present) in [
            ("sqlite", db.sqlite.is_some()),
            ("postgres", db.postgres.is_some()),
            ("etcd", db.etcd),
        ] {
            let used =
                backend.as_deref() == Some(section) || (section == "sqlite" && backend.is_none());
            if present && !used {
                self.note(section, "not used: dbbackend names another database");
            }
        }
        let url = match backend.as_deref() {
            Some("sqlite") | None if db.sqlite.is_some() || backend.is_some() => {
                sqlite_url(db.sqlite.as_ref())
            }
            Some("postgres") => db.postgres.as_ref().and_then(postgres_url),
            Some("etcd") | None => {
                return self.note(
                    "dbbackend",
                    "etcd (Aperture's default when dbbackend is unset): Turnpike cannot read its secrets, so tokens this Aperture minted will not be accepted",
                );
            }
            Some(_) => None,
        };
        match url {
            Some(url) => {
                let mut a = Table::new();
                a.insert("secrets".into(), Value::String(url));
                self.out.insert("aperture".into(), Value::Table(a));
            }
            None => self.note("dbbackend", "no usable database settings: [aperture] not written, Aperture's tokens will not be accepted"),
        }
    }

    fn all_services(&mut self, v: &Yaml) {
        let Yaml::Array(list) = v else {
            return self.note("services", "not a list");
        };
        for (i, s) in list.iter().enumerate() {
            let key = format!("services[{i}]");
            match s {
                Yaml::Hash(h) => {
                    let table = self.service(&key, h);
                    self.services.push(Value::Table(table));
                }
                _ => self.note(key, "not a mapping: skipped"),
            }
        }
    }

    fn service(&mut self, key: &str, h: &yaml_rust2::yaml::Hash) -> Table {
        let mut t = Table::new();
        let get = |k: &str| h.get(&Yaml::String(k.into()));
        let name = self.service_name(key, get("name").and_then(scalar));
        t.insert("name".into(), Value::String(name.clone()));
        if let Some(re) = get("hostregexp").and_then(scalar) {
            self.host(key, &re, &mut t);
        }
        if let Some(re) = get("pathregexp").and_then(scalar) {
            match path_from_regex(&re) {
                PathConv::All => {}
                PathConv::Prefix(p) => {
                    t.insert("path".into(), Value::String(p));
                }
                PathConv::Regex(r) => {
                    t.insert("path_regex".into(), Value::String(r));
                }
            }
        }
        let upstream = self.upstream(key, h);
        t.insert("upstream".into(), Value::String(upstream));
        self.pricing(key, h, &mut t);
        let mut routes = Vec::new();
        for (k, v) in h {
            let k = key_text(k);
            let at = format!("{key}.{k}");
            match k.as_str() {
                "name" | "hostregexp" | "pathregexp" | "address" | "protocol" | "rewrite"
                | "price" | "timeout" | "auth" | "dynamicprice" => {}
                "headers" => self.headers(&at, v, &mut t),
                "authwhitelistpaths" => routes = self.free_routes(&at, v),
                "ratelimits" => self.rate_limits(&at, v),
                "capabilities" | "constraints" => self.note(at, "not converted: Turnpike mints no such caveat (Aperture does not enforce it either); existing tokens carrying it are still accepted"),
                "tlscertpath" => self.note(at, "not converted: Turnpike verifies the upstream's certificate against the system's roots; add a private CA there"),
                "authskipinvoicecreationpaths" => self.note(at, "not converted: every unpaid request gets a 402 challenge (a 401 without one is not supported)"),
                "authscheme" => self.note(at, "not converted: the MPP Payment scheme is not supported (L402 only)"),
                _ => self.note(at, "not converted: unknown to the converter"),
            }
        }
        if !routes.is_empty() {
            t.insert("routes".into(), Value::Array(routes));
        }
        t
    }

    fn service_name(&mut self, key: &str, name: Option<String>) -> String {
        let name = self.valid_name(key, name.unwrap_or_default());
        let taken = |n: &str| {
            self.services
                .iter()
                .any(|s| s.get("name").and_then(Value::as_str) == Some(n))
        };
        if !taken(&name) {
            return name;
        }
        let unique = (2..)
            .map(|i| format!("{name}-{i}"))
            .find(|n| !taken(n))
            .unwrap_or_default();
        self.note(
            format!("{key}.name"),
            format!("renamed {unique:?}: an earlier service has the same name (Turnpike names are unique); Aperture tokens for it are valid on the first one only"),
        );
        unique
    }

    fn valid_name(&mut self, key: &str, name: String) -> String {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            return name;
        }
        let mut fixed: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        if fixed.is_empty() {
            fixed = format!("service{}", self.services.len() + 1);
        }
        self.note(
            format!("{key}.name"),
            format!("renamed {fixed:?} (Turnpike names are 1-64 of A-Z a-z 0-9 _ - .): Aperture tokens minted for the old name will not be accepted"),
        );
        fixed
    }

    fn host(&mut self, key: &str, re: &str, t: &mut Table) {
        let (re, had_port) = strip_port(re);
        if had_port {
            self.note(
                format!("{key}.hostregexp"),
                "the :port was dropped: Turnpike matches the host without its port",
            );
        }
        if matches!(re.as_str(), "" | ".*" | "^.*$" | "^.*") {
            return;
        }
        match re
            .strip_prefix('^')
            .and_then(|r| r.strip_suffix('$'))
            .and_then(literal)
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            }) {
            Some(host) => t.insert("host".into(), Value::String(host.to_ascii_lowercase())),
            None => t.insert("host_regex".into(), Value::String(re)),
        };
    }

    fn upstream(&mut self, key: &str, h: &yaml_rust2::yaml::Hash) -> String {
        let get = |k: &str| h.get(&Yaml::String(k.into()));
        let protocol = get("protocol")
            .and_then(scalar)
            .unwrap_or_else(|| "http".into());
        let protocol = match protocol.to_ascii_lowercase().as_str() {
            "https" => "https",
            "http" => "http",
            _ => {
                self.note(
                    format!("{key}.protocol"),
                    "neither http nor https: http is used",
                );
                "http"
            }
        };
        let address = get("address").and_then(scalar).unwrap_or_else(|| {
            self.note(format!("{key}.address"), "missing: set upstream by hand");
            "127.0.0.1:80".into()
        });
        let prefix = match get("rewrite") {
            Some(Yaml::Hash(r)) => r
                .get(&Yaml::String("prefix".into()))
                .and_then(scalar)
                .map(|p| p.trim_end_matches('/').to_owned())
                .unwrap_or_default(),
            _ => String::new(),
        };
        format!("{protocol}://{address}{prefix}")
    }

    fn pricing(&mut self, key: &str, h: &yaml_rust2::yaml::Hash, t: &mut Table) {
        let get = |k: &str| h.get(&Yaml::String(k.into()));
        let price = get("price").and_then(int).unwrap_or(0);
        let price = if price <= 0 {
            self.note(
                format!("{key}.price"),
                "0 or unset is 1 sat in Aperture: price_sats = 1",
            );
            1
        } else {
            price
        };
        t.insert("price_sats".into(), Value::Integer(price));
        match get("timeout").and_then(int) {
            Some(secs) if secs > 0 => {
                t.insert("time_pass_secs".into(), Value::Integer(secs));
            }
            _ => self.note(
                format!("{key}.timeout"),
                "unset: Aperture's tokens never expired; Turnpike has no never-ending pass, so a payment buys one call (set time_pass_secs for a pass)",
            ),
        }
        if let Some(Yaml::Hash(d)) = get("dynamicprice") {
            let enabled = d.get(&Yaml::String("enabled".into())).is_some_and(truthy);
            let message = if enabled {
                format!(
                    "not converted: the gRPC pricer is not supported (Turnpike's pricer is HTTP JSON: pricer = {{ url = … }}); the static price_sats = {price} applies"
                )
            } else {
                "not converted: not enabled (a misspelt \"enabled\"?)".to_owned()
            };
            self.note(format!("{key}.dynamicprice"), message);
        }
        if let Some(level) = get("auth").and_then(scalar) {
            self.auth_level(key, &level, t);
        }
    }

    fn auth_level(&mut self, key: &str, level: &str, t: &mut Table) {
        let level = level.trim().to_ascii_lowercase();
        match level.as_str() {
            "" | "on" | "true" => {}
            "off" | "false" => {
                t.insert("price_sats".into(), Value::Integer(0));
                t.remove("time_pass_secs");
            }
            other => match other.strip_prefix("freebie").map(|n| n.trim().parse::<i64>()) {
                Some(Ok(n)) if n > 0 => {
                    let mut f = Table::new();
                    f.insert("calls".into(), Value::Integer(n));
                    f.insert("window_secs".into(), Value::Integer(86_400));
                    t.insert("free_tier".into(), Value::Table(f));
                    self.note(format!("{key}.auth"), format!("freebie {n}: {n} free calls per client IP (IPv6 /64) per day; Aperture counted per /24 until it restarted"));
                }
                _ => self.note(format!("{key}.auth"), "an unknown level: Aperture let such a service through free; Turnpike keeps it paid"),
            },
        }
    }

    fn headers(&mut self, key: &str, v: &Yaml, t: &mut Table) {
        let Yaml::Hash(h) = v else { return };
        let mut out = Table::new();
        for (name, value) in h {
            let name = key_text(name);
            let at = format!("{key}.{name}");
            let Some(value) = scalar(value) else {
                self.note(at, "not a text value: not converted");
                continue;
            };
            if MANAGED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                self.note(at, "not converted: Turnpike sets this field itself");
                continue;
            }
            let env = value
                .strip_prefix("${")
                .and_then(|v| v.strip_suffix('}'))
                .filter(|v| {
                    !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                });
            if let Some(var) = env {
                let mut e = Table::new();
                e.insert("env".into(), Value::String(var.to_owned()));
                out.insert(name, Value::Table(e));
            } else if value.starts_with("!file") || value.contains("${") || value.contains('$') {
                self.note(at, "not converted: a file directive or a variable inside text; put the whole value in an environment variable and write { env = \"VAR\" }");
            } else {
                out.insert(name, Value::String(value));
            }
        }
        if !out.is_empty() {
            t.insert("headers".into(), Value::Table(out));
        }
    }

    fn free_routes(&mut self, key: &str, v: &Yaml) -> Vec<Value> {
        let Yaml::Array(list) = v else {
            return Vec::new();
        };
        let mut routes = Vec::new();
        for (i, re) in list.iter().enumerate() {
            let Some(re) = scalar(re) else {
                self.note(format!("{key}[{i}]"), "not text: not converted");
                continue;
            };
            let mut r = Table::new();
            r.insert("name".into(), Value::String(format!("free{}", i + 1)));
            // Exactly Aperture's (case-sensitive) semantics: a free route is never broader.
            r.insert("path_regex".into(), Value::String(format!("(?-i){re}")));
            r.insert("price_sats".into(), Value::Integer(0));
            routes.push(Value::Table(r));
        }
        routes
    }

    fn rate_limits(&mut self, key: &str, v: &Yaml) {
        let Yaml::Array(list) = v else { return };
        for (i, rule) in list.iter().enumerate() {
            let at = format!("{key}[{i}]");
            let Yaml::Hash(r) = rule else { continue };
            let get = |k: &str| r.get(&Yaml::String(k.into()));
            if let Some(re) = get("pathregexp").and_then(scalar)
                && !matches!(path_from_regex(&re), PathConv::All)
            {
                self.note(at, "not converted: Turnpike has no per-path rate limits");
                continue;
            }
            let requests = get("requests").and_then(int).filter(|n| *n > 0);
            let per = get("per")
                .and_then(scalar)
                .as_deref()
                .and_then(go_duration_secs);
            let (Some(requests), Some(per)) = (requests, per.filter(|p| *p > 0.0)) else {
                self.note(at, "not converted: requests and per must be positive");
                continue;
            };
            let burst = get("burst")
                .and_then(int)
                .filter(|n| *n > 0)
                .unwrap_or(requests);
            // Whole seconds: scale a sub-second window up to 1 s.
            let per_secs = per.ceil().max(1.0);
            let requests = ((requests as f64) * per_secs / per).floor().max(1.0) as i64;
            let rate = requests as f64 / per_secs;
            if self.strictest_limit.is_none() || rate < self.strictest_rate {
                let mut l = Table::new();
                l.insert("requests".into(), Value::Integer(requests));
                l.insert("per_secs".into(), Value::Integer(per_secs as i64));
                l.insert("burst".into(), Value::Integer(burst));
                self.strictest_limit = Some(l);
                self.strictest_rate = rate;
            }
            self.note(at, "became the gateway-wide rate_limits.per_token and per_ip (the strictest such rule of all services), which apply to every service");
        }
    }

    fn finish(self) -> Conversion {
        let mut text = String::from(
            "# Converted from an Aperture configuration by `turnpike import-aperture`.\n",
        );
        if !self.notes.is_empty() {
            text.push_str("# Not converted, or not exactly:\n");
            for n in &self.notes {
                text.push_str(&format!("#   {n}\n"));
            }
        }
        text.push('\n');
        text.push_str(&toml::to_string(&self.out).unwrap_or_default());
        if !text.ends_with('\n') {
            text.push('\n');
        }
        Conversion {
            toml: text,
            notes: self.notes,
        }
    }
}

/// Header fields Turnpike manages and refuses in `headers`.
const MANAGED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-authenticate",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "macaroon",
    "grpc-metadata-macaroon",
];

fn sqlite_url(sqlite: Option<&Yaml>) -> Option<String> {
    let file = match sqlite {
        Some(Yaml::Hash(h)) => h.get(&Yaml::String("dbfile".into())).and_then(scalar),
        _ => None,
    };
    Some(format!(
        "sqlite://{}",
        file.unwrap_or_else(|| "~/.aperture/aperture.db".into())
    ))
}

fn postgres_url(pg: &Yaml) -> Option<String> {
    let Yaml::Hash(h) = pg else { return None };
    let get = |k: &str| h.get(&Yaml::String(k.into())).and_then(scalar);
    let host = get("host").unwrap_or_else(|| "localhost".into());
    let port = get("port").unwrap_or_else(|| "5432".into());
    let user = get("user").unwrap_or_else(|| "postgres".into());
    let db = get("dbname").unwrap_or_else(|| "aperture".into());
    let password = get("password")
        .map(|p| format!(":{}", percent_encode(&p)))
        .unwrap_or_default();
    let ssl = get("requiressl")
        .or_else(|| get("requireSSL"))
        .filter(|v| v == "true")
        .map_or("", |_| "?sslmode=require");
    Some(format!(
        "postgres://{}{password}@{host}:{port}/{db}{ssl}",
        percent_encode(&user)
    ))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How an Aperture `pathregexp` maps.
#[derive(Debug, PartialEq, Eq)]
enum PathConv {
    /// It matches every path: no key.
    All,
    /// `^/prefix/`, `^/prefix/.*$`, `^/prefix(/.*)?$`: Turnpike's `path = "/prefix"`, which
    /// covers the same paths and the spellings an upstream reads as them (`/PREFIX/x`,
    /// `/prefix.json`), so the priced part is never smaller.
    Prefix(String),
    /// Anything else: kept as `path_regex`.
    Regex(String),
}

fn path_from_regex(re: &str) -> PathConv {
    if matches!(
        re,
        "" | ".*" | "^.*" | "^.*$" | "^/.*" | "^/.*$" | "^/" | "/"
    ) {
        return PathConv::All;
    }
    let prefix = re.strip_prefix('^').and_then(|body| {
        ["(/.*)?$", "/.*$", "/.*", "/"]
            .iter()
            .find_map(|suffix| body.strip_suffix(suffix))
            .and_then(literal)
            .filter(|p| {
                p.len() > 1
                    && p.starts_with('/')
                    && p[1..].split('/').all(|seg| !matches!(seg, "" | "." | ".."))
            })
    });
    match prefix {
        Some(p)
            if p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b)) =>
        {
            PathConv::Prefix(p)
        }
        _ => PathConv::Regex(re.to_owned()),
    }
}

/// The text a regex matches literally, if it has no operator (escapes `\.`, `\-`, `\/` allowed).
fn literal(re: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = re.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                e @ ('.' | '-' | '/' | '_' | '~' | ':') => out.push(e),
                _ => return None,
            },
            '.' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '^' | '$' => {
                return None;
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// The host regex without a literal `:port` at its end (Aperture matched `Host` with its port).
fn strip_port(re: &str) -> (String, bool) {
    let (body, anchored) = match re.strip_suffix('$') {
        Some(b) => (b, "$"),
        None => (re, ""),
    };
    match body.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (format!("{host}{anchored}"), true)
        }
        _ => (re.to_owned(), false),
    }
}

/// Seconds in a Go duration (`1h30m`, `15s`, `20ms`); `None` if malformed or negative.
fn go_duration_secs(s: &str) -> Option<f64> {
    let s = s.trim();
    if s == "0" {
        return Some(0.0);
    }
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_regexes_become_prefixes_only_when_plain() {
        assert_eq!(path_from_regex("^/.*$"), PathConv::All);
        assert_eq!(path_from_regex("^/api/"), PathConv::Prefix("/api".into()));
        assert_eq!(
            path_from_regex("^/api/.*$"),
            PathConv::Prefix("/api".into())
        );
        assert_eq!(
            path_from_regex(r"^/v1\.2(/.*)?$"),
            PathConv::Prefix("/v1.2".into())
        );
        for kept in [
            "^/api",
            "^/api$",
            "/api/",
            "^/a.i/",
            "^/api/[0-9]+",
            "^/api|^/b/",
        ] {
            assert_eq!(
                path_from_regex(kept),
                PathConv::Regex(kept.into()),
                "{kept}"
            );
        }
    }

    #[test]
    fn hosts_lose_their_port_and_become_exact_when_literal() {
        assert_eq!(
            strip_port("service2.com:8083"),
            ("service2.com".into(), true)
        );
        assert_eq!(
            strip_port(r"^service1\.com$"),
            (r"^service1\.com$".into(), false)
        );
        assert_eq!(strip_port(r"^a\.com:443$"), (r"^a\.com$".into(), true));
        assert_eq!(literal(r"service1\.com"), Some("service1.com".into()));
        assert_eq!(literal("service1.com"), None);
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_secs("1s"), Some(1.0));
        assert_eq!(go_duration_secs("2m"), Some(120.0));
        assert_eq!(go_duration_secs("1h30m"), Some(5400.0));
        assert_eq!(go_duration_secs("20ms"), Some(0.02));
        assert_eq!(go_duration_secs("-1s"), None);
        assert_eq!(go_duration_secs("soon"), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(convert("a: [1"), Err(ImportError::Yaml(_))));
        assert!(matches!(
            convert("- 1\n- 2\n"),
            Err(ImportError::NotAMapping)
        ));
        let c = convert("services: 3\nfoo: 1\n").unwrap();
        assert!(c.notes.iter().any(|n| n.key == "foo"));
    }

    proptest::proptest! {
        /// A `path` made from a `pathregexp` never prices less than Aperture did: every path
        /// the regex matches is under the prefix.
        #[test]
        fn a_converted_prefix_covers_every_path_the_regex_matched(
            prefix in "/[a-z0-9_~-]{1,8}(/[a-z0-9]{1,3}(\\.[a-z0-9]{1,2})?){0,2}",
            form in 0usize..4,
            tails in proptest::collection::vec("[a-zA-Z0-9./_-]{0,12}", 1..20),
        ) {
            let escaped = prefix.replace('.', r"\.");
            let re = match form {
                0 => format!("^{escaped}/"),
                1 => format!("^{escaped}/.*$"),
                2 => format!("^{escaped}(/.*)?$"),
                _ => format!("^{escaped}/.*"),
            };
            let PathConv::Prefix(p) = path_from_regex(&re) else {
                return Err(proptest::test_runner::TestCaseError::fail(format!("{re} kept as a regex")));
            };
            proptest::prop_assert_eq!(&p, &prefix);
            let compiled = regex::Regex::new(&re).unwrap();
            for tail in tails {
                for path in [format!("{prefix}{tail}"), format!("{prefix}/{tail}"), tail.clone()] {
                    if compiled.is_match(&path) {
                        proptest::prop_assert!(path == p || path.starts_with(&format!("{p}/")), "{re} matched {path}");
                    }
                }
            }
        }

        /// Anything that parses as YAML converts without a panic.
        #[test]
        fn conversion_never_panics(text in "[a-z:\\[\\]{}, \n'\"*^$./0-9-]{0,200}") {
            let _ = convert(&text);
        }
    }
}
