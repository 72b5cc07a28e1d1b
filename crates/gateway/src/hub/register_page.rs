//! The registration page's HTML, filled in for this hub: the domain a provider's services
//! answer at, and where the provider logs in with its token (`[hub] dashboard_url`, else a
//! word to ask the hub's operator). Everything filled in is HTML-escaped.

use super::HubSettings;

const TEMPLATE: &str = include_str!("../../assets/hub/register.html");
/// Replaced by the hub's domain.
const DOMAIN: &str = "{{domain}}";
/// Replaced by the link to the dashboard, or the words to ask for it.
const DASHBOARD: &str = "{{dashboard}}";

/// The page for the hub of `settings`.
pub fn render(settings: &HubSettings) -> String {
    let dashboard = match &settings.dashboard_url {
        Some(url) => format!(
            "<a id=\"dashboard\" href=\"{}\">the hub's dashboard</a>",
            escape(url)
        ),
        None => "the hub's dashboard (ask the hub's operator for its address)".to_owned(),
    };
    TEMPLATE
        .replace(DOMAIN, &escape(&settings.domain))
        .replace(DASHBOARD, &dashboard)
}

/// `text` as HTML text or a quoted attribute value.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HubConfig;

    fn settings(extra: &str) -> HubSettings {
        let text = format!("domain = \"Hub.Example.com\"\n{extra}");
        HubSettings::parse(&toml::from_str::<HubConfig>(&text).unwrap()).unwrap()
    }

    #[test]
    fn dashboard_url_must_be_an_absolute_http_url_without_credentials() {
        assert_eq!(settings("").dashboard_url, None);
        for bad in [
            "admin.hub.example.com",
            "/dashboard",
            "ftp://admin.hub.example.com/",
            "javascript:alert(1)",
            "https://user:pw@admin.hub.example.com/",
            "https://",
            "https://admin.hub.example.com/\"><script>",
        ] {
            let text = format!("domain = \"h.x\"\ndashboard_url = '{bad}'");
            match HubSettings::parse(&toml::from_str::<HubConfig>(&text).unwrap()) {
                Err(crate::config::ConfigError::Invalid { key, .. }) => {
                    assert_eq!(key, "hub.dashboard_url", "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        let good = settings("dashboard_url = \"https://admin.h.x:8443/\"");
        assert_eq!(
            good.dashboard_url.as_deref(),
            Some("https://admin.h.x:8443/")
        );
    }

    #[test]
    fn the_page_names_the_hubs_domain_and_links_the_dashboard() {
        let page = render(&settings(
            "dashboard_url = \"https://admin.hub.example.com/\"",
        ));
        assert!(page.contains("<span id=\"domain\">hub.example.com</span>"));
        assert!(page.contains("href=\"https://admin.hub.example.com/\""));
        assert!(!page.contains("{{"), "every marker is filled in");
    }

    #[test]
    fn without_a_dashboard_url_the_page_says_to_ask_the_operator() {
        let page = render(&settings(""));
        assert!(page.contains("ask the hub's operator"));
        assert!(!page.contains("id=\"dashboard\""));
        assert!(!page.contains("{{"));
    }

    #[test]
    fn what_is_filled_in_cannot_break_out_of_its_attribute() {
        let mut s = settings("");
        s.dashboard_url = Some("https://h.x/\"><script>alert(1)</script>".into());
        let page = render(&s);
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("&quot;&gt;&lt;script&gt;"));
    }
}
