//! The status page's rendering from hand-made views: what a person reads, escaping of everything
//! that comes from configuration or from outside, time formatting, and the empty cases.

use std::time::Duration;

use super::*;
use crate::config::PerClass;
use crate::ratelimit::LimiterState;
use crate::reload::LastReload;
use crate::token::{Origin, TokenStats};

/// 2026-12-07 15:50:40 UTC.
const NOW: u64 = 1_796_658_640;

fn record() -> ReloadRecord {
    ReloadRecord {
        succeeded: 0,
        failed: 0,
        loaded_unix_ms: (NOW - 600) * 1000,
        last: None,
    }
}

fn tenant(name: &str) -> TenantView {
    TenantView {
        name: name.to_owned(),
        provider: "adobe_ims",
        upstream: "https://example.test".to_owned(),
        required: true,
        state: "valid",
        expires_in: Some(Duration::from_secs(3 * 3600 + 25 * 60)),
        renews: true,
        stats: TokenStats {
            generation: 4,
            origin: Some(Origin::Adopted),
            last_renewal: Some(crate::clock::from_unix_secs(NOW - 190)),
            ..TokenStats::default()
        },
        readiness: Readiness::Ready,
        limiter: None,
    }
}

fn limiter(mode: &'static str) -> LimiterView {
    let state = LimiterState {
        per_second: 3,
        burst: 7,
        max_wait: Duration::from_secs(2),
        waiting: 5,
        waiting_by_class: PerClass {
            interactive: 1,
            standard: 4,
            batch: 0,
        },
        paused_for: None,
        granted_total: 10,
        waited_total: Duration::ZERO,
        mode,
        divided_by: (mode == "fallback").then_some(3),
    };
    LimiterView {
        state,
        rejected_total: 2,
    }
}

fn render_with(tenants: &[TenantView], store: StoreView, reloads: &ReloadRecord) -> String {
    render(&Page {
        tenants,
        store,
        reloads,
        ready: true,
        shutting_down: false,
        version: "0.1.0",
        revision: "abc123",
        now_unix: NOW,
    })
}

#[test]
fn a_tenant_row_shows_expiry_origin_renewal_and_queue() {
    let mut limited = tenant("acme");
    limited.limiter = Some(limiter("fallback"));
    let html = render_with(&[limited, tenant("beta")], StoreView::Memory, &record());
    assert!(html.contains("<strong>acme</strong>") && html.contains("<strong>beta</strong>"));
    assert!(
        html.find("acme") < html.find("beta"),
        "in the order given (sorted by the view)"
    );
    assert!(html.contains("<td>3h 25m</td>"), "time to expiry");
    assert!(html.contains("adopted from the store"));
    assert!(
        html.contains("2026-12-07 15:47:30 UTC</span> (3m 10s ago)"),
        "last renewal"
    );
    assert!(html.contains("fallback (rate ÷ 3)"));
    let queue = ["interactive 1", "standard 4", "batch 0"].map(|q| format!("<span class=\"nw\">{q}</span>"));
    assert!(html.contains(&queue.join(" · ")), "{html}");
    assert!(html.contains("Version 0.1.0 (revision abc123)"));
    assert!(html.contains("Store: memory"));
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    assert!(html.contains("No reload since the start."));
}

#[test]
fn names_errors_and_reasons_are_escaped() {
    let mut hostile = tenant("<script>alert(1)</script>");
    hostile.state = "failed";
    hostile.expires_in = None;
    hostile.stats.last_error = Some("upstream said <b onmouseover=\"x\">'&'</b>".to_owned());
    hostile.readiness = Readiness::Failing("no valid token: <img src=x>".to_owned());
    let mut reloads = record();
    reloads.last = Some(LastReload {
        at_unix_ms: NOW * 1000,
        error: Some("error: tenant \"<x>\": bad\nerror: second".to_owned()),
    });
    let html = render_with(&[hostile], StoreView::Memory, &reloads);
    for raw in ["<script>", "<b onmouseover", "<img src=x>", "\"<x>\""] {
        assert!(!html.contains(raw), "{raw} escaped in:\n{html}");
    }
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("&lt;b onmouseover=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/b&gt;"));
    assert!(html.contains("&lt;img src=x&gt;"));
    assert!(html.contains("rejected</span>"), "{html}");
    assert!(html.contains("&quot;&lt;x&gt;&quot;: bad<br>error: second"));
    assert!(html.contains("<td><span class=\"muted\">no token</span></td>"));
}

#[test]
fn an_empty_configuration_renders_a_whole_page() {
    let html = render_with(&[], StoreView::Memory, &record());
    assert!(html.starts_with("<!doctype html>") && html.ends_with("</html>\n"));
    assert!(html.contains("No tenant is configured."));
    assert!(!html.contains("<table"), "no empty table");
    assert!(html.contains("Tenants (0)"));
}

#[test]
fn the_store_line_says_up_or_unreachable_and_since_when() {
    let up = render_with(
        &[],
        StoreView::Redis {
            up: true,
            since_unix: NOW - 5,
        },
        &record(),
    );
    assert!(up.contains("Store: redis, <span class=\"ok\">up</span> since 2026-12-07 15:50:35 UTC (5s ago)"));
    let down = render_with(
        &[],
        StoreView::Redis {
            up: false,
            since_unix: NOW,
        },
        &record(),
    );
    assert!(down.contains("unreachable</span> since 2026-12-07 15:50:40 UTC (just now)"));
}

#[test]
fn a_successful_reload_shows_its_time() {
    let mut reloads = record();
    reloads.succeeded = 2;
    reloads.last = Some(LastReload {
        at_unix_ms: (NOW - 61) * 1000,
        error: None,
    });
    let html = render_with(&[], StoreView::Memory, &reloads);
    assert!(html.contains("reloads: 2 succeeded, 0 rejected"));
    assert!(html.contains("Last reload 2026-12-07 15:49:39 UTC (1m 01s ago): <span class=\"ok\">succeeded"));
}

#[test]
fn static_and_never_expiring_tokens_say_so() {
    let mut fixed = tenant("cyberbiz");
    fixed.renews = false;
    fixed.expires_in = None;
    fixed.readiness = Readiness::Expiring("expires in 3600s: replace it".to_owned());
    let html = render_with(&[fixed], StoreView::Memory, &record());
    assert!(html.contains("configured (static)"));
    assert!(html.contains("does not expire"));
    assert!(html.contains("<span class=\"warn\">expiring</span>: expires in 3600s: replace it"));
}

#[test]
fn spans_read_as_a_person_would_say_them() {
    for (secs, text) in [
        (0, "0s"),
        (59, "59s"),
        (60, "1m 00s"),
        (245, "4m 05s"),
        (3600, "1h 00m"),
        (86_399, "23h 59m"),
        (86_400, "1d 0h"),
        (3 * 86_400 + 7200 + 59, "3d 2h"),
    ] {
        assert_eq!(span(Duration::from_secs(secs)), text, "{secs}");
    }
}

#[test]
fn times_are_utc_and_ago_never_goes_negative() {
    assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(timestamp(NOW), "2026-12-07 15:50:40 UTC");
    assert_eq!(timestamp(u64::MAX), format!("{} (Unix seconds)", u64::MAX));
    assert_eq!(ago(NOW - 3700, NOW), "1h 01m ago");
    assert_eq!(ago(NOW + 30, NOW), "just now", "a peer's clock ahead of ours");
}

#[test]
fn escape_covers_the_five_html_specials_and_keeps_the_rest() {
    assert_eq!(
        escape(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
    assert_eq!(escape("tenant-é_1 ÷"), "tenant-é_1 ÷");
}
