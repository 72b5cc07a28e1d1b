//! Providers' answers are confined: every answer a provider's upstream gives through the hub
//! carries `Content-Security-Policy: sandbox …` without `allow-same-origin`, so a page a
//! provider serves runs in an opaque origin. Under the path prefix it is on the hub's own origin,
//! with the hub's registration page (where payout secrets are typed and a new provider's admin
//! token is shown), the catalogue and every other provider's pages; on its host
//! `<slug>.<hub domain>` the hub's pages answer too. Unconfined, its script could open those
//! pages and read or rewrite them. The header is added, never replacing the upstream's own
//! policies (a browser enforces them all).

use http::{HeaderValue, Response, header};

use crate::service::Service;

/// The policy: scripts, forms, pop-ups (sandboxed too), dialogs and downloads work; the
/// document's origin is opaque (no `allow-same-origin`) and it cannot navigate its top window.
pub const POLICY: &str =
    "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";

/// `resp` from `service`'s upstream, confined when `service` is a provider's.
#[inline]
pub fn confine<B>(service: &Service, mut resp: Response<B>) -> Response<B> {
    if service.payee.is_some() {
        resp.headers_mut().append(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_never_gives_the_hubs_origin_back() {
        assert!(POLICY.starts_with("sandbox "));
        for escape in [
            "allow-same-origin",
            "allow-top-navigation",
            "allow-popups-to-escape-sandbox",
        ] {
            assert!(!POLICY.contains(escape), "{escape}");
        }
    }
}
