//! Caller classes in one process (README, "Caller classes"): a batch flood and a steady trickle of
//! interactive requests share the SHOPLINE preset (4/s, burst 40) of one tenant, and the
//! interactive ones are served within about one slot while batch keeps flowing.
//!
//! Real time and sockets: the tolerances are scheduling slack on a busy machine, and the test
//! runs about 30 s (120 + 20 requests at 4/s after a burst of 40).

use std::time::Duration;

use http::StatusCode;
use tokenbroker::sandbox::{self, ShoplineSandbox};
use tokio::time::Instant;

use crate::sandboxed::shopline_tenant;
use crate::shared_limits::{envelope_breach, offsets_ms, shopline_witness};
use crate::support::{Proxy, env, get_as};

pub(crate) const SHOP_PATH: &str = "/shop/admin/openapi/v20230901/products/products.json";
pub(crate) const BATCH_KEY: &str = "batch-key-0123456789";
pub(crate) const INTERACTIVE_KEY: &str = "interactive-key-0123456789";
/// One SHOPLINE slot (4/s).
const SLOT: Duration = Duration::from_millis(250);
/// Scheduling and upstream time on top of the wait, on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(200);

/// The scenario's config: the preset tenant, a batch and an interactive caller. The replicas of
/// `shared_classes.rs` run it with a `[store]` added.
pub(crate) fn config(shop: &ShoplineSandbox) -> String {
    let extra = "app_secret = { env = \"SHOPLINE_SECRET\" }\ncode = { env = \"SHOPLINE_CODE\" }\n";
    // The preset's rate and burst are under test; only the per-class max_wait is set here.
    let limit = "rate_limit = { per_second = 4, burst = 40, max_wait = { interactive = \"2s\", batch = \"2m\" } }\n";
    let tenant =
        shopline_tenant("shop", shop, &shop.base_url(), &format!("{extra}{limit}")).replace("rate_limit = false\n", "");
    let server = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nrequest_timeout = \"120s\"\n";
    let callers = "[[caller]]\nname = \"sync\"\nkey = { env = \"BATCH_KEY\" }\nclass = \"batch\"\n\
                   [[caller]]\nname = \"checkout\"\nkey = { env = \"INTERACTIVE_KEY\" }\nclass = \"interactive\"\n";
    format!("{server}{tenant}{callers}")
}

/// The batch side of the scenario, from each batch request's time of answer since `since`: while
/// interactive requests came (10 s, 40 slots) batch kept at least its 10 %, every one of the 140
/// requests reached SHOPLINE once, none throttled, within 40 + 4·t (`context` adds to that
/// failure). Returns how many batch requests were answered during the trickle.
pub(crate) fn assert_batch_flowed_within_the_envelope(
    batch_done: &[Duration],
    shop: &ShoplineSandbox,
    since: Instant,
    context: impl FnOnce() -> String,
) -> usize {
    let window = (Duration::from_secs(1), Duration::from_millis(10_100));
    let flowing = batch_done
        .iter()
        .filter(|at| **at > window.0 && **at <= window.1)
        .count();
    assert!(
        flowing >= 4,
        "batch got {flowing} slots while interactive requests waited"
    );
    let arrivals: Vec<Instant> = shop.api_arrivals().into_iter().filter(|t| *t >= since).collect();
    assert_eq!(arrivals.len(), 140, "every request reached SHOPLINE once");
    assert_eq!(shop.throttled_calls(), 0, "ms: {:?}", offsets_ms(&arrivals));
    if let Some(breach) = envelope_breach(&arrivals, 40, 4) {
        panic!("over 40 + 4·t: {breach}\n{}", context());
    }
    flowing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_requests_pass_a_batch_flood_within_a_slot() {
    let shop = shopline_witness().await;
    let envs = env(&[
        ("SHOPLINE_SECRET", sandbox::SHOPLINE_APP_SECRET),
        ("SHOPLINE_CODE", sandbox::SHOPLINE_AUTH_CODE),
        ("BATCH_KEY", BATCH_KEY),
        ("INTERACTIVE_KEY", INTERACTIVE_KEY),
    ]);
    let proxy = Proxy::start_with_env(&config(&shop), &envs).await;
    let url = proxy.url(SHOP_PATH);
    // The token, then a full bucket again (one slot: 250 ms).
    assert_eq!(get_as(&url, INTERACTIVE_KEY).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(600)).await;

    let since = Instant::now();
    let batch: Vec<_> = (0..120)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { (get_as(&url, BATCH_KEY).await, since.elapsed()) })
        })
        .collect();
    let mut interactive = Vec::new();
    for i in 0..20u32 {
        tokio::time::sleep_until(since + Duration::from_millis(500) * i + Duration::from_millis(100)).await;
        let began = Instant::now();
        let answer = get_as(&url, INTERACTIVE_KEY).await;
        interactive.push((answer.status, began.elapsed()));
    }
    let mut batch_done = Vec::new();
    for task in batch {
        let (answer, at) = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("every batch request is answered within a minute")
            .expect("a request task");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        batch_done.push(at);
    }
    for (i, (status, took)) in interactive.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "interactive request {i} refused");
        assert!(
            *took <= SLOT + SLACK,
            "interactive request {i} took {took:?}: {interactive:?}"
        );
    }
    let flowing = assert_batch_flowed_within_the_envelope(&batch_done, &shop, since, String::new);
    let slowest = interactive.iter().map(|(_, took)| *took).max();
    let last_batch = batch_done.iter().max();
    eprintln!("interactive slowest {slowest:?}; batch during the trickle {flowing}; last batch at {last_batch:?}");
    let waits = proxy.metrics().await;
    let series = r#"tokenbroker_ratelimit_wait_seconds_count{tenant="shop",class="batch"}"#;
    assert!(waits.contains(series), "{waits}");
}
