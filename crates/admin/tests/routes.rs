//! The admin router against its OpenAPI document: every documented path and method is routed
//! (but the two wired at merge), every other method of a documented path is 405, and every
//! route but the public ones refuses a missing or wrong token with 401, changing nothing.

use std::sync::Arc;

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use turnpike_gateway::config::{BackendConfig, DevBackendConfig, GatewayConfig, ServiceConfig};
use turnpike_gateway::{Gateway, GatewayParts};
use turnpike_l402::root_key::MasterKey;
use turnpike_lightning::dev::DevBackend;

/// Documented, served by the metrics branch once merged.
const PUBLIC: [&str; 5] = [
    "/",
    "/assets/app.js",
    "/assets/dom.js",
    "/assets/style.css",
    "/api/v1/openapi.json",
];
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn app(dir: &std::path::Path) -> axum::Router {
    let url = format!("sqlite://{}", dir.join("t.db").display());
    let (store, admin) = turnpike_store::open_with_admin(&url).await.unwrap();
    let dev = Arc::new(DevBackend::new([7; 32]));
    let config = GatewayConfig {
        data_dir: dir.to_owned(),
        services: vec![ServiceConfig::new("x", "http://127.0.0.1:1", 1)],
        ..GatewayConfig::new(BackendConfig::Dev(DevBackendConfig::default()))
    };
    let gateway = Gateway::new(GatewayParts {
        config,
        master_key: MasterKey::from_bytes([1; 32]),
        store,
        backend: dev.clone(),
        dev: Some(dev),
        admin: Some(admin),
    })
    .unwrap();
    turnpike_admin::router(turnpike_admin::Api::new(&gateway, TOKEN))
}

fn documented() -> Vec<(String, String)> {
    let doc: serde_json::Value = serde_json::from_str(turnpike_admin::OPENAPI).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if METHODS.contains(&method.as_str()) {
                out.push((path.clone(), method.clone()));
            }
        }
    }
    out
}

fn concrete(path: &str) -> String {
    path.replace("{name}", "x")
        .replace("{token_id}", &"ab".repeat(32))
}

async fn send(
    app: &axum::Router,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder()
        .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
        .uri(concrete(path))
        .header("content-type", "application/json");
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let resp = app
        .clone()
        .oneshot(req.body(axum::body::Body::from("{}")).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn every_documented_route_is_routed_and_no_other_method_is() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let bearer = format!("Bearer {TOKEN}");
    let documented = documented();
    for (path, method) in &documented {
        let (status, body) = send(&app, method, path, Some(&bearer)).await;
        let unrouted = body["error"]["message"] == "No such admin route.";
        assert!(!unrouted, "{method} {path}: {status} {body}");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
    }
    for path in documented
        .iter()
        .map(|(p, _)| p)
        .collect::<std::collections::BTreeSet<_>>()
    {
        for method in METHODS {
            if documented.iter().any(|(p, m)| p == path && m == method) {
                continue;
            }
            let (status, body) = send(&app, method, path, Some(&bearer)).await;
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is routed but not documented: {body}"
            );
        }
    }
    let (status, body) = send(&app, "get", "/api/v1/nothing", Some(&bearer)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test]
async fn every_private_route_refuses_a_missing_or_wrong_token() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let wrong = [
        None,
        Some("Bearer nope".to_owned()),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("bearer {TOKEN}")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_owned()),
    ];
    for (path, method) in documented() {
        if PUBLIC.contains(&path.as_str()) {
            let (status, _) = send(&app, &method, &path, None).await;
            assert_eq!(status, StatusCode::OK, "{path} is public");
            continue;
        }
        for auth in &wrong {
            let (status, body) = send(&app, &method, &path, auth.as_deref()).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    // Nothing changed: the service is there, nothing revoked.
    let bearer = format!("Bearer {TOKEN}");
    let (status, body) = send(&app, "get", "/api/v1/services/x", Some(&bearer)).await;
    assert_eq!(
        (status, body["source"].as_str()),
        (StatusCode::OK, Some("config"))
    );
    let (_, body) = send(&app, "get", "/api/v1/services", Some(&bearer)).await;
    assert_eq!(body["services"].as_array().unwrap().len(), 1);
}
