//! The status page (`GET /` on the admin listener): what `/tenants`, `/readyz` and the reload
//! state say, as one HTML page a person reads in a browser, with no Prometheus or Grafana in
//! between (one `kubectl port-forward` away, like HAProxy's stats page or Envoy's admin page).
//!
//! The page is rendered on the server from the same [`view`](super::view) as the JSON endpoints,
//! so it shows exactly their facts and never a token or secret. It needs no framework, no script
//! and no outside asset: the style is inline and a `<meta>` refresh reloads it every
//! [`REFRESH_SECS`]. Every value from the configuration or from outside (tenant names, error
//! messages that may quote an upstream) goes through [`escape`]; the answer's headers forbid
//! scripts, framing and content sniffing, so even a missed escape could not run anything.

use std::fmt::Write as _;
use std::time::Duration;

use crate::config::CallerClass;
use crate::reload::ReloadRecord;

use super::view::{LimiterView, Readiness, StoreView, TenantView};

/// How often the page reloads itself: quick enough to watch a renewal or a queue drain, slow
/// enough that an open tab costs nothing (each render reads atomics and a few short locks).
pub(super) const REFRESH_SECS: u64 = 5;

/// The headers of the page besides its content type: no caching, no sniffing, no framing, and
/// a policy that allows nothing but the inline style.
pub(super) const HEADERS: [(&str, &str); 4] = [
    ("x-content-type-options", "nosniff"),
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
];

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2330;background:#fafbfc}\
h1{font-size:1.4em;margin:0}h2{font-size:1.1em;margin:1.4em 0 .4em}\
.meta{color:#5a6372;margin:.2em 0 1em}\
table{border-collapse:collapse;width:100%;background:#fff}\
th,td{border:1px solid #d8dde4;padding:.35em .6em;text-align:left;vertical-align:top}\
th{background:#eef1f5;font-weight:600}\
.ok{color:#116329;font-weight:600}.warn{color:#8a5a00;font-weight:600}.bad{color:#b3261e;font-weight:600}\
.muted{color:#6b7380}.err{font-family:ui-monospace,monospace;font-size:.9em;word-break:break-word}\
p.line{margin:.3em 0}.nw{white-space:nowrap}";

/// Everything the page shows, gathered by the handler from one snapshot.
#[derive(Debug)]
pub(super) struct Page<'a> {
    pub(super) tenants: &'a [TenantView],
    pub(super) store: StoreView,
    pub(super) reloads: &'a ReloadRecord,
    pub(super) ready: bool,
    pub(super) shutting_down: bool,
    pub(super) version: &'a str,
    pub(super) revision: &'a str,
    /// Wall-clock now, Unix seconds: what times are shown against.
    pub(super) now_unix: u64,
}

/// The page as HTML.
pub(super) fn render(page: &Page<'_>) -> String {
    let mut html = String::with_capacity(4096 + 1024 * page.tenants.len());
    head(&mut html, page);
    tenants(&mut html, page);
    store(&mut html, page.store, page.now_unix);
    reloads(&mut html, page.reloads, page.now_unix);
    html.push_str("</body>\n</html>\n");
    html
}

fn head(html: &mut String, page: &Page<'_>) {
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>tokenbroker status</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>tokenbroker</h1>\n<p class=\"meta\">Version {} (revision {}) · {} · refreshes every {REFRESH_SECS} s</p>\n",
        escape(page.version),
        escape(page.revision),
        timestamp(page.now_unix),
    );
    let overall = match (page.shutting_down, page.ready) {
        (true, _) => "<span class=\"bad\">Shutting down</span>: /readyz answers 503",
        (false, true) => "<span class=\"ok\">Ready</span>: every required tenant holds a valid token",
        (false, false) => "<span class=\"bad\">Not ready</span>: a required tenant has no valid token",
    };
    let _ = writeln!(html, "<p class=\"line\" id=\"readiness\">{overall}</p>");
}

fn tenants(html: &mut String, page: &Page<'_>) {
    let _ = writeln!(html, "<h2>Tenants ({})</h2>", page.tenants.len());
    if page.tenants.is_empty() {
        html.push_str("<p class=\"line muted\">No tenant is configured.</p>\n");
        return;
    }
    html.push_str(
        "<table id=\"tenants\">\n<thead><tr><th>Tenant</th><th>Readiness</th><th>Token</th><th>Expires in</th>\
         <th>Origin</th><th>Last renewal</th><th>Last error</th><th>Limiter</th><th>Queue by class</th></tr></thead>\n<tbody>\n",
    );
    for tenant in page.tenants {
        tenant_row(html, tenant, page.now_unix);
    }
    html.push_str("</tbody>\n</table>\n");
}

fn tenant_row(html: &mut String, tenant: &TenantView, now_unix: u64) {
    let stats = &tenant.stats;
    let renewal = stats.last_renewal.and_then(super::view::unix_secs);
    let _ = writeln!(
        html,
        "<tr><td class=\"nw\"><strong>{}</strong><br><span class=\"muted\">{}</span></td><td>{}</td><td>{}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(&tenant.name),
        escape(tenant.provider),
        readiness(tenant),
        token_state(tenant),
        expires_in(tenant),
        origin(tenant),
        renewal.map_or_else(|| muted("never"), |at| format!("{} ({})", when(at), ago(at, now_unix))),
        stats.last_error.as_deref().map_or_else(
            || muted("none"),
            |e| format!("<span class=\"err\">{}</span>", escape(e))
        ),
        tenant.limiter.as_ref().map_or_else(|| muted("none"), limiter_mode),
        tenant.limiter.as_ref().map_or_else(|| muted("—"), queue),
    );
}

fn readiness(tenant: &TenantView) -> String {
    let required = if tenant.required { "required" } else { "optional" };
    let state = match &tenant.readiness {
        Readiness::Ready => "<span class=\"ok\">ready</span>".to_owned(),
        Readiness::Expiring(why) => format!("<span class=\"warn\">expiring</span>: {}", escape(why)),
        Readiness::Failing(why) => format!("<span class=\"bad\">failing</span>: {}", escape(why)),
    };
    format!("{state}<br><span class=\"muted\">{required}</span>")
}

fn token_state(tenant: &TenantView) -> String {
    let class = match tenant.state {
        "valid" => "ok",
        "failed" => "bad",
        _ => "warn",
    };
    format!(
        "<span class=\"{class}\">{}</span><br><span class=\"muted\">generation {}</span>",
        tenant.state, tenant.stats.generation
    )
}

fn expires_in(tenant: &TenantView) -> String {
    match (tenant.state, tenant.expires_in) {
        (_, Some(left)) => span(left),
        ("valid", None) => muted("does not expire"),
        _ => muted("no token"),
    }
}

fn origin(tenant: &TenantView) -> String {
    if !tenant.renews {
        return "configured (static)".to_owned();
    }
    match tenant.stats.origin {
        Some(crate::token::Origin::Fetched) => "fetched here".to_owned(),
        Some(crate::token::Origin::Adopted) => "adopted from the store".to_owned(),
        None => muted("—"),
    }
}

/// `shared`, `fallback (rate ÷ 3)` or `local`, with the rate and any upstream pause.
fn limiter_mode(view: &LimiterView) -> String {
    let limiter = &view.state;
    let mut text = escape(limiter.mode);
    if let Some(replicas) = limiter.divided_by {
        let _ = write!(text, " (rate ÷ {replicas})");
    }
    let _ = write!(
        text,
        "<br><span class=\"muted\">{}/s, burst {}</span>",
        limiter.per_second, limiter.burst
    );
    if let Some(pause) = limiter.paused_for {
        let _ = write!(text, "<br><span class=\"warn\">paused {}</span>", span(pause));
    }
    text
}

fn queue(view: &LimiterView) -> String {
    let limiter = &view.state;
    let parts: Vec<String> = CallerClass::ALL
        .into_iter()
        .map(|class| {
            let waiting = limiter.waiting_by_class.get(class);
            format!("<span class=\"nw\">{} {waiting}</span>", class.as_str())
        })
        .collect();
    format!(
        "{}<br><span class=\"muted\">rejected {}</span>",
        parts.join(" · "),
        view.rejected_total
    )
}

fn store(html: &mut String, store: StoreView, now_unix: u64) {
    html.push_str("<h2>Token store</h2>\n");
    let line = match store {
        StoreView::Memory => "Store: memory (this process only)".to_owned(),
        StoreView::Redis { up: true, since_unix } => format!(
            "Store: redis, <span class=\"ok\">up</span> since {} ({})",
            timestamp(since_unix),
            ago(since_unix, now_unix)
        ),
        StoreView::Redis { up: false, since_unix } => format!(
            "Store: redis, <span class=\"bad\">unreachable</span> since {} ({}): serving with the tokens held, limits local",
            timestamp(since_unix),
            ago(since_unix, now_unix)
        ),
    };
    let _ = writeln!(html, "<p class=\"line\" id=\"store\">{line}</p>");
}

fn reloads(html: &mut String, record: &ReloadRecord, now_unix: u64) {
    html.push_str("<h2>Configuration</h2>\n");
    let loaded = record.loaded_unix_ms / 1000;
    let _ = writeln!(
        html,
        "<p class=\"line\" id=\"loaded\">Loaded {} ({}); reloads: {} succeeded, {} rejected</p>",
        timestamp(loaded),
        ago(loaded, now_unix),
        record.succeeded,
        record.failed
    );
    let last = match &record.last {
        None => muted("No reload since the start."),
        Some(last) => {
            let at = last.at_unix_ms / 1000;
            let when = format!("{} ({})", timestamp(at), ago(at, now_unix));
            match &last.error {
                None => format!("Last reload {when}: <span class=\"ok\">succeeded</span>"),
                Some(error) => format!(
                    "Last reload {when}: <span class=\"bad\">rejected</span>, the previous configuration keeps serving\
                     <br><span class=\"err\">{}</span>",
                    escape(error).replace('\n', "<br>")
                ),
            }
        }
    };
    let _ = writeln!(html, "<p class=\"line\" id=\"reload\">{last}</p>");
}

fn muted(text: &str) -> String {
    format!("<span class=\"muted\">{text}</span>")
}

/// `text` made safe inside HTML text and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A span as a person reads it, to the second below an hour: `2d 3h`, `23h 59m`, `4m 05s`, `12s`.
pub(super) fn span(span: Duration) -> String {
    let secs = span.as_secs();
    let (days, hours, minutes, seconds) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match secs {
        86_400.. => format!("{days}d {hours}h"),
        3600.. => format!("{hours}h {minutes:02}m"),
        60.. => format!("{minutes}m {seconds:02}s"),
        _ => format!("{seconds}s"),
    }
}

/// Unix seconds as `2026-12-07 15:50:40 UTC`, kept on one line.
fn when(unix: u64) -> String {
    format!("<span class=\"nw\">{}</span>", timestamp(unix))
}

/// Unix seconds as `2026-12-07 15:50:40 UTC`.
pub(super) fn timestamp(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|secs| jiff::Timestamp::from_second(secs).ok())
        .map_or_else(
            || format!("{unix} (Unix seconds)"),
            |at| at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

/// How long before `now` a time was: `3m 10s ago`, or `just now` (also for a time ahead of the
/// clock, as a peer's may be).
pub(super) fn ago(unix: u64, now: u64) -> String {
    match now.checked_sub(unix) {
        Some(secs @ 1..) => format!("{} ago", span(Duration::from_secs(secs))),
        _ => "just now".to_owned(),
    }
}

#[cfg(test)]
mod tests;
