//! `turnpike spend`, `turnpike tokens` and `turnpike wallet balance`: what the ledger recorded.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use turnpike_client::budget::{Budget, Spent};
use turnpike_client::ledger::{Ledger, PaymentRow, PaymentState, now_unix};

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (`YYYY-MM-DD`, UTC) of a unix time.
pub fn civil_from_unix(t: u64) -> String {
    let z = i64::try_from(t / 86_400).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses `--since`: `YYYY-MM-DD` (UTC midnight) or unix seconds.
pub fn parse_since(text: &str) -> anyhow::Result<u64> {
    if let Ok(t) = text.parse::<u64>() {
        return Ok(t);
    }
    let parts: Vec<&str> = text.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        bail!("--since {text:?}: expected YYYY-MM-DD or unix seconds");
    };
    let (y, m, d): (i64, i64, i64) = (
        y.parse().context("year")?,
        m.parse().context("month")?,
        d.parse().context("day")?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        bail!("--since {text:?}: not a date");
    }
    Ok(u64::try_from(days_from_civil(y, m, d) * 86_400).unwrap_or(0))
}

/// Msat rounded up to whole sats.
pub fn sats(msat: u64) -> u64 {
    turnpike_l402::Msat(msat).to_sats_ceil().0
}

/// What is left under each limit of `budget`, given what was spent (per_host for `origin`).
pub fn left(budget: &Budget, spent: &Spent) -> serde_json::Value {
    let rest = |cap: u64, used: u64| {
        let cap = turnpike_l402::Sats(cap)
            .to_msat()
            .unwrap_or(turnpike_l402::Msat(u64::MAX));
        turnpike_l402::Msat(cap.0.saturating_sub(used))
            .to_sats_floor()
            .0
    };
    serde_json::json!({
        "max_per_call": budget.max_per_call,
        "per_period": budget.per_period.map(|w| serde_json::json!({
            "per": w.per.name(), "sats": w.sats, "left_sats": rest(w.sats, spent.period_window.0),
        })),
        "total": budget.total.map(|t| serde_json::json!({
            "sats": t, "left_sats": rest(t, spent.total.0),
        })),
        "approve_above": budget.approve_above,
    })
}

/// What x402 payments charged per asset (`network/address`), in base units.
pub fn x402_totals(rows: &[PaymentRow]) -> BTreeMap<String, u64> {
    let mut by_asset = BTreeMap::new();
    for row in rows.iter().filter(|r| r.state != PaymentState::Failed) {
        if let (Some(asset), Some(units)) = (&row.asset, row.amount_units) {
            let sum: &mut u64 = by_asset.entry(asset.clone()).or_default();
            *sum = sum.saturating_add(units);
        }
    }
    by_asset
}

/// What payments charged (paid amounts and fees, open reservations), in msat.
pub struct Totals {
    /// In all.
    pub total: u64,
    /// Per origin.
    pub by_origin: BTreeMap<String, u64>,
    /// Per day (UTC).
    pub by_day: BTreeMap<String, u64>,
}

/// Sums what `rows` charged, in all, per origin and per day.
pub fn totals(rows: &[PaymentRow]) -> Totals {
    let mut t = Totals {
        total: 0,
        by_origin: BTreeMap::new(),
        by_day: BTreeMap::new(),
    };
    for row in rows {
        let charged = row.charged_msat();
        t.total += charged;
        *t.by_origin.entry(row.origin.clone()).or_default() += charged;
        *t.by_day.entry(civil_from_unix(row.created_at)).or_default() += charged;
    }
    t
}

/// `turnpike spend`.
pub async fn spend(
    wallet: Option<&str>,
    since: Option<&str>,
    json: bool,
    wallet_file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let since = since.map(parse_since).transpose()?;
    let ledger = Ledger::open_default().await?;
    let rows = ledger.payments(wallet, since).await?;
    let Totals {
        total,
        by_origin,
        by_day,
    } = totals(&rows);
    let budget_left = match wallet {
        Some(name) => {
            let entry = crate::wallets::wallet_entry(name, wallet_file).ok();
            match entry {
                Some(e) => {
                    let spent = ledger.spent(name, "", &e.budget, now_unix()).await?;
                    Some(left(&e.budget, &spent))
                }
                None => None,
            }
        }
        None => None,
    };
    if json {
        let msat_to_sats = |m: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
            m.iter().map(|(k, v)| (k.clone(), sats(*v))).collect()
        };
        println!(
            "{}",
            serde_json::json!({
                "total_sats": sats(total),
                "total_msat": total,
                "by_origin": msat_to_sats(&by_origin),
                "by_day": msat_to_sats(&by_day),
                "x402_units_by_asset": x402_totals(&rows),
                "payments": rows,
                "budget_left": budget_left,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} payments, {} sats in all (paid amounts and fees, open reservations)",
        rows.len(),
        sats(total)
    );
    println!("by origin:");
    for (origin, msat) in &by_origin {
        println!("  {origin:<40} {:>10} sats", sats(*msat));
    }
    println!("by day (UTC):");
    for (day, msat) in &by_day {
        println!("  {day:<40} {:>10} sats", sats(*msat));
    }
    let x402 = x402_totals(&rows);
    if !x402.is_empty() {
        println!("x402, by asset (base units; paid and open):");
        for (asset, units) in &x402 {
            println!("  {asset:<60} {units:>10}");
        }
    }
    let open: Vec<&PaymentRow> = rows
        .iter()
        .filter(|r| {
            matches!(r.state, PaymentState::Reserved | PaymentState::Unknown)
                && (r.charged_msat() > 0 || r.rail == "x402")
        })
        .collect();
    if !open.is_empty() {
        println!("{} payments reserved with no outcome yet", open.len());
    }
    if let Some(left) = budget_left {
        println!("budget left: {left}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `turnpike tokens list`.
pub async fn tokens_list(json: bool) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::open_default().await?;
    let tokens = ledger.tokens().await?;
    if json {
        println!("{}", serde_json::to_string(&tokens)?);
        return Ok(ExitCode::SUCCESS);
    }
    if tokens.is_empty() {
        println!("no stored tokens");
    }
    for t in tokens {
        println!(
            "{:>5}  {}  service {}  calls left {}  valid until {}",
            t.id,
            t.origin,
            t.service,
            t.calls_remaining
                .map_or_else(|| "unlimited".to_owned(), |c| c.to_string()),
            t.valid_until
                .map_or_else(|| "no expiry".to_owned(), |v| v.to_string()),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `turnpike tokens rm`.
pub async fn tokens_rm(ids: &[i64], all: bool) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::open_default().await?;
    let ids: Vec<i64> = if all {
        ledger.tokens().await?.iter().map(|t| t.id).collect()
    } else {
        ids.to_vec()
    };
    if ids.is_empty() {
        bail!("name the tokens to remove (ids from `turnpike tokens list`) or pass --all");
    }
    let mut missing = Vec::new();
    for id in &ids {
        if !ledger.drop_token(*id).await? {
            missing.push(id.to_string());
        }
    }
    if !missing.is_empty() {
        bail!("no stored token {}", missing.join(", "));
    }
    println!("removed {} token(s)", ids.len());
    Ok(ExitCode::SUCCESS)
}

/// `turnpike wallet balance [NAME]`.
pub async fn balance(
    name: Option<&str>,
    json: bool,
    wallet_file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let names: Vec<String> = match name {
        Some(n) => vec![n.to_owned()],
        None => crate::wallets::read_wallet_file(wallet_file)?
            .1
            .wallets
            .into_keys()
            .collect(),
    };
    let ledger = Ledger::open_default().await?;
    let mut out = Vec::new();
    for name in names {
        let entry = crate::wallets::wallet_entry(&name, wallet_file)?;
        let balance = match &entry.backend {
            Some(turnpike_lightning::config::BackendConfig::Dev(_)) => {
                Err("a dev wallet has no balance of its own".to_owned())
            }
            None => Err("no Lightning backend (it pays x402 only)".to_owned()),
            _ => match crate::wallets::connect_entry(&name, &entry) {
                Ok(b) => b.balance().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
        };
        let spent = ledger.spent(&name, "", &entry.budget, now_unix()).await?;
        out.push(serde_json::json!({
            "wallet": name,
            "balance_sats": balance.as_ref().ok().map(|m| m.to_sats_floor().0),
            "balance_msat": balance.as_ref().ok().map(|m| m.0),
            "error": balance.as_ref().err(),
            "spent_total_sats": sats(spent.total.0),
            "budget_left": left(&entry.budget, &spent),
        }));
    }
    if json {
        println!("{}", serde_json::Value::Array(out));
        return Ok(ExitCode::SUCCESS);
    }
    for w in out {
        match w["balance_sats"].as_u64() {
            Some(b) => println!("{}: {b} sats", w["wallet"].as_str().unwrap_or("?")),
            None => println!(
                "{}: balance unavailable ({})",
                w["wallet"].as_str().unwrap_or("?"),
                w["error"].as_str().unwrap_or("?")
            ),
        }
        println!(
            "  spent {} sats in all; budget left: {}",
            w["spent_total_sats"], w["budget_left"]
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(parse_since("1970-01-01").unwrap(), 0);
        assert_eq!(parse_since("2024-02-29").unwrap(), 1_709_164_800);
        assert_eq!(civil_from_unix(1_709_164_800 + 86_399), "2024-02-29");
        assert_eq!(parse_since("1700000000").unwrap(), 1_700_000_000);
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("2024-13-01").is_err());
    }
}
