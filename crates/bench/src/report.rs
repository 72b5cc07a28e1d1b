//! The results table: reads the JSON files a run left in its results directory (and criterion's
//! estimates), computes the ratios, judges each target and writes markdown plus `results.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

/// Load scenarios, in table order: (file stem, description).
const SCENARIOS: &[(&str, &str)] = &[
    ("a_direct", "a. upstream directly"),
    ("b_nginx", "b. nginx → upstream"),
    ("c_free", "c. Turnpike, free route"),
    (
        "d_pass",
        "d. Turnpike, time-pass token (default: remembered once verified)",
    ),
    (
        "d_pass_full",
        "d′. Turnpike, time-pass token parsed and HMAC-checked on every call (`credential_memo = 0`)",
    ),
    ("e_sqlite", "e. Turnpike, single-call tokens, SQLite"),
    (
        "e_sqlite_grown",
        "e. the same, after a million used tokens were added to the store",
    ),
    ("e_postgres", "e. Turnpike, single-call tokens, PostgreSQL"),
    ("f_challenge", "f. Turnpike, 402 challenges (dev backend)"),
];

fn load(dir: &Path, stem: &str) -> Option<Value> {
    let text = std::fs::read(dir.join(format!("{stem}.json"))).ok()?;
    serde_json::from_slice(&text).ok()
}

/// A load scenario's figures: its single run (`<stem>.json`), or of its interleaved rounds
/// (`<stem>.r1.json`, …) the one with the median throughput, with every round's req/s in
/// `rounds_rps`.
fn load_scenario(dir: &Path, stem: &str) -> Option<Value> {
    if let Some(v) = load(dir, stem) {
        return Some(v);
    }
    let rounds: Vec<Value> = (1..)
        .map_while(|r| load(dir, &format!("{stem}.r{r}")))
        .collect();
    let mut by_rps: Vec<&Value> = rounds.iter().collect();
    by_rps.sort_by(|a, b| {
        let (a, b) = (num(a, "rps").unwrap_or(0.0), num(b, "rps").unwrap_or(0.0));
        a.total_cmp(&b)
    });
    let mut median = (*by_rps.get(by_rps.len().saturating_sub(1) / 2)?).clone();
    median["rounds"] = json!(rounds.len());
    median["rounds_rps"] = json!(rounds.iter().map(|v| num(v, "rps")).collect::<Vec<_>>());
    Some(median)
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn fmt_num(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "–".into(),
    }
}

/// Criterion medians (ns) by benchmark id (`group/bench`).
fn criterion_medians(dir: &Path) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name()
                    .is_some_and(|n| n == "report" || n == "base" || n == "change")
                {
                    continue;
                }
                stack.push(p);
            } else if p.ends_with("new/estimates.json")
                && let Ok(text) = std::fs::read(&p)
                && let Ok(v) = serde_json::from_slice::<Value>(&text)
                && let Some(median) = v["median"]["point_estimate"].as_f64()
                && let Some(bench_dir) = p.parent().and_then(Path::parent)
                && let Ok(rel) = bench_dir.strip_prefix(dir)
            {
                out.insert(rel.display().to_string(), median);
            }
        }
    }
    out
}

/// A judged target.
struct Target {
    what: String,
    goal: String,
    measured: String,
    met: Option<bool>,
}

/// Writes the markdown table and `results.json` next to it.
pub fn run(
    dir: &Path,
    out: &Path,
    criterion: Option<&Path>,
    baseline: Option<&Path>,
) -> anyhow::Result<()> {
    let meta = load(dir, "meta").unwrap_or(json!({}));
    let smoke = meta["mode"].as_str() == Some("smoke");
    let mut results = json!({ "meta": meta.clone() });
    let mut md = String::new();
    writeln!(md, "# Turnpike benchmark results\n")?;
    writeln!(
        md,
        "Produced by `bash bench/run.sh` ({} mode) on {}; commit `{}`.\n",
        meta["mode"].as_str().unwrap_or("?"),
        meta["date"].as_str().unwrap_or("?"),
        meta["commit"].as_str().unwrap_or("?"),
    )?;
    writeln!(md, "| machine | value |\n|---|---|")?;
    for (k, label) in [
        (
            "cores",
            "CPU cores (shared by load generator, proxies and upstream)",
        ),
        ("cpu", "CPU"),
        ("load_generator", "load generator"),
        ("connections", "connections"),
        ("duration_s", "seconds per scenario (e, f)"),
        ("rounds", "rounds of a–d′ (interleaved)"),
        ("round_duration_s", "seconds per round and scenario"),
        ("nginx", "nginx"),
        ("postgres", "PostgreSQL"),
        ("turnpike_build", "Turnpike build"),
    ] {
        let v = &meta[k];
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Null => "–".into(),
            other => other.to_string(),
        };
        writeln!(md, "| {label} | {s} |")?;
    }
    if smoke {
        writeln!(
            md,
            "\n**Smoke run**: seconds per scenario, to check the harness; figures are not meaningful \
             and no target is judged.\n"
        )?;
    }

    // Load scenarios.
    let nginx = load_scenario(dir, "b_nginx");
    let b_rps = nginx.as_ref().and_then(|v| num(v, "rps"));
    let b_p99 = nginx.as_ref().and_then(|v| num(v, "p99_us"));
    writeln!(md, "\n## Throughput and latency\n")?;
    writeln!(
        md,
        "| scenario | requests/s | p50 (µs) | p99 (µs) | req/s vs nginx | p99 vs nginx | answers |\n|---|---:|---:|---:|---:|---:|---|"
    )?;
    let mut load_results = serde_json::Map::new();
    for (stem, label) in SCENARIOS {
        let Some(v) = load_scenario(dir, stem) else {
            writeln!(md, "| {label} | not run | | | | | |")?;
            continue;
        };
        let rps = num(&v, "rps");
        let p99 = num(&v, "p99_us");
        let ratio = rps.zip(b_rps).map(|(r, b)| r / b);
        let p99_ratio = p99.zip(b_p99).map(|(p, b)| p / b);
        let answers = format!(
            "{} total: {} 2xx, {} non-2xx, {} socket errors",
            v["requests"], v["ok"], v["status_errors"], v["socket_errors"]
        );
        writeln!(
            md,
            "| {label} | {} | {} | {} | {} | {} | {answers} |",
            fmt_num(rps, 0),
            fmt_num(num(&v, "p50_us"), 0),
            fmt_num(p99, 0),
            fmt_num(ratio, 2),
            fmt_num(p99_ratio, 2),
        )?;
        let mut entry = v.clone();
        entry["rps_vs_nginx"] = json!(ratio);
        entry["p99_vs_nginx"] = json!(p99_ratio);
        load_results.insert((*stem).to_owned(), entry);
    }
    if let Some(rounds) = meta["rounds"].as_u64().filter(|r| *r > 1) {
        writeln!(
            md,
            "\na–d′ ran in {rounds} interleaved rounds of {} s (a, b, c, d, d′ in turn); each row \
             is the scenario's median round, so every ratio compares runs made under the same \
             conditions on this shared machine. Rounds' req/s are in `results.json` \
             (`rounds_rps`).",
            meta["round_duration_s"]
        )?;
    }
    results["load"] = Value::Object(load_results.clone());

    let mut targets: Vec<Target> = Vec::new();
    let rps_of = |s: &str| load_results.get(s).and_then(|v| num(v, "rps"));
    let ratio_of = |s: &str, k: &str| load_results.get(s).and_then(|v| num(v, k));
    if let Some(r) = ratio_of("c_free", "rps_vs_nginx") {
        targets.push(Target {
            what: "c. free route throughput".into(),
            goal: "≥ 1.0 × nginx".into(),
            measured: format!("{r:.2} ×"),
            met: Some(r >= 1.0),
        });
    }
    if let Some(r) = ratio_of("d_pass", "rps_vs_nginx") {
        targets.push(Target {
            what: "d. time-pass throughput".into(),
            goal: "≥ 1.0 × nginx".into(),
            measured: format!("{r:.2} ×"),
            met: Some(r >= 1.0),
        });
    }
    if let Some(r) = ratio_of("d_pass_full", "rps_vs_nginx") {
        targets.push(Target {
            what: "d′. time-pass throughput, HMAC check on every call".into(),
            goal: "≥ 1.0 × nginx".into(),
            measured: format!("{r:.2} ×"),
            met: Some(r >= 1.0),
        });
    }
    if let Some(r) = ratio_of("d_pass", "p99_vs_nginx") {
        targets.push(Target {
            what: "d. time-pass p99 latency".into(),
            goal: "≤ 1.2 × nginx".into(),
            measured: format!("{r:.2} ×"),
            met: Some(r <= 1.2),
        });
    }
    for (stem, label, goal) in [
        ("e_sqlite", "e. paid calls/s, SQLite", 30_000.0),
        ("e_postgres", "e. paid calls/s, PostgreSQL", 20_000.0),
    ] {
        if let Some(v) = load_results.get(stem) {
            let paid = num(v, "ok").zip(num(v, "duration_s")).map(|(ok, d)| ok / d);
            if let Some(paid) = paid {
                targets.push(Target {
                    what: label.into(),
                    goal: format!("≥ {goal:.0}/s"),
                    measured: format!("{paid:.0}/s"),
                    met: Some(paid >= goal),
                });
            }
        }
    }
    let paid_rate = |stem: &str| {
        let v = load_results.get(stem)?;
        Some(num(v, "ok")? / num(v, "duration_s")?)
    };
    if let (Some(empty), Some(grown)) = (paid_rate("e_sqlite"), paid_rate("e_sqlite_grown")) {
        let ratio = grown / empty;
        targets.push(Target {
            what: "e. paid calls/s as the store grows (SQLite, 1M used tokens added)".into(),
            goal: "within 10 % of the empty store's".into(),
            measured: format!("{grown:.0}/s vs {empty:.0}/s ({ratio:.2} ×)"),
            met: Some(ratio >= 0.9),
        });
    }
    writeln!(md, "\n## Paid calls: no call served twice\n")?;
    writeln!(
        md,
        "Checked after each run of scenario e: every token used at most once in the store, and the upstream served exactly the calls the store charged.\n"
    )?;
    writeln!(
        md,
        "| store | tokens used | calls charged | upstream served | 2xx seen by wrk | tokens over limit | verdict |\n|---|---:|---:|---:|---:|---:|---|"
    )?;
    for (stem, label) in [
        ("served_sqlite", "SQLite"),
        ("served_sqlite_grown", "SQLite, grown store"),
        ("served_postgres", "PostgreSQL"),
    ] {
        if let Some(v) = load(dir, stem) {
            writeln!(
                md,
                "| {label} | {} | {} | {} | {} | {} | {} |",
                v["tokens_used"],
                v["calls_charged"],
                v["upstream_served"],
                v["wrk_2xx"],
                v["tokens_over_limit"],
                if v["ok"].as_bool() == Some(true) {
                    "OK"
                } else {
                    "FAILED"
                }
            )?;
            targets.push(Target {
                what: format!("e. no call served twice ({label})"),
                goal: "upstream served = calls charged, no token over its limit".into(),
                measured: if v["ok"].as_bool() == Some(true) {
                    "holds".into()
                } else {
                    "violated".into()
                },
                met: v["ok"].as_bool(),
            });
            results[stem] = v;
        }
    }
    if let Some(rps) = rps_of("f_challenge") {
        targets.push(Target {
            what: "f. 402 challenges/s".into(),
            goal: "≥ 5000/s".into(),
            measured: format!("{rps:.0}/s"),
            met: Some(rps >= 5000.0),
        });
    }

    // SSE.
    writeln!(md, "\n## Streaming (SSE): delay per event\n")?;
    writeln!(
        md,
        "Time from the upstream writing an event to the client reading it; added delay = median through the proxy − median direct.\n"
    )?;
    writeln!(
        md,
        "| path | events | p50 (µs) | p99 (µs) | added p50 (µs) |\n|---|---:|---:|---:|---:|"
    )?;
    let direct = load(dir, "sse_direct");
    let direct_p50 = direct.as_ref().and_then(|v| num(v, "delay_us_p50"));
    for (stem, label) in [
        ("sse_direct", "direct"),
        ("sse_nginx", "nginx"),
        ("sse_turnpike", "Turnpike"),
    ] {
        if let Some(v) = load(dir, stem) {
            let p50 = num(&v, "delay_us_p50");
            let added = if stem == "sse_direct" {
                None
            } else {
                p50.zip(direct_p50).map(|(a, b)| a - b)
            };
            writeln!(
                md,
                "| {label} | {} | {} | {} | {} |",
                v["events"],
                fmt_num(p50, 0),
                fmt_num(num(&v, "delay_us_p99"), 0),
                fmt_num(added, 0)
            )?;
            if stem == "sse_turnpike"
                && let Some(added) = added
            {
                targets.push(Target {
                    what: "g. SSE delay added per event".into(),
                    goal: "≤ 1 ms median".into(),
                    measured: format!("{added:.0} µs"),
                    met: Some(added <= 1000.0),
                });
            }
            results[stem] = v;
        }
    }

    // The agent's wallet.
    if let Some(v) = load(dir, "wallet") {
        writeln!(
            md,
            "\n## The agent's wallet: ledger and budget (dev backend)\n"
        )?;
        writeln!(
            md,
            "A paid fetch is a 402, a payment and the retry. With a wallet, the payment is also reserved \
             within the budget (one `BEGIN IMMEDIATE` transaction in the SQLite ledger), settled, and its \
             token kept.\n"
        )?;
        writeln!(md, "| measure | value |\n|---|---:|")?;
        writeln!(
            md,
            "| paid fetch, no ledger or budget (median of {}) | {} ms |",
            v["fetches"],
            fmt_num(num(&v, "fetch_ms_p50_without"), 2)
        )?;
        writeln!(
            md,
            "| paid fetch with ledger and budget (median of {}) | {} ms |",
            v["fetches"],
            fmt_num(num(&v, "fetch_ms_p50_with"), 2)
        )?;
        writeln!(
            md,
            "| added by the ledger and budget | {} ms |",
            fmt_num(num(&v, "added_ms_p50"), 2)
        )?;
        writeln!(
            md,
            "| paid fetches/s, {} concurrent fetchers, one ledger (one reservation each) | {} |",
            v["concurrency"],
            fmt_num(num(&v, "concurrent_paid_fetches_per_s"), 0)
        )?;
        writeln!(
            md,
            "| ledger alone: reservations (+ settlement)/s, {} concurrent callers | {} |",
            v["concurrency"],
            fmt_num(num(&v, "ledger_reservations_per_s"), 0)
        )?;
        results["wallet"] = v;
    }

    // Start-up and memory.
    if let Some(v) = load(dir, "startup") {
        writeln!(md, "\n## Start-up and memory\n")?;
        writeln!(md, "| measure | value |\n|---|---:|")?;
        let startup = num(&v, "startup_ms_median");
        let idle = num(&v, "rss_idle_mib");
        let loaded = num(&v, "rss_connections_mib");
        writeln!(
            md,
            "| start-up to first served request (median of {}) | {} ms |",
            v["startup_ms_all"].as_array().map_or(0, Vec::len),
            fmt_num(startup, 1)
        )?;
        writeln!(md, "| resident memory, idle | {} MiB |", fmt_num(idle, 1))?;
        writeln!(
            md,
            "| resident memory, {} open connections | {} MiB |",
            v["connections"],
            fmt_num(loaded, 1)
        )?;
        if let Some(s) = startup {
            targets.push(Target {
                what: "start-up to first served request".into(),
                goal: "≤ 100 ms".into(),
                measured: format!("{s:.1} ms"),
                met: Some(s <= 100.0),
            });
        }
        if let Some(m) = idle {
            targets.push(Target {
                what: "idle resident memory".into(),
                goal: "≤ 20 MB".into(),
                measured: format!("{m:.1} MiB"),
                met: Some(m * 1.048_576 <= 20.0),
            });
        }
        if let Some(m) = loaded {
            targets.push(Target {
                what: format!("resident memory with {} connections", v["connections"]),
                goal: "≤ 100 MB".into(),
                measured: format!("{m:.1} MiB"),
                met: Some(m * 1.048_576 <= 100.0),
            });
        }
        results["startup"] = v;
    }

    // Micro-benchmarks.
    let medians = criterion.map(criterion_medians).unwrap_or_default();
    if !medians.is_empty() {
        writeln!(
            md,
            "\n## Micro-benchmarks (`cargo bench`, criterion medians)\n"
        )?;
        writeln!(md, "| benchmark | median |\n|---|---:|")?;
        for (name, ns) in &medians {
            let shown = if *ns >= 1_000_000.0 {
                format!("{:.2} ms", ns / 1_000_000.0)
            } else if *ns >= 1000.0 {
                format!("{:.2} µs", ns / 1000.0)
            } else {
                format!("{ns:.0} ns")
            };
            writeln!(md, "| `{name}` | {shown} |")?;
        }
        for (name, ns) in &medians {
            if name.starts_with("credential_parse_verify/") {
                targets.push(Target {
                    what: format!("credential parse + verify (`{name}`)"),
                    goal: "≤ 5 µs median".into(),
                    measured: format!("{:.2} µs", ns / 1000.0),
                    met: Some(*ns <= 5000.0),
                });
            }
        }
        for (group, what) in [
            ("verify_flat", "verification, 1k vs 1M tokens issued"),
            (
                "consume_sqlite",
                "charging a call (SQLite), 1k vs 1M tokens in the store",
            ),
            (
                "consume_postgres",
                "charging a call (PostgreSQL), 1k vs 1M tokens in the store",
            ),
        ] {
            let small = medians
                .get(&format!("{group}/1k_tokens"))
                .or(medians.get(&format!("{group}/1k_rows")));
            let big = medians
                .get(&format!("{group}/1m_tokens"))
                .or(medians.get(&format!("{group}/1m_rows")));
            if let (Some(s), Some(b)) = (small, big) {
                let r = b / s;
                targets.push(Target {
                    what: what.into(),
                    goal: "flat (1M within 1.5 × of 1k)".into(),
                    measured: format!("{:.2} µs vs {:.2} µs ({r:.2} ×)", s / 1000.0, b / 1000.0),
                    met: Some(r <= 1.5),
                });
            }
        }
        results["micro_ns"] = json!(medians);
    }

    // Targets.
    writeln!(md, "\n## Targets\n")?;
    writeln!(md, "| target | goal | measured | met |\n|---|---|---|---|")?;
    for t in &targets {
        let met = match (smoke, t.met) {
            (true, _) => "not judged (smoke)",
            (false, Some(true)) => "yes",
            (false, Some(false)) => "**no**",
            (false, None) => "–",
        };
        writeln!(md, "| {} | {} | {} | {met} |", t.what, t.goal, t.measured)?;
    }

    // Before/after.
    if let Some(path) = baseline {
        let before: Value = serde_json::from_slice(&std::fs::read(path)?)?;
        writeln!(md, "\n## Before and after optimisation\n")?;
        writeln!(
            md,
            "Before: `{}` ({}); after: this run.\n",
            before["meta"]["commit"].as_str().unwrap_or("?"),
            before["meta"]["date"].as_str().unwrap_or("?")
        )?;
        writeln!(
            md,
            "| scenario | req/s before | req/s after | p99 µs before | p99 µs after |\n|---|---:|---:|---:|---:|"
        )?;
        for (stem, label) in SCENARIOS {
            let b = &before["load"][*stem];
            let a = load_results.get(*stem).cloned().unwrap_or(Value::Null);
            writeln!(
                md,
                "| {label} | {} | {} | {} | {} |",
                fmt_num(num(b, "rps"), 0),
                fmt_num(num(&a, "rps"), 0),
                fmt_num(num(b, "p99_us"), 0),
                fmt_num(num(&a, "p99_us"), 0)
            )?;
        }
        if let (Some(bm), true) = (before["micro_ns"].as_object(), !medians.is_empty()) {
            writeln!(
                md,
                "\n| micro-benchmark | before | after |\n|---|---:|---:|"
            )?;
            for (name, ns) in &medians {
                if let Some(b) = bm.get(name).and_then(Value::as_f64) {
                    writeln!(
                        md,
                        "| `{name}` | {:.2} µs | {:.2} µs |",
                        b / 1000.0,
                        ns / 1000.0
                    )?;
                }
            }
        }
        results["baseline"] = before;
    }
    if let Ok(notes) = std::fs::read_to_string(dir.join("notes.md")) {
        writeln!(md, "\n{notes}")?;
    }

    std::fs::write(out, &md)?;
    std::fs::write(
        out.with_extension("json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    print!("{md}");
    Ok(())
}
