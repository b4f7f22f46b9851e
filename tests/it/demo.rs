//! `tokenbroker demo` as a user runs it: the real binary as a child process, the commands it
//! prints pasted as they are, and the vendors' own documented calls sent through it with no token
//! code: Adobe's customer REST tutorial (README, "Try a vendor tutorial"), SHOPLINE's cursor
//! pagination by `link` header, and CYBERBIZ's documented shapes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use crate::support::{Answer, get, send};

/// `tokenbroker demo` as a child process, killed on drop (also when an assertion fails).
pub(crate) struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the demo printed: every `curl -sg` URL, the readiness URL, the tutorial's endpoint and the
/// status page.
#[derive(Debug, Default)]
pub(crate) struct Printed {
    urls: Vec<String>,
    pub(crate) readyz: Option<String>,
    rest_endpoint: Option<String>,
    /// The status page's URL (the admin listener's root).
    pub(crate) status_page: Option<String>,
    /// The "send a webhook" command, its continuation lines joined.
    webhook_curl: Option<String>,
}

impl Printed {
    /// The printed command whose URL contains `part`.
    fn url_with(&self, part: &str) -> &str {
        self.urls
            .iter()
            .find(|url| url.contains(part))
            .unwrap_or_else(|| panic!("a printed command for {part}: {self:?}"))
    }
}

/// Reads the demo's instructions up to their last line.
fn read_instructions(demo: &mut Demo) -> Printed {
    let stdout = demo.0.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.contains("Ctrl-C stops everything");
            let _ = tx.send(line);
            if done {
                return;
            }
        }
    });
    let mut printed = Printed::default();
    let mut continued: Option<String> = None;
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the demo prints its instructions");
        let line = line.trim();
        if let Some(command) = continued.as_mut() {
            command.push(' ');
            command.push_str(line.trim_end_matches('\\').trim_end());
            if !line.ends_with('\\') {
                printed.webhook_curl = continued.take();
            }
        } else if line.starts_with("curl -s -X POST ") {
            continued = Some(line.trim_end_matches('\\').trim_end().to_owned());
        } else if let Some(rest) = line.strip_prefix("curl -sg '") {
            printed.urls.push(rest.trim_end_matches('\'').to_owned());
        } else if let Some(rest) = line.strip_prefix("curl -s ") {
            printed.readyz.get_or_insert_with(|| rest.trim().to_owned());
        } else if line.starts_with("http://") && line.ends_with('/') {
            printed.status_page = Some(line.to_owned());
        } else if let Some(rest) = line.strip_prefix("REST_ENDPOINT=") {
            printed.rest_endpoint = Some(rest.trim_matches('"').to_owned());
        }
        if line.contains("Ctrl-C stops everything") {
            return printed;
        }
    }
}

/// Starts the demo and reads what it printed. Several demos may run at once: each binds its
/// ports before printing them, the second on ephemeral ones.
pub(crate) async fn start_demo() -> (Demo, Printed) {
    start_demo_with(&[]).await
}

/// [`start_demo`] with extra environment variables.
async fn start_demo_with(envs: &[(&str, &str)]) -> (Demo, Printed) {
    let child = Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
        .arg("demo")
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tokenbroker demo");
    // The reader blocks on the pipe, so it runs off the runtime.
    tokio::task::spawn_blocking(move || {
        let mut demo = Demo(child);
        let printed = read_instructions(&mut demo);
        (demo, printed)
    })
    .await
    .expect("reader task")
}

/// The printed webhook `curl` as the request it sends: its URL, every `-H` and the
/// `--data-binary` body, each single-quoted as printed.
fn webhook_request(command: &str, body_edit: impl FnOnce(&mut Vec<u8>)) -> Request<Full<Bytes>> {
    let quoted: Vec<&str> = command.split('\'').collect();
    let url = quoted[1];
    let mut request = Request::post(url);
    let mut body = None;
    for pair in quoted.windows(2) {
        match pair[0].trim_end() {
            flag if flag.ends_with("-H") => {
                let (name, value) = pair[1].split_once(": ").expect("a header line");
                request = request.header(name, value);
            }
            flag if flag.ends_with("--data-binary") => body = Some(pair[1].as_bytes().to_vec()),
            _ => {}
        }
    }
    let mut body = body.expect("a --data-binary body");
    body_edit(&mut body);
    request.body(Full::new(Bytes::from(body))).expect("valid request")
}

/// The printed "send a webhook" command succeeds as printed; the same delivery with one byte of
/// its body changed is refused, and only the signed one reached the echo target.
#[tokio::test]
async fn the_printed_webhook_is_verified_and_one_changed_byte_is_refused() {
    let (demo, printed) = start_demo().await;
    let command = printed.webhook_curl.clone().expect("a send-a-webhook command");
    let sent = send(webhook_request(&command, |_| {})).await;
    assert_eq!(sent.status, StatusCode::OK, "{command}: {}", sent.text());
    assert_eq!(sent.headers["tokenbroker-webhook-outcome"], "forwarded");
    let forged = send(webhook_request(&command, |body| body[7] ^= 1)).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED, "{}", forged.text());
    assert_eq!(forged.json()["type"], "urn:tokenbroker:error:webhook_signature_invalid");
    let tenants = printed
        .readyz
        .as_deref()
        .expect("the admin URL")
        .replace("/readyz", "/tenants");
    let outcomes = get(&tenants).await.json()["webhooks"][0]["outcomes"].clone();
    assert_eq!(
        (outcomes["forwarded"].as_u64(), outcomes["invalid_signature"].as_u64()),
        (Some(1), Some(1))
    );
    drop(demo);
}

async fn call(method: Method, url: &str, body: &str) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid request");
    send(request).await
}

#[tokio::test]
async fn the_demo_serves_every_provider_without_credentials() {
    let (demo, printed) = start_demo().await;
    assert_eq!(printed.urls.len(), 5, "one command per provider: {printed:?}");
    for url in &printed.urls {
        let answer = get(url).await;
        assert_eq!(answer.status, StatusCode::OK, "{url}: {}", answer.text());
        let body = answer.json();
        assert!(body.is_object() || body.is_array(), "{url}: {body}");
    }
    let readyz = printed.readyz.expect("a readiness command");
    assert_eq!(
        get(&readyz).await.status,
        StatusCode::OK,
        "ready once every token is held"
    );
    drop(demo);
}

/// One request through the demo, traced: the caller's span, the proxy's server span under it, and
/// the request's phases (the SHOPLINE tenant's rate-limit wait and its upstream exchange) under it.
#[tokio::test]
async fn a_request_through_the_demo_is_traced_phase_by_phase() {
    let receiver = crate::support::otlp::OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let envs = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let (demo, printed) = start_demo_with(&envs).await;
    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let request = Request::get(printed.url_with("demo-shopline"))
        .header("traceparent", format!("00-{caller_trace}-b7ad6b7169203331-01"))
        .body(Full::default())
        .expect("valid request");
    assert_eq!(send(request).await.status, StatusCode::OK);
    let spans = receiver
        .wait_for(Duration::from_secs(10), |spans| {
            spans.iter().any(|s| s.kind == 2 && s.trace_id == caller_trace)
        })
        .await;
    let server = (spans.iter())
        .find(|s| s.kind == 2 && s.trace_id == caller_trace)
        .expect("the server span");
    assert_eq!(server.parent_span_id, "b7ad6b7169203331");
    assert_eq!(server.service_name, "tokenbroker", "the default service name");
    let children: Vec<&str> = (spans.iter())
        .filter(|s| s.parent_span_id == server.span_id)
        .map(|s| s.name.as_str())
        .collect();
    for phase in ["rate_limit.wait", "upstream"] {
        assert!(children.contains(&phase), "{phase} under the server span: {spans:#?}");
    }
    drop(demo);
}

// === Adobe's customer REST tutorial ===

/// Step 2 of the tutorial's all-in-one script, as the README gives it.
const CREATE: &str = r#"{
    "customer": {
      "email": "john.doe@example.com",
      "firstname": "John",
      "lastname": "Doe",
      "store_id": 1,
      "website_id": 1
    },
    "password": "TempPa55word!"
  }"#;

/// Step 3, with the id step 2 returned.
fn update(id: u64) -> String {
    format!(
        r#"{{
    "customer": {{
      "id": {id},
      "email": "john.doe@example.com",
      "firstname": "john",
      "lastname": "Doe-Updated"
    }}
  }}"#
    )
}

/// Unix seconds of a Commerce date-time (`2026-01-23 20:40:15`, UTC).
fn unix_secs(text: &Value) -> i64 {
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("a date-time string, got {text}"));
    let at = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", text)
        .unwrap_or_else(|e| panic!("{text:?} is YYYY-MM-DD HH:MM:SS: {e}"));
    jiff::tz::Offset::UTC
        .to_timestamp(at)
        .expect("a time jiff can hold")
        .as_second()
}

/// Sleeps until the wall clock is past second `secs`: Commerce's times have second resolution, so
/// an update within the same second as the creation would show the same `updated_at`.
async fn until_after_second(secs: i64) {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let wait_ms = ((secs + 1) * 1000 - now_ms).max(0) + 20;
    tokio::time::sleep(Duration::from_millis(wait_ms as u64)).await;
}

#[tokio::test]
async fn adobes_customer_tutorial_runs_through_the_demo_without_its_token_step() {
    let (demo, printed) = start_demo().await;
    let endpoint = printed.rest_endpoint.clone().expect("the demo prints REST_ENDPOINT");

    // Step 2: create the customer. No Authorization header: the proxy adds the IMS token.
    let created = call(Method::POST, &format!("{endpoint}/V1/customers"), CREATE).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let customer = created.json();
    let id = customer["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("a numeric id: {customer}"));
    assert_eq!(customer["group_id"], 1, "{customer}");
    assert_eq!(customer["created_in"], "Default Store View");
    assert_eq!(customer["updated_at"], customer["created_at"]);
    for (field, value) in [
        ("email", json!("john.doe@example.com")),
        ("firstname", json!("John")),
        ("lastname", json!("Doe")),
        ("store_id", json!(1)),
        ("website_id", json!(1)),
        ("addresses", json!([])),
        ("disable_auto_group_change", json!(0)),
    ] {
        assert_eq!(customer[field], value, "{field} in {customer}");
    }
    assert!(
        !created.text().contains("TempPa55word!"),
        "the password never comes back"
    );
    let created_at = unix_secs(&customer["created_at"]);

    // Step 3: the id from step 2 feeds the update, in the path and in the body.
    until_after_second(created_at).await;
    let updated = call(Method::PUT, &format!("{endpoint}/V1/customers/{id}"), &update(id)).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text());
    let updated = updated.json();
    assert_eq!(
        (updated["id"].as_u64(), &updated["lastname"], &updated["firstname"]),
        (Some(id), &json!("Doe-Updated"), &json!("john"))
    );
    assert_eq!(updated["created_at"], customer["created_at"], "{updated}");
    assert!(
        unix_secs(&updated["updated_at"]) > created_at,
        "updated_at moves: {updated}"
    );
    assert_eq!(updated["website_id"], 1, "what the update leaves out is kept");

    // The update is what a read sees.
    let read = get(&format!("{endpoint}/V1/customers/{id}")).await;
    assert_eq!((read.status, read.json()), (StatusCode::OK, updated));

    // An id Commerce never issued gets Magento's 404 shape.
    let unknown = id + 1000;
    let missing = get(&format!("{endpoint}/V1/customers/{unknown}")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.text());
    assert_eq!(
        missing.json(),
        json!({"message": "No such entity with %fieldName = %fieldValue",
            "parameters": {"fieldName": "customerId", "fieldValue": unknown}})
    );
    drop(demo);
}

// === SHOPLINE and CYBERBIZ ===

/// The `link` header's entries as (rel, URL).
fn links(answer: &Answer) -> Vec<(String, String)> {
    let Some(link) = answer.headers.get("link") else {
        return Vec::new();
    };
    link.to_str()
        .expect("an ASCII link header")
        .split(", ")
        .map(|entry| {
            let (url, rel) = entry.split_once(">; rel=").expect("<url>; rel=\"...\"");
            (rel.trim_matches('"').to_owned(), url.trim_start_matches('<').to_owned())
        })
        .collect()
}

fn product_ids(answer: &Answer) -> Vec<String> {
    let body = answer.json();
    let products = body["products"]
        .as_array()
        .unwrap_or_else(|| panic!("{{\"products\": [...]}}: {body}"));
    products
        .iter()
        .map(|p| {
            p["id"]
                .as_str()
                .unwrap_or_else(|| panic!("a string id: {p}"))
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn shopline_products_page_by_link_through_the_demo() {
    let (demo, printed) = start_demo().await;
    let products = printed.url_with("/demo-shopline/").to_owned();
    let whole = get(&products).await;
    assert_eq!(whole.status, StatusCode::OK, "{}", whole.text());
    assert!(links(&whole).is_empty(), "no limit, one page: {:?}", whole.headers);
    let first = &whole.json()["products"][0];
    for part in ["variants", "images", "options"] {
        assert!(
            first[part].as_array().is_some_and(|a| !a.is_empty()),
            "{part} in {first}"
        );
    }

    let mut page = get(&format!("{products}?limit=2")).await;
    let mut pages = vec![product_ids(&page)];
    while let Some((_, next)) = links(&page).into_iter().find(|(rel, _)| rel == "next") {
        // The link names the upstream; the caller keeps only its query for the proxy.
        assert!(
            next.contains("/admin/openapi/v20230901/products/products.json?limit=2&page_info="),
            "{next}"
        );
        let (_, query) = next.split_once('?').expect("a query");
        page = get(&format!("{products}?{query}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        pages.push(product_ids(&page));
        assert!(pages.len() <= 10, "the pages end");
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    assert_eq!(pages.concat(), product_ids(&whole), "every product once, in order");
    assert_eq!(
        links(&page).into_iter().map(|(rel, _)| rel).collect::<Vec<_>>(),
        ["previous"]
    );
    drop(demo);
}

#[tokio::test]
async fn cyberbiz_answers_in_its_documented_shapes_through_the_demo() {
    let (demo, printed) = start_demo().await;
    let base = printed
        .url_with("/demo-cyberbiz/")
        .trim_end_matches("/v1/products")
        .to_owned();

    let feeds = get(&format!("{base}/v2/product_feeds")).await;
    assert_eq!(feeds.status, StatusCode::OK, "{}", feeds.text());
    let feeds = feeds.json()["product_feeds"]
        .as_array()
        .cloned()
        .expect("{\"product_feeds\": [...]}");
    assert!(!feeds.is_empty());
    for feed in &feeds {
        for field in ["name", "url", "mime_type"] {
            assert!(feed[field].is_string(), "{field} in {feed}");
        }
    }
    let shop = get(&format!("{base}/shop")).await.json();
    assert_eq!(shop["shop_info"]["primary_domain"], "sandbox.cyberbiz.co", "{shop}");

    let first = get(&format!("{base}/v1/customers?per_page=2")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.json().as_array().map(Vec::len), Some(2));
    let header = |answer: &Answer, name: &str| answer.headers[name].to_str().expect("ASCII").to_owned();
    assert_eq!(
        (header(&first, "x-total"), header(&first, "x-next-page")),
        ("3".to_owned(), "2".to_owned())
    );
    let second = get(&format!("{base}/v1/customers?per_page=2&page=2")).await;
    let rest = second.json();
    assert_eq!(rest.as_array().map(Vec::len), Some(1), "{rest}");
    assert!(rest[0]["created_at"].as_str().is_some_and(|t| t.len() == 19), "{rest}");
    drop(demo);
}
