//! An OpenAPI 3.1 document of one provider's services on a hub: one path per service and
//! route (its path on the provider's host; the servers are the host and the `/<slug>` prefix),
//! the route's method or, for any method, `get` and `post`; the request schema from its
//! `input_schema` (query parameters for `get`/`head`/`delete`, a JSON body otherwise, as
//! `turnpike mcp --hub` calls it); prices under `x-turnpike` and `x-402` on each operation;
//! the `402` answer and the L402 `Authorization` scheme.

use serde_json::{Map, Value, json};

use super::Listed;
use crate::hub::{Hub, Provider};

/// Methods whose arguments travel in the query string.
const QUERY_METHODS: [&str; 3] = ["GET", "HEAD", "DELETE"];

/// The document of `provider`'s `listed` services (in matching order), priced at `now`.
pub fn document(hub: &Hub, provider: &Provider, listed: &[Listed], now: u64) -> Value {
    let slug = &provider.record.slug;
    let mut paths = Map::new();
    let mut ids = std::collections::HashSet::new();
    for l in listed {
        let methods: Vec<String> = match l.service.method() {
            Some(m) => vec![m.as_str().to_owned()],
            None => vec!["GET".into(), "POST".into()],
        };
        let item = paths
            .entry(l.own_path().to_owned())
            .or_insert_with(|| json!({}));
        for method in methods {
            let key = method.to_ascii_lowercase();
            // Matching order: the first service of a path and method is the one that answers.
            if item.get(&key).is_none() {
                let id = unique(&mut ids, operation_id(l, &method));
                item[&key] = operation(l, &method, id, now);
            }
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": provider.record.name,
            "version": "1.0.0",
            "description": format!(
                "The paid APIs of {} on the hub {}: each call is paid over L402 (a Lightning \
                 invoice in the 402 answer; retry with `Authorization: L402 <macaroon>:<preimage>`).",
                provider.record.name, hub.settings.domain
            ),
        },
        "servers": [
            { "url": format!("https://{}", hub.settings.host_of(slug)),
              "description": "The provider's host on the hub." },
            { "url": format!("/{slug}"),
              "description": "The provider's prefix on the hub's own address." },
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "l402": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`L402 <macaroon>:<preimage>`: the macaroon of the 402 answer and the preimage of its paid invoice.",
                },
            },
            "schemas": {
                "PaymentRequired": {
                    "type": "object",
                    "description": "A 402 answer: pay `invoice`, then retry with the macaroon and the preimage.",
                    "properties": {
                        "invoice": { "type": "string" },
                        "macaroon": { "type": "string" },
                        "price_msat": { "type": "integer" },
                        "amount_msat": { "type": "integer" },
                    },
                },
            },
        },
    })
}

/// `id`, or `id_2`, `id_3`… if taken (two names can read alike once made tool names).
fn unique(taken: &mut std::collections::HashSet<String>, id: String) -> String {
    let mut candidate = id.clone();
    let mut n = 1;
    while !taken.insert(candidate.clone()) {
        n += 1;
        candidate = format!("{id}_{n}");
    }
    candidate
}

/// One operation of `l` with `method`, named `id`.
fn operation(l: &Listed, method: &str, id: String, now: u64) -> Value {
    let s = &l.service;
    let amount = l.amount_msat(now);
    let mut op = Map::new();
    op.insert("operationId".into(), json!(id));
    op.insert(
        "summary".into(),
        json!(s.meta.description.clone().unwrap_or_else(|| s.name.clone())),
    );
    op.insert(
        "description".into(),
        json!(
            format!(
                "{} Paths below this one are served by the same service at the same price.",
                s.meta.description.as_deref().unwrap_or_default()
            )
            .trim_start()
        ),
    );
    if !s.meta.tags.is_empty() {
        op.insert("tags".into(), json!(s.meta.tags));
    }
    if let Some(schema) = &s.meta.input_schema {
        if QUERY_METHODS.contains(&method) {
            op.insert("parameters".into(), query_parameters(schema));
        } else {
            op.insert(
                "requestBody".into(),
                json!({ "content": { "application/json": { "schema": schema } } }),
            );
        }
    }
    op.insert("security".into(), json!([{ "l402": [] }]));
    op.insert(
        "responses".into(),
        json!({
            "200": { "description": "The provider's answer." },
            "402": {
                "description": "Payment required: the invoice and macaroon to pay with.",
                "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/PaymentRequired" } } },
            },
        }),
    );
    op.insert(
        "x-turnpike".into(),
        json!({
            "id": l.id(),
            "mode": crate::discovery::pricing_mode(s),
            "price_msat": s.price_msat().0,
            "amount_msat": amount,
            "calls_per_payment": s.calls,
            "valid_secs": s.lifetime_secs,
            "grant": s.grant_text(),
        }),
    );
    op.insert(
        "x-402".into(),
        json!({ "protocol": "L402", "currency": "msat", "amount": amount }),
    );
    Value::Object(op)
}

/// A unique operation id: the directory id's MCP tool name, and the method when a service
/// answers several.
fn operation_id(l: &Listed, method: &str) -> String {
    let base: String = l
        .id()
        .replace('/', "__")
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                true => c,
                false => '_',
            },
        )
        .collect();
    match l.service.method() {
        Some(_) => base,
        None => format!("{base}_{}", method.to_ascii_lowercase()),
    }
}

/// The properties of an object schema as query parameters.
fn query_parameters(schema: &Value) -> Value {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let params: Vec<Value> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .map(|(name, prop)| {
                    json!({
                        "name": name,
                        "in": "query",
                        "required": required.contains(&name.as_str()),
                        "schema": prop,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Value::Array(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_stay_unique() {
        let mut taken = std::collections::HashSet::new();
        assert_eq!(unique(&mut taken, "alice__a_b".into()), "alice__a_b");
        assert_eq!(unique(&mut taken, "alice__a_b".into()), "alice__a_b_2");
        assert_eq!(unique(&mut taken, "alice__a_b".into()), "alice__a_b_3");
        assert_eq!(unique(&mut taken, "alice__c".into()), "alice__c");
    }
}
