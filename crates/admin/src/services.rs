//! Services as JSON: the keys of a `[[services]]` table plus a read-only `source`. Inline header
//! secrets are shown as `{"redacted": true}`; sent back so, they keep the value in force.
//! Input is parsed strictly (unknown keys fail) and validated by the gateway's own rules, with
//! errors naming the key.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use turnpike_gateway::config::{ConfigError, ServiceConfig};
use turnpike_gateway::control::{ChangeError, Source};

use crate::error::{AdminError, Code};
use crate::{Api, Caller};

type Who = axum::Extension<Caller>;

/// The marker shown in place of an inline secret.
fn redacted() -> Value {
    serde_json::json!({ "redacted": true })
}

/// A service as the API shows it.
pub fn to_json(config: &ServiceConfig, source: Source) -> Value {
    let mut value = serde_json::to_value(config).unwrap_or(Value::Null);
    if let Some(Value::Object(headers)) = value.get_mut("headers") {
        for v in headers.values_mut() {
            if v.is_string() {
                *v = redacted();
            }
        }
    }
    if let Value::Object(map) = &mut value {
        map.insert("source".into(), source.as_str().into());
    }
    value
}

/// The JSON of `config` with its secrets (the base of a merge patch).
fn to_json_unredacted(config: &ServiceConfig) -> Value {
    serde_json::to_value(config).unwrap_or(Value::Null)
}

/// Parses a service from JSON: `source` is ignored, header values `{"redacted": true}` take the
/// value of the same header of `current`, and every other key must be one of a `[[services]]`
/// table's, with its type.
pub fn parse(
    mut value: Value,
    current: Option<&ServiceConfig>,
) -> Result<ServiceConfig, AdminError> {
    let Value::Object(map) = &mut value else {
        return Err(AdminError::new(
            Code::BadRequest,
            "Expected a JSON object with the keys of a [[services]] table.",
        ));
    };
    map.remove("source");
    keep_redacted(map, current)?;
    serde_path_to_error::deserialize::<_, ServiceConfig>(value).map_err(|e| {
        let inner = e.inner().to_string();
        let path = e.path().to_string();
        // The path of a missing key is its parent's (an unknown key's is its own).
        let named = between_backticks(&inner).filter(|_| inner.starts_with("missing field"));
        let field = match (named, path.as_str()) {
            (Some(name), ".") => name.to_owned(),
            (Some(name), parent) => format!("{parent}.{name}"),
            (None, path) => path.to_owned(),
        };
        let message = inner.split(", expected one of").next().unwrap_or(&inner);
        AdminError::field(field, format!("{message}."))
    })
}

fn between_backticks(s: &str) -> Option<&str> {
    let start = s.find('`')? + 1;
    let len = s[start..].find('`')?;
    Some(&s[start..start + len])
}

fn keep_redacted(
    map: &mut Map<String, Value>,
    current: Option<&ServiceConfig>,
) -> Result<(), AdminError> {
    let Some(Value::Object(headers)) = map.get_mut("headers") else {
        return Ok(());
    };
    for (name, v) in headers.iter_mut() {
        if *v != redacted() {
            continue;
        }
        let kept = current
            .and_then(|c| c.headers.get(name))
            .and_then(|s| serde_json::to_value(s).ok())
            .ok_or_else(|| {
                AdminError::field(
                    format!("headers.{name}"),
                    "A redacted value can only keep the value in force; give the secret, or { env } or { file }.",
                )
            })?;
        *v = kept;
    }
    Ok(())
}

/// RFC 7386 JSON merge patch: `patch` applied to `target`.
pub fn merge_patch(target: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { return };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(&key);
        } else {
            merge_patch(map.entry(key).or_insert(Value::Null), value);
        }
    }
}

/// A gateway validation error as the API names it: `services[3].routes[0].path` → `routes[0].path`.
fn change_error(e: ChangeError) -> AdminError {
    match e {
        ChangeError::Invalid(ConfigError::Invalid { key, message }) => {
            let field = match key.strip_prefix("services[") {
                Some(rest) => rest.split_once("].").map_or(rest, |(_, k)| k).to_owned(),
                None => key,
            };
            AdminError::field(field, format!("{message}."))
        }
        ChangeError::Invalid(other) => AdminError::new(Code::BadRequest, other.to_string()),
        ChangeError::Store(e) => AdminError::store(&e),
        ChangeError::NoStore => AdminError::store(&"no admin store"),
    }
}

fn not_found(name: &str) -> AdminError {
    AdminError::new(Code::NotFound, format!("No service named {name:?}."))
}

fn forbidden(name: &str) -> AdminError {
    AdminError::new(
        Code::Forbidden,
        format!("The service {name:?} is not this provider's: nothing was changed."),
    )
}

/// The service `name` in force, if the caller may see it: `404` when there is none, `403`
/// when it is not the calling provider's.
fn owned(api: &Api, caller: &Caller, name: &str) -> Result<(ServiceConfig, Source), AdminError> {
    let (config, source) = api.control.service(name).ok_or_else(|| not_found(name))?;
    match caller.provider() {
        Some(slug) if config.provider.as_deref() != Some(slug) => Err(forbidden(name)),
        _ => Ok((config, source)),
    }
}

/// A provider's token writes its own services only: `provider` left out is its slug, any
/// other is `403`.
fn claim(caller: &Caller, config: &mut ServiceConfig) -> Result<(), AdminError> {
    let Some(slug) = caller.provider() else {
        return Ok(());
    };
    match config.provider.as_deref() {
        None => config.provider = Some(slug.to_owned()),
        Some(p) if p == slug => {}
        Some(_) => return Err(forbidden(&config.name)),
    }
    Ok(())
}

/// A hub provider's service names an active provider, and its upstream resolves to public
/// addresses (unless the hub allows private ones, for tests): the hub must not become a way
/// into its own network.
async fn check_upstream(api: &Api, config: &ServiceConfig) -> Result<(), AdminError> {
    let Some(slug) = &config.provider else {
        return Ok(());
    };
    let hub = api.control.hub().ok_or_else(|| {
        AdminError::field("provider", "This gateway is not a hub (no [hub] section).")
    })?;
    if !hub.provider(slug).is_some_and(|p| p.is_active()) {
        return Err(AdminError::field(
            "provider",
            format!("No active provider {slug:?}."),
        ));
    }
    if hub.settings.allow_private_upstreams {
        return Ok(());
    }
    let url = reqwest::Url::parse(&config.upstream)
        .map_err(|_| AdminError::field("upstream", "Not a URL."))?;
    turnpike_lightning::net_guard::check_public_url(&url, true)
        .await
        .map_err(|m| AdminError::field("upstream", format!("Refused: {m}.")))
}

/// The JSON body, or `bad_request`.
fn body(bytes: &[u8]) -> Result<Value, AdminError> {
    serde_json::from_slice(bytes).map_err(|e| {
        AdminError::new(
            Code::BadRequest,
            format!("The body is not valid JSON: {e}."),
        )
    })
}

/// `GET /api/v1/services`.
pub async fn list(State(api): State<Api>, axum::Extension(caller): Who) -> Response {
    let services: Vec<Value> = api
        .control
        .services()
        .iter()
        .filter(|(c, _)| {
            caller
                .provider()
                .is_none_or(|p| c.provider.as_deref() == Some(p))
        })
        .map(|(c, s)| to_json(c, *s))
        .collect();
    Json(serde_json::json!({ "services": services })).into_response()
}

/// `GET /api/v1/services/{name}`.
pub async fn get(
    State(api): State<Api>,
    axum::Extension(caller): Who,
    Path(name): Path<String>,
) -> Result<Response, AdminError> {
    let (config, source) = owned(&api, &caller, &name)?;
    Ok(Json(to_json(&config, source)).into_response())
}

/// A provider never takes a name (of a service or a route: `<service>.<route>`) under which
/// statistics are kept for a service in force that is not its own, or were kept before (by
/// another provider, the operator or itself): the counts are kept per name, and its
/// statistics must hold its own traffic only.
async fn check_fresh_names(
    api: &Api,
    caller: &Caller,
    config: &ServiceConfig,
) -> Result<(), AdminError> {
    let Some(slug) = caller.provider() else {
        return Ok(());
    };
    let own = crate::stats::own_stat_names(api, slug);
    let others = crate::stats::others_stat_names(api, slug);
    for name in crate::stats::stat_names(config) {
        if others.contains(&name)
            || (!own.contains(&name) && crate::stats::has_history(api, &name).await?)
        {
            let field = if name == config.name {
                "name"
            } else {
                "routes"
            };
            return Err(AdminError::new(
                Code::Conflict,
                format!(
                    "The name {name:?} is or was in use on this hub; choose another ({field})."
                ),
            ));
        }
    }
    Ok(())
}

/// Stores `config` and answers it as now in force.
async fn store(
    api: &Api,
    caller: &Caller,
    config: ServiceConfig,
    status: StatusCode,
) -> Result<Response, AdminError> {
    check_upstream(api, &config).await?;
    check_fresh_names(api, caller, &config).await?;
    let name = config.name.clone();
    api.control
        .put_service(&name, Some(config))
        .await
        .map_err(change_error)?;
    let (config, source) = api.control.service(&name).ok_or_else(|| not_found(&name))?;
    Ok((status, Json(to_json(&config, source))).into_response())
}

/// `POST /api/v1/services`: 201, or 409 when the name is in force.
pub async fn create(
    State(api): State<Api>,
    axum::Extension(caller): Who,
    bytes: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let mut config = parse(body(&bytes)?, None)?;
    claim(&caller, &mut config)?;
    if api.control.service(&config.name).is_some() {
        return Err(AdminError::new(
            Code::Conflict,
            format!(
                "A service named {:?} exists: change it with PUT or PATCH.",
                config.name
            ),
        ));
    }
    store(&api, &caller, config, StatusCode::CREATED).await
}

/// `PUT /api/v1/services/{name}`: replaces the service (the name in the body, if any, must match).
pub async fn replace(
    State(api): State<Api>,
    axum::Extension(caller): Who,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let (current, _) = owned(&api, &caller, &name)?;
    let mut value = body(&bytes)?;
    if let Value::Object(map) = &mut value {
        match map.get("name") {
            None => {
                map.insert("name".into(), name.clone().into());
            }
            Some(v) if v.as_str() == Some(name.as_str()) => {}
            Some(_) => {
                return Err(AdminError::field(
                    "name",
                    "The name in the body must be the one in the path.",
                ));
            }
        }
    }
    let mut config = parse(value, Some(&current))?;
    claim(&caller, &mut config)?;
    store(&api, &caller, config, StatusCode::OK).await
}

/// `PATCH /api/v1/services/{name}`: a JSON merge patch (RFC 7386) of the service.
pub async fn patch(
    State(api): State<Api>,
    axum::Extension(caller): Who,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let (current, _) = owned(&api, &caller, &name)?;
    let patch = body(&bytes)?;
    if !patch.is_object() {
        return Err(AdminError::new(
            Code::BadRequest,
            "A merge patch of a service is a JSON object.",
        ));
    }
    let mut value = to_json_unredacted(&current);
    merge_patch(&mut value, patch);
    if value.get("name").and_then(Value::as_str) != Some(name.as_str()) {
        return Err(AdminError::field(
            "name",
            "A service cannot be renamed: add it under the new name and delete this one.",
        ));
    }
    let mut config = parse(value, Some(&current))?;
    claim(&caller, &mut config)?;
    store(&api, &caller, config, StatusCode::OK).await
}

/// `DELETE /api/v1/services/{name}`: 204 (a config-file service is hidden by a tombstone).
pub async fn delete(
    State(api): State<Api>,
    axum::Extension(caller): Who,
    Path(name): Path<String>,
) -> Result<Response, AdminError> {
    owned(&api, &caller, &name)?;
    api.control
        .put_service(&name, None)
        .await
        .map_err(change_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_at_fault_are_named() {
        let base = serde_json::json!({ "name": "a", "upstream": "http://x", "price_sats": 1 });
        let field = |extra: Value| {
            let mut v = base.clone();
            merge_patch(&mut v, extra);
            parse(v, None).unwrap_err().field.unwrap()
        };
        assert_eq!(
            field(serde_json::json!({ "price_sats": "x" })),
            "price_sats"
        );
        assert_eq!(field(serde_json::json!({ "bogus": 1 })), "bogus");
        assert_eq!(field(serde_json::json!({ "upstream": null })), "upstream");
        assert_eq!(
            field(serde_json::json!({ "free_tier": { "calls": 1 } })),
            "free_tier.window_secs"
        );
        assert_eq!(
            field(serde_json::json!({ "headers": { "X-Api-Key": 5 } })),
            "headers.X-Api-Key"
        );
        assert_eq!(
            field(serde_json::json!({ "headers": { "X-Api-Key": { "redacted": true } } })),
            "headers.X-Api-Key"
        );
    }

    #[test]
    fn inline_secrets_are_redacted_and_kept_when_sent_back() {
        let mut c = ServiceConfig::new("a", "http://x", 1);
        c.headers.insert(
            "X-Key".into(),
            turnpike_lightning::SecretSource::Inline("s3cret".into()),
        );
        c.headers.insert(
            "X-Env".into(),
            turnpike_lightning::SecretSource::Env { env: "K".into() },
        );
        let shown = to_json(&c, Source::Admin);
        assert!(!shown.to_string().contains("s3cret"));
        assert_eq!(shown["headers"]["X-Env"]["env"], "K");
        assert_eq!(shown["source"], "admin");
        let back = parse(shown, Some(&c)).unwrap();
        assert_eq!(back.headers, c.headers);
    }

    fn json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                proptest::collection::btree_map("[a-d]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn a_merge_patch_applied_twice_changes_nothing_more(target in json(), patch in json()) {
            let mut once = target;
            merge_patch(&mut once, patch.clone());
            let mut twice = once.clone();
            merge_patch(&mut twice, patch);
            proptest::prop_assert_eq!(once, twice);
        }

        #[test]
        fn any_json_is_a_service_or_an_error_naming_a_field(value in json()) {
            if let Err(e) = parse(value, None) {
                proptest::prop_assert!(e.field.is_some() || e.code == Code::BadRequest);
            }
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut v = serde_json::json!({ "a": "b", "c": { "d": "e", "f": "g" } });
        merge_patch(&mut v, serde_json::json!({ "a": "z", "c": { "f": null } }));
        assert_eq!(v, serde_json::json!({ "a": "z", "c": { "d": "e" } }));
    }

    #[test]
    fn gateway_keys_lose_their_service_index() {
        let e = change_error(ChangeError::Invalid(ConfigError::Invalid {
            key: "services[3].routes[0].path".into(),
            message: "bad".into(),
        }));
        assert_eq!(e.field.as_deref(), Some("routes[0].path"));
    }
}
