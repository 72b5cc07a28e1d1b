//! `turnpike admin …`: the admin API of a running gateway, from the command line.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use crate::ledger_cmd::civil_from_unix;

/// Where the admin API is and how to open it.
#[derive(Args)]
pub struct AdminArgs {
    /// The admin listener's URL.
    #[arg(
        long,
        env = "TURNPIKE_ADMIN_URL",
        default_value = "http://127.0.0.1:8403"
    )]
    url: String,
    /// A file holding the admin token (default: $TURNPIKE_ADMIN_TOKEN, else
    /// ./turnpike-data/admin.token).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Print the API's JSON as is.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Services in force.
    Services {
        #[command(subcommand)]
        command: ServicesCommand,
    },
    /// Tokens minted.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Recent payments, newest first.
    Payments {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Earnings and calls per service per day.
    Stats {
        /// First day (YYYY-MM-DD; default 29 days before --to).
        #[arg(long)]
        from: Option<String>,
        /// Last day (YYYY-MM-DD; default today, UTC).
        #[arg(long)]
        to: Option<String>,
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
    },
    /// Whether the store and the backend answer.
    Health,
}

#[derive(Subcommand)]
enum ServicesCommand {
    /// List the services in force.
    List,
    /// Show one service.
    Get {
        /// The service.
        name: String,
    },
    /// Add a service: from a file (TOML `[[services]]` table or JSON; `-` for stdin), or flags.
    Add(AddArgs),
    /// Delete a service (a config-file service is hidden).
    Rm {
        /// The service.
        name: String,
    },
    /// Change keys of a service: `price_sats=5 free_tier.calls=10 host=null` (values are JSON,
    /// else text; `null` removes an optional key).
    Set {
        /// The service.
        name: String,
        /// `key=value` pairs (dotted keys reach into tables).
        #[arg(required = true)]
        changes: Vec<String>,
    },
}

#[derive(Args)]
struct AddArgs {
    /// The service as TOML or JSON (`-`: read stdin).
    #[arg(long, short, conflicts_with_all = ["name", "upstream", "price_sats"])]
    file: Option<PathBuf>,
    /// Service name.
    #[arg(long)]
    name: Option<String>,
    /// Upstream URL.
    #[arg(long)]
    upstream: Option<String>,
    /// Price of one payment in sats.
    #[arg(long)]
    price_sats: Option<u64>,
    /// Path prefix.
    #[arg(long)]
    path: Option<String>,
    /// Host.
    #[arg(long)]
    host: Option<String>,
    /// Calls one payment buys.
    #[arg(long)]
    calls_per_payment: Option<u64>,
    /// One payment buys unlimited calls for this many seconds.
    #[arg(long)]
    time_pass_secs: Option<u64>,
}

#[derive(Subcommand)]
enum TokensCommand {
    /// List tokens, newest issued first.
    List {
        /// Only this service's.
        #[arg(long)]
        service: Option<String>,
        /// Only paid (true) or unpaid (false) tokens.
        #[arg(long)]
        paid: Option<bool>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Revoke a token: every replica answers it 401 within seconds.
    Revoke {
        /// The token id (64 hex characters).
        token_id: String,
    },
}

/// Runs `turnpike admin …`.
pub async fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let client = Client {
        http: reqwest::Client::new(),
        base: args.url.trim_end_matches('/').to_owned(),
        token: token(args.token_file.as_deref())?,
    };
    let json = args.json;
    match args.command {
        AdminCommand::Services { command } => services(&client, command, json).await,
        AdminCommand::Tokens { command } => tokens(&client, command, json).await,
        AdminCommand::Payments { limit } => {
            let v = client
                .call(
                    reqwest::Method::GET,
                    &format!("/payments?limit={limit}"),
                    None,
                )
                .await?;
            print(json, &v, payments_table);
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::Stats { from, to, service } => {
            let mut query = Vec::new();
            for (k, v) in [("from", from), ("to", to), ("service", service)] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", encode(&v)));
                }
            }
            let v = client
                .call(
                    reqwest::Method::GET,
                    &format!("/stats?{}", query.join("&")),
                    None,
                )
                .await?;
            print(json, &v, stats_table);
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::Health => health(&client, json).await,
    }
}

/// The admin token: `$TURNPIKE_ADMIN_TOKEN`, else the token file.
fn token(file: Option<&Path>) -> anyhow::Result<String> {
    if file.is_none()
        && let Ok(token) = std::env::var("TURNPIKE_ADMIN_TOKEN")
    {
        return Ok(token.trim().to_owned());
    }
    let path = file.unwrap_or(Path::new("turnpike-data/admin.token"));
    let token = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the admin token from {} (give --token-file or set TURNPIKE_ADMIN_TOKEN)",
            path.display()
        )
    })?;
    Ok(token.trim().to_owned())
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// Calls `/api/v1{path}`: the JSON answered (`null` for 204), or the API's error.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.with_context(|| format!("calling {url}"))?;
        let status = resp.status();
        let text = resp.text().await.context("reading the answer")?;
        let value: Value = match text.is_empty() {
            true => Value::Null,
            false => serde_json::from_str(&text)
                .with_context(|| format!("{url} answered {status} with no JSON"))?,
        };
        if status.is_success() {
            return Ok(value);
        }
        let e = &value["error"];
        let field = e["field"]
            .as_str()
            .map(|f| format!(" (field {f})"))
            .unwrap_or_default();
        bail!(
            "{status} {}: {}{field}",
            e["code"].as_str().unwrap_or("error"),
            e["message"].as_str().unwrap_or(&text)
        )
    }
}

async fn services(c: &Client, command: ServicesCommand, json: bool) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    match command {
        ServicesCommand::List => {
            let v = c.call(Method::GET, "/services", None).await?;
            print(json, &v, services_table);
        }
        ServicesCommand::Get { name } => {
            let v = c
                .call(Method::GET, &format!("/services/{}", encode(&name)), None)
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        ServicesCommand::Add(args) => {
            let service = add_body(args)?;
            let v = c.call(Method::POST, "/services", Some(&service)).await?;
            print(json, &v, |v| println!("added service {}", v["name"]));
        }
        ServicesCommand::Rm { name } => {
            c.call(
                Method::DELETE,
                &format!("/services/{}", encode(&name)),
                None,
            )
            .await?;
            if !json {
                println!("deleted service {name:?}");
            }
        }
        ServicesCommand::Set { name, changes } => {
            let patch = merge_patch_of(&changes)?;
            let v = c
                .call(
                    Method::PATCH,
                    &format!("/services/{}", encode(&name)),
                    Some(&patch),
                )
                .await?;
            print(json, &v, |v| {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn tokens(c: &Client, command: TokensCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        TokensCommand::List {
            service,
            paid,
            limit,
        } => {
            let mut path = format!("/tokens?limit={limit}");
            if let Some(s) = service {
                path.push_str(&format!("&service={}", encode(&s)));
            }
            if let Some(p) = paid {
                path.push_str(&format!("&paid={p}"));
            }
            let v = c.call(reqwest::Method::GET, &path, None).await?;
            print(json, &v, tokens_table);
        }
        TokensCommand::Revoke { token_id } => {
            let v = c
                .call(
                    reqwest::Method::POST,
                    &format!("/tokens/{}/revoke", encode(&token_id)),
                    None,
                )
                .await?;
            print(json, &v, |v| println!("revoked {}", v["token_id"]));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn health(c: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let url = format!("{}/api/v1/health", c.base);
    let resp = c
        .http
        .get(&url)
        .bearer_auth(&c.token)
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    let ok = resp.status().is_success();
    let v: Value = resp.json().await.context("reading the health report")?;
    if v.get("error").is_some() {
        bail!("{}", v["error"]["message"]);
    }
    print(json, &v, |v| {
        let line = |what: &str, part: &Value| match part["ok"].as_bool() {
            Some(true) => println!("{what}: ok"),
            _ => println!("{what}: DOWN ({})", part["error"].as_str().unwrap_or("?")),
        };
        println!("version: {}", v["version"].as_str().unwrap_or("?"));
        line("store", &v["store"]);
        line(
            &format!("backend ({})", v["backend"]["kind"].as_str().unwrap_or("?")),
            &v["backend"],
        );
    });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The service to add, from `--file` or the flags.
fn add_body(args: AddArgs) -> anyhow::Result<Value> {
    if let Some(file) = &args.file {
        let text = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
            text
        } else {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        };
        return service_from_text(&text);
    }
    let (Some(name), Some(upstream), Some(price)) = (args.name, args.upstream, args.price_sats)
    else {
        bail!("give --file, or at least --name, --upstream and --price-sats");
    };
    let mut s = Map::new();
    s.insert("name".into(), name.into());
    s.insert("upstream".into(), upstream.into());
    s.insert("price_sats".into(), price.into());
    let optional = [
        ("path", args.path.map(Value::from)),
        ("host", args.host.map(Value::from)),
        ("calls_per_payment", args.calls_per_payment.map(Value::from)),
        ("time_pass_secs", args.time_pass_secs.map(Value::from)),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            s.insert(k.into(), v);
        }
    }
    Ok(Value::Object(s))
}

/// A service from JSON, a TOML table, or TOML holding one `[[services]]` table.
fn service_from_text(text: &str) -> anyhow::Result<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(v);
    }
    let table: toml::Table =
        toml::from_str(text).context("the service is neither JSON nor TOML")?;
    let value = serde_json::to_value(&table)?;
    match value.get("services") {
        Some(Value::Array(list)) if list.len() == 1 => Ok(list[0].clone()),
        Some(_) => bail!("the file must hold exactly one [[services]] table"),
        None => Ok(value),
    }
}

/// `key=value` pairs as a JSON merge patch: values are JSON when they parse, else text.
fn merge_patch_of(changes: &[String]) -> anyhow::Result<Value> {
    let mut patch = Map::new();
    for change in changes {
        let Some((key, raw)) = change.split_once('=') else {
            bail!("{change:?}: expected key=value");
        };
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::from(raw));
        let mut parts = key.split('.').peekable();
        let mut at = &mut patch;
        while let Some(part) = parts.next() {
            if part.is_empty() {
                bail!("{change:?}: empty key");
            }
            if parts.peek().is_none() {
                at.insert(part.to_owned(), value.clone());
                break;
            }
            let next = at
                .entry(part.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(next) = next else {
                bail!("{change:?}: {part} is set to a value and used as a table");
            };
            at = next;
        }
    }
    Ok(Value::Object(patch))
}

/// Percent-encodes a path segment or query value.
fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn print(json: bool, v: &Value, human: impl FnOnce(&Value)) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        human(v);
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn when(v: &Value) -> String {
    v.as_u64().map_or_else(
        || "-".into(),
        |t| {
            let day = civil_from_unix(t);
            let secs = t % 86_400;
            format!("{day} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
        },
    )
}

/// Prints rows as left-aligned columns.
fn table(head: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let out: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", out.join("  ").trim_end());
    };
    line(head.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row);
    }
}

fn services_table(v: &Value) {
    let rows = v["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let calls = match (&s["time_pass_secs"], &s["calls_per_payment"]) {
                (Value::Number(t), _) => format!("{t}s pass"),
                (_, Value::Number(n)) => n.to_string(),
                _ => "1".into(),
            };
            vec![
                text(&s["name"]),
                text(&s["source"]),
                text(&s["price_sats"]),
                calls,
                text(&s["host"]),
                text(&s["path"]),
                text(&s["upstream"]),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "SOURCE", "SATS", "CALLS", "HOST", "PATH", "UPSTREAM",
        ],
        rows,
    );
}

fn tokens_table(v: &Value) {
    let rows = v["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let used = match &t["calls_total"] {
                Value::Number(n) => format!("{}/{n}", text(&t["calls_used"])),
                _ => "pass".into(),
            };
            vec![
                text(&t["token_id"]),
                text(&t["service"]),
                text(&t["amount_sats"]),
                if t["paid"] == true { "yes" } else { "no" }.into(),
                used,
                when(&t["first_used"]),
                when(&t["last_used"]),
                if t["revoked"] == true { "REVOKED" } else { "" }.into(),
            ]
        })
        .collect();
    table(
        &[
            "TOKEN", "SERVICE", "SATS", "PAID", "USED", "FIRST", "LAST", "",
        ],
        rows,
    );
    if let Some(next) = v["next"].as_str() {
        println!("(more: the API's tokens?before={next})");
    }
}

fn payments_table(v: &Value) {
    let rows = v["payments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                when(&p["paid_at"]),
                text(&p["service"]),
                text(&p["amount_sats"]),
                text(&p["token_id"]),
            ]
        })
        .collect();
    table(&["PAID", "SERVICE", "SATS", "TOKEN"], rows);
}

fn stats_table(v: &Value) {
    let cols = [
        "earned_sats",
        "challenges",
        "payments",
        "calls_served",
        "calls_refunded",
        "free_calls",
        "rate_limited",
    ];
    let row = |first: Vec<String>, d: &Value| {
        let mut r = first;
        r.extend(cols.iter().map(|c| text(&d[*c])));
        r
    };
    let mut rows: Vec<Vec<String>> = v["days"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| row(vec![text(&d["day"]), text(&d["service"])], d))
        .collect();
    rows.push(row(vec!["total".into(), String::new()], &v["totals"]));
    let mut head = vec!["DAY", "SERVICE"];
    head.extend([
        "SATS", "402s", "PAID", "SERVED", "REFUNDED", "FREE", "LIMITED",
    ]);
    table(&head, rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_pairs_become_a_merge_patch() {
        let patch = merge_patch_of(&[
            "price_sats=5".into(),
            "free_tier.calls=10".into(),
            "free_tier.window_secs=60".into(),
            "host=null".into(),
            "path=/v2".into(),
        ])
        .unwrap();
        assert_eq!(
            patch,
            serde_json::json!({ "price_sats": 5, "free_tier": { "calls": 10, "window_secs": 60 },
                                "host": null, "path": "/v2" })
        );
        assert!(merge_patch_of(&["nokey".into()]).is_err());
        assert!(merge_patch_of(&["a=1".into(), "a.b=2".into()]).is_err());
    }

    #[test]
    fn services_are_read_from_json_or_toml() {
        let toml = "[[services]]\nname = \"a\"\nupstream = \"http://x\"\nprice_sats = 2\n";
        assert_eq!(service_from_text(toml).unwrap()["price_sats"], 2);
        let bare = "name = \"a\"\nupstream = \"http://x\"\nprice_sats = 3\n";
        assert_eq!(service_from_text(bare).unwrap()["price_sats"], 3);
        assert_eq!(
            service_from_text(r#"{"name":"a","price_sats":4}"#).unwrap()["price_sats"],
            4
        );
        assert!(service_from_text("[[services]]\nname=\"a\"\n[[services]]\nname=\"b\"\n").is_err());
    }
}
