//! The fake store's catalogue and `GET .../products/products.json` in SHOPLINE's documented shape
//! (`docs/providers.md#sandbox-fakes`): `{"products": [...]}`, each product with its options,
//! images and variants, ids as long digit strings and times as ISO 8601 with an offset.
//!
//! Pagination is SHOPLINE's cursor scheme. `limit` (default 50, 1 to 250) sizes a page; when
//! there are more products after it (or before it), the `link` header carries
//! `<{store}/admin/openapi/{version}/products/products.json?limit=N&page_info=...>; rel="next"`
//! (and `rel="previous"`), `page_info` being base64 JSON `{"sinceId", "direction", "limit"}` as
//! SHOPLINE's own cursors decode. With `page_info`, every filter but `limit` and `fields` is
//! ignored; without it, `since_id` starts after a product id. `fields` keeps only the named
//! top-level fields. No `link` header means there is no other page.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::{HeaderValue, StatusCode};
use hyper::Response;
use serde_json::{Value, json};

use super::super::common::{self, Body, json};

/// Products in the store: enough for three pages of two.
const CATALOGUE_SIZE: usize = 5;
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 250;
/// Standard base64 for `page_info`, written padded and read with or without padding.
const PAGE_INFO: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One page of the catalogue: what `products.json` answers for `query`, reached at `url` (the
/// store's scheme, host and path, from which the `link` URLs are built).
pub(super) fn products_page(url: &str, query: Option<&str>) -> Response<Body> {
    let Some(request) = PageRequest::parse(query) else {
        return json(StatusCode::BAD_REQUEST, &json!({"errors": "page_info is invalid"}));
    };
    let catalogue: Vec<Value> = (1..=CATALOGUE_SIZE).map(product).collect();
    let ids: Vec<&str> = catalogue.iter().map(|p| p["id"].as_str().unwrap_or_default()).collect();
    let (start, end) = request.window(&ids);
    let page: Vec<Value> = catalogue[start..end]
        .iter()
        .map(|p| only_fields(p, request.fields.as_deref()))
        .collect();
    let mut links = Vec::new();
    if end < ids.len() && end > start {
        links.push(request.link(url, ids[end - 1], "next"));
    }
    if start > 0 && end > start {
        links.push(request.link(url, ids[start], "previous"));
    }
    let mut response = json(StatusCode::OK, &json!({"products": page}));
    if !links.is_empty() {
        // Ids and encoded queries are visible ASCII, and `url` is a request's own host and path.
        if let Ok(link) = HeaderValue::from_str(&links.join(", ")) {
            response.headers_mut().insert("link", link);
        }
    }
    response
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Next,
    Prev,
}

/// What a `products.json` query asks for.
#[derive(Debug)]
struct PageRequest {
    limit: usize,
    fields: Option<String>,
    /// Products strictly after (`Next`) or before (`Prev`) this id; `None` is the first page.
    cursor: Option<(String, Direction)>,
}

impl PageRequest {
    /// `None` when `page_info` is not a cursor this store issued.
    fn parse(query: Option<&str>) -> Option<Self> {
        let param = |name| common::query_param(query, name);
        let mut limit = param("limit").and_then(|l| l.parse().ok());
        let cursor = match param("page_info") {
            Some(page_info) => {
                let info: Value = serde_json::from_slice(&PAGE_INFO.decode(page_info).ok()?).ok()?;
                let since = info["sinceId"].as_str()?.to_owned();
                let direction = match info["direction"].as_str()? {
                    "next" => Direction::Next,
                    "prev" => Direction::Prev,
                    _ => return None,
                };
                limit = limit.or_else(|| info["limit"].as_u64().and_then(|l| usize::try_from(l).ok()));
                Some((since, direction))
            }
            None => param("since_id").map(|since| (since, Direction::Next)),
        };
        Some(Self {
            limit: limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
            fields: param("fields"),
            cursor,
        })
    }

    /// The index range of the page within `ids` (sorted ascending, as the catalogue is).
    fn window(&self, ids: &[&str]) -> (usize, usize) {
        let cmp = |id: &str, since: &str| (id.len(), id).cmp(&(since.len(), since));
        match &self.cursor {
            None => (0, self.limit.min(ids.len())),
            Some((since, Direction::Next)) => {
                let start = ids.iter().position(|id| cmp(id, since).is_gt()).unwrap_or(ids.len());
                (start, (start + self.limit).min(ids.len()))
            }
            Some((since, Direction::Prev)) => {
                let end = ids.iter().position(|id| cmp(id, since).is_ge()).unwrap_or(ids.len());
                (end.saturating_sub(self.limit), end)
            }
        }
    }

    /// One `link` entry: the next page starts after `since`, the previous one ends before it.
    fn link(&self, url: &str, since: &str, rel: &str) -> String {
        let direction = if rel == "next" { "next" } else { "prev" };
        let info = json!({"sinceId": since, "direction": direction, "limit": self.limit});
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("limit", &self.limit.to_string());
        if let Some(fields) = &self.fields {
            query.append_pair("fields", fields);
        }
        query.append_pair("page_info", &PAGE_INFO.encode(info.to_string()));
        format!("<{url}?{}>; rel=\"{rel}\"", query.finish())
    }
}

/// `product` with only the comma-separated `fields`, or whole.
fn only_fields(product: &Value, fields: Option<&str>) -> Value {
    let (Some(fields), Some(all)) = (fields, product.as_object()) else {
        return product.clone();
    };
    let wanted: Vec<&str> = fields.split(',').map(str::trim).collect();
    Value::Object(
        all.iter()
            .filter(|(name, _)| wanted.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
    )
}

/// Product `i` (1-based) of the catalogue: one size option, two variants, one image.
fn product(i: usize) -> Value {
    let id = format!("16057850264845250791{i:06}");
    let image = json!({
        "id": format!("17057850264845250791{i:06}"), "product_id": id, "position": 1,
        "src": format!("https://img.myshopline.com/image/store/sandbox/sandbox-tee-{i}.jpg"),
        "alt": format!("Sandbox tee {i}"), "width": 800, "height": 800,
    });
    let variants: Vec<Value> = ["S", "M"]
        .iter()
        .enumerate()
        .map(|(v, size)| {
            json!({
                "id": format!("18057850264845250791{:06}", i * 10 + v), "product_id": id,
                "title": size, "option1": size, "sku": format!("SB-{i:04}-{size}"),
                "price": "19.90", "compare_at_price": "24.90", "barcode": format!("T{i:04}{v}"),
                "weight": "0.2", "weight_unit": "kg", "inventory_quantity": 10 * i,
                "inventory_policy": "deny", "image_id": image["id"],
            })
        })
        .collect();
    let created = format!("2025-01-{i:02}T10:00:00+00:00");
    json!({
        "id": id, "title": format!("Sandbox tee {i}"), "handle": format!("sandbox-tee-{i}"),
        "body_html": "<p>A tee from the sandbox store.</p>", "vendor": "Sandbox", "spu": format!("SB-{i:04}"),
        "status": "active", "published_scope": "web", "created_at": created, "updated_at": created,
        "options": [{"name": "Size", "values": ["S", "M"]}],
        "image": image, "images": [image], "variants": variants,
    })
}
