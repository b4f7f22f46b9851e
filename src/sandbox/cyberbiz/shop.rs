//! The fake shop's data in CYBERBIZ's documented shapes (`docs/providers.md#sandbox-fakes`):
//! `GET /shop` (`{"shop_info": {...}}`), `GET /v2/product_feeds` (`{"product_feeds": [{"name",
//! "url", "mime_type"}]}`), and the lists `GET /v1/products` and `GET /v1/customers`, bare arrays
//! paged by `page` (1-based), `per_page` (default and at most 50) and `offset`, with the `X-Page`,
//! `X-Per-Page`, `X-Offset`, `X-Total`, `X-Total-Pages`, `X-Next-Page` and `X-Prev-Page` headers
//! (the last two empty when there is no such page). Times are Asia/Taipei `YYYY-MM-DD HH:MM:SS`
//! without a zone, money is JSON floats.

use http::{HeaderValue, StatusCode};
use hyper::Response;
use serde_json::{Value, json};

use super::super::common::{self, Body, json};
use super::options::CyberbizOptions;

/// `per_page`'s default and maximum.
const PER_PAGE: usize = 50;

pub(super) fn shop_info(options: &CyberbizOptions) -> Value {
    let domain = &options.shop_domain;
    json!({"shop_info": {
        "primary_domain": domain, "name": "Sandbox Shop", "id": options.shop_id,
        "email": "owner@example.com", "og_image_url": format!("//{domain}/media/og-image.jpg"),
        "shop_line_chat_bot": null,
        "shop_line": {"login_enable": false, "liff_id": null, "liff_enable": false},
        "language": "zh-TW", "currency": "TWD", "sms_prefix": "【CYBERBIZ代發】",
        "merchant_location": "Taiwan", "market_location": "Taiwan",
    }})
}

/// The feed URLs for the four advertising platforms CYBERBIZ documents.
pub(super) fn product_feeds(options: &CyberbizOptions) -> Value {
    let domain = &options.shop_domain;
    let feed = |name: &str, file: &str, mime_type: &str| json!({"name": name, "url": format!("//{domain}/product_feeds/{file}"), "mime_type": mime_type});
    json!({"product_feeds": [
        feed("facebook", "facebook.csv", "text/csv"),
        feed("google", "google.csv", "text/csv"),
        feed("shopdotcom", "shopdotcom.xml", "text/xml"),
        feed("line", "line.json", "application/json"),
    ]})
}

pub(super) fn products(options: &CyberbizOptions, query: Option<&str>) -> Response<Body> {
    let items = [
        (101, "Sandbox tea", "sandbox-tea", 350.0),
        (102, "Sandbox cup", "sandbox-cup", 480.0),
    ]
    .into_iter()
    .map(|(id, title, handle, price)| product(options, id, title, handle, price))
    .collect();
    paged(items, query)
}

fn product(options: &CyberbizOptions, id: u64, title: &str, handle: &str, price: f64) -> Value {
    let (created, updated) = ("2025-01-02 10:00:00", "2025-01-02 10:05:00");
    let variant = json!({
        "product_id": id, "name": title, "position": 1, "price": price, "cost": null,
        "compare_at_price": price + 50.0, "weight": 0.0, "option1": null, "option2": null,
        "option3": null, "inventory_management": true, "inventory_quantity": 20,
        "inventory_policy": "deny", "sku": format!("CB-{id}"), "requires_shipping": true,
        "created_at": created, "updated_at": updated, "id": id * 10 + 1,
    });
    json!({
        "title": title, "product_url": format!("//{}/products/{handle}", options.shop_domain),
        "published": true, "body_html": "", "vendor": null, "price": price,
        "tax_type_id": "inclusive_tax", "custom_collections": [], "tags": [],
        "product_variants": [variant], "product_options": [], "photos": [],
        "created_at": created, "updated_at": updated, "id": id,
    })
}

pub(super) fn customers(query: Option<&str>) -> Response<Body> {
    let people = [
        (1, "王小明", "ming@example.com", "0912345678"),
        (2, "陳美玲", "mei@example.com", "0923456789"),
        (3, "林志豪", "hao@example.com", "0934567890"),
    ];
    let items = people
        .into_iter()
        .map(|(id, name, email, mobile)| {
            json!({
                "name": name, "status": "enabled", "email": email, "country_calling_code": "+886",
                "mobile": mobile, "accepts_marketing": true, "tags": [], "address": null,
                "gender": null, "birthday": null, "note": null, "custom_fields": [],
                "created_at": "2025-01-02 10:00:00", "updated_at": "2025-01-02 10:00:00",
                "bonus_remain": 0.0, "uid_providers": [], "id": id,
            })
        })
        .collect();
    paged(items, query)
}

/// One page of `items` as CYBERBIZ pages lists: it starts at record
/// `offset + (page - 1) * per_page`, and the `X-*` headers describe it.
fn paged(items: Vec<Value>, query: Option<&str>) -> Response<Body> {
    let param = |name, default: usize| {
        common::query_param(query, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (page, per_page, offset) = (
        param("page", 1).max(1),
        param("per_page", PER_PAGE).clamp(1, PER_PAGE),
        param("offset", 0),
    );
    let total = items.len();
    let start = offset.saturating_add((page - 1).saturating_mul(per_page)).min(total);
    let end = start.saturating_add(per_page).min(total);
    let total_pages = total.saturating_sub(offset).div_ceil(per_page);
    let page_items: Vec<Value> = items.into_iter().skip(start).take(end - start).collect();
    let mut response = json(StatusCode::OK, &Value::Array(page_items));
    let headers = response.headers_mut();
    headers.insert("x-page", HeaderValue::from(page));
    headers.insert("x-per-page", HeaderValue::from(per_page));
    headers.insert("x-offset", HeaderValue::from(offset));
    headers.insert("x-total", HeaderValue::from(total));
    headers.insert("x-total-pages", HeaderValue::from(total_pages));
    let next = if end < total {
        (page + 1).to_string()
    } else {
        String::new()
    };
    let prev = if page > 1 {
        (page - 1).to_string()
    } else {
        String::new()
    };
    for (name, value) in [("x-next-page", next), ("x-prev-page", prev)] {
        // Digits or nothing: always a valid header value.
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    if let Ok(id) = HeaderValue::from_str(&common::random_string()) {
        headers.insert("x-request-id", id);
    }
    response
}
