//! The status page on the admin listener (README, "Status page"): what it shows over a real
//! socket, with its headers and never a token or secret; a rejected reload on the real binary,
//! its error escaped; and the live demo's page in a real headless Chromium, as a person sees it.

use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::Full;
use tokenbroker::sandbox::{self, ImsOptions, ImsSandbox};

use crate::demo::start_demo;
use crate::support::tenants::{SERVER, ims_tenant, static_tenant};
use crate::support::upstream::Upstream;
use crate::support::{Answer, Binary, Proxy, assert_no_secret_in, chromium, env, eventually, get, send, unused_addr};

const STATIC_VALUE: &str = "Bearer status-page-static-credential";
/// A time to expiry as the page writes it: `2d 3h`, `23h 59m`, `4m 05s` or `12s`.
const SPAN: &str = r"(\d+d \d+h|\d+h \d\dm|\d+m \d\ds|\d+s)";

/// `ims` (a valid token), `plain` (static, rate-limited) and `broken` (an optional IMS tenant
/// whose token endpoint is a closed port).
fn three_tenants(ims: &ImsSandbox, upstream: &Upstream) -> String {
    let closed = unused_addr();
    let broken = ims_tenant("broken", ims, "required = false")
        .replace(&ims.token_url(), &format!("http://{closed}/ims/token/v3"));
    let limited = r#"rate_limit = { per_second = 3, burst = 7, max_wait = "2s" }"#;
    format!(
        "{SERVER}{}{}{broken}",
        ims_tenant("ims", ims, ""),
        static_tenant("plain", &upstream.url(), limited)
    )
}

/// The page's text as a person reads it: tags dropped, entities decoded, spaces collapsed.
fn visible_text(html: &str) -> String {
    let body = html.split_once("<body").map_or(html, |(_, body)| body);
    // Line and cell ends separate words; inline tags (a bold name, a coloured state) do not.
    let breaks = regex::Regex::new(r"<(br|/td|/th|/p|/h\d|/tr)\b[^>]*>").expect("a valid pattern");
    let tags = regex::Regex::new(r"<[^>]*>").expect("a valid pattern");
    let text = breaks.replace_all(body, " ");
    let text = tags.replace_all(&text, "");
    let text = (text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\""))
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn assert_safe_headers(answer: &Answer) {
    let header = |name: &str| answer.headers[name].to_str().expect("a text header").to_owned();
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("x-frame-options"), "DENY");
    assert!(header("content-security-policy").starts_with("default-src 'none'; style-src 'unsafe-inline'"));
}

async fn page_of(url: &str) -> Answer {
    let answer = get(url).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    answer
}

#[tokio::test]
async fn the_page_shows_each_tenant_the_store_and_the_version_but_never_a_token_or_secret() {
    let ims = ImsSandbox::start(ImsOptions::default()).await.expect("fake IMS");
    let upstream = Upstream::start().await;
    let secrets = env(&[
        ("IMS_SECRET", sandbox::IMS_CLIENT_SECRET),
        ("STATIC_VALUE", STATIC_VALUE),
    ]);
    let proxy = Proxy::start_with_env(&three_tenants(&ims, &upstream), &secrets).await;
    assert_eq!(get(&proxy.url("/plain/x")).await.status, StatusCode::OK);
    let settled = eventually(Duration::from_secs(5), || async {
        let text = visible_text(&get(&proxy.admin_url("/")).await.text());
        text.contains("ims adobe_ims ready") && text.contains("broken adobe_ims failing")
    })
    .await;
    assert!(settled, "ims holds a token and broken has failed");

    let answer = page_of(&proxy.admin_url("/")).await;
    assert_safe_headers(&answer);
    let html = answer.text();
    for outside in ["<script", "<link", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(outside), "no script and no outside asset ({outside})");
    }
    assert!(html.contains(r#"<meta http-equiv="refresh" content="5">"#));
    let text = visible_text(&html);
    let row = |pattern: &str| regex::Regex::new(pattern).expect("a valid pattern").is_match(&text);
    assert!(
        row(&format!(
            r"ims adobe_ims ready required valid generation 1 (23h 59m|1d 0h) fetched here \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(({SPAN} ago|just now)\) none none —"
        )),
        "{text}"
    );
    assert!(
        row(r"broken adobe_ims failing: no valid token: [^ ].* optional failed generation 0 no token — never \S"),
        "{text}"
    );
    assert!(
        row(
            r"plain static ready required valid generation 1 does not expire configured \(static\) .* local 3/s, burst 7 interactive 0 · standard 0 · batch 0 rejected 0"
        ),
        "{text}"
    );
    assert!(text.find(" broken ") < text.find(" ims ") && text.find(" ims ") < text.find(" plain "));
    assert!(
        text.contains("Ready: every required tenant holds a valid token"),
        "broken is optional"
    );
    assert!(text.contains("Store: memory (this process only)"));
    assert!(text.contains(&format!("Version {} (revision ", env!("CARGO_PKG_VERSION"))));
    assert!(text.contains("No reload since the start."));

    let mut leaks = vec![sandbox::IMS_CLIENT_SECRET.to_owned(), STATIC_VALUE.to_owned()];
    leaks.extend(ims.issued_tokens());
    assert_eq!(ims.issued_tokens().len(), 1);
    assert_no_secret_in("the status page", &html, &leaks);
    proxy.stop().await;
}

#[tokio::test]
async fn head_answers_like_get_without_a_body_and_other_methods_are_refused() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start_with_env(
        &format!("{SERVER}{}", static_tenant("acme", &upstream.url(), "")),
        &env(&[("STATIC_VALUE", STATIC_VALUE)]),
    )
    .await;
    let head = Request::head(proxy.admin_url("/"))
        .body(Full::default())
        .expect("a request");
    let head = send(head).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_safe_headers(&head);
    assert!(head.body.is_empty(), "HEAD has no body");
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let request = Request::builder()
            .method(method.clone())
            .uri(proxy.admin_url("/"))
            .body(Full::default())
            .expect("a request");
        assert_eq!(send(request).await.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    assert_eq!(upstream.started(), 0, "the page never proxies");
    proxy.stop().await;
}

#[tokio::test]
async fn a_rejected_reload_shows_with_its_error_escaped_on_the_real_binary() {
    let toml = format!(
        "{SERVER}{}",
        static_tenant("acme", &format!("http://{}", unused_addr()), "")
    );
    let binary = Binary::start(&toml, &[("STATIC_VALUE", STATIC_VALUE)]);
    let before = visible_text(&page_of(&binary.admin_url("/")).await.text());
    assert!(before.contains("No reload since the start."), "{before}");

    let hostile = toml.replace("name = \"acme\"", "name = \"<img src=x onerror=alert(1)>\"");
    binary.replace_config(&hostile);
    binary.signal("HUP");
    let rejected = eventually(Duration::from_secs(10), || async {
        get(&binary.admin_url("/")).await.text().contains("rejected</span>")
    })
    .await;
    assert!(rejected, "the page shows the rejected reload:\n{}", binary.logs());

    let html = page_of(&binary.admin_url("/")).await.text();
    assert!(
        !html.contains("<img"),
        "the error's quote of the file is escaped:\n{html}"
    );
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"), "{html}");
    let text = visible_text(&html);
    assert!(text.contains("reloads: 0 succeeded, 1 rejected"), "{text}");
    assert!(text.contains("the previous configuration keeps serving"));
    assert!(
        text.contains("acme static ready"),
        "the old configuration still serves: {text}"
    );
    assert_no_secret_in("the status page", &html, &[STATIC_VALUE.to_owned()]);
}

#[tokio::test]
async fn a_headless_browser_shows_every_demo_tenant_its_expiry_the_store_and_the_version() {
    let (demo, printed) = start_demo().await;
    let url = printed
        .status_page
        .clone()
        .expect("the demo prints the status page's URL");
    assert!(url.starts_with("http://127.0.0.1:"), "loopback only: {url}");
    let ready = printed.readyz.clone().expect("a readiness command");
    let all_ready = eventually(Duration::from_secs(20), || async {
        get(&ready).await.status == StatusCode::OK
    })
    .await;
    assert!(all_ready, "the demo's tenants hold their tokens");

    let shot = tempfile::tempdir().expect("a temp dir");
    let (dom, png) = tokio::task::spawn_blocking({
        let (url, path) = (url.clone(), shot.path().join("status.png"));
        move || {
            chromium::screenshot(&url, &path, (1200, 900));
            (chromium::dump_dom(&url), std::fs::read(&path).expect("the screenshot"))
        }
    })
    .await
    .expect("the browser task");

    let text = visible_text(&dom);
    for (tenant, provider) in [
        ("demo-adobe", "adobe_ims"),
        ("demo-cyberbiz", "cyberbiz"),
        ("demo-shopline", "shopline"),
        ("demo-vantage", "vantage"),
    ] {
        let pattern = format!(r"{tenant} {provider} (ready|expiring)[^·]*? valid generation \d+ {SPAN} ");
        let shown = regex::Regex::new(&pattern).expect("a valid pattern").is_match(&text);
        assert!(shown, "{tenant}: its readiness, token and time to expiry in:\n{text}");
    }
    assert!(text.contains("Store: memory (this process only)"), "{text}");
    assert!(
        text.contains(&format!("Version {} (revision ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(
        text.contains("Ready: every required tenant holds a valid token"),
        "{text}"
    );
    assert_eq!(&png[1..4], b"PNG", "a PNG screenshot");
    let width = u32::from_be_bytes(png[16..20].try_into().expect("4 bytes"));
    assert_eq!(width, 1200, "rendered at the window's width");
    drop(demo);
}
