//! The ACCS customers resource (`docs/providers.md#sandbox-fakes`), small and in memory, in the
//! shapes Adobe's customer REST tutorial shows: `POST /V1/customers` with
//! `{"customer": {...}, "password": ...}` creates one, `GET /V1/customers/{id}` reads it and
//! `PUT /V1/customers/{id}` merges the given fields into it and moves `updated_at`.
//!
//! A customer is the given fields plus what Commerce adds: `id`, `group_id` (1, General),
//! `created_at`/`updated_at` (`YYYY-MM-DD HH:MM:SS`, UTC), `created_in`, `store_id`/`website_id`
//! (1 unless given), `addresses` (`[]` unless given) and `disable_auto_group_change` (0). The
//! password is dropped, never kept or returned. Errors are Magento's `{"message", "parameters"}`:
//! 400 for a missing required field or an e-mail already used in the same website, 404 for an
//! unknown id.

use std::collections::BTreeMap;
use std::sync::Mutex;

use http::{Method, StatusCode};
use hyper::Response;
use serde_json::{Map, Value, json};

use super::super::common::{Body, BodySummary, json, lock};
use crate::clock;

/// Fields Commerce sets itself; a caller's values for them are ignored.
const SERVER_FIELDS: &[&str] = &["id", "created_at", "updated_at", "created_in", "password"];
/// Fields a customer cannot be saved without.
const REQUIRED: &[&str] = &["email", "firstname", "lastname"];

/// A Magento error answer: status, `message` (with `%placeholders`) and its `parameters`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MagentoError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) parameters: Option<Value>,
}

impl MagentoError {
    fn required(field: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: "\"%fieldName\" is required. Enter and try again.".to_owned(),
            parameters: Some(json!({"fieldName": field})),
        }
    }

    fn no_such_customer(id: u64) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: "No such entity with %fieldName = %fieldValue".to_owned(),
            parameters: Some(json!({"fieldName": "customerId", "fieldValue": id})),
        }
    }

    fn plain(status: StatusCode, message: String) -> Self {
        Self {
            status,
            message,
            parameters: None,
        }
    }
}

impl From<MagentoError> for Response<Body> {
    fn from(error: MagentoError) -> Self {
        let mut body = json!({"message": error.message});
        if let Some(parameters) = error.parameters {
            body["parameters"] = parameters;
        }
        json(error.status, &body)
    }
}

/// Every customer created so far, by id.
#[derive(Debug, Default)]
pub(crate) struct Customers {
    last_id: u64,
    records: BTreeMap<u64, Map<String, Value>>,
}

impl Customers {
    /// Creates a customer from a `POST /V1/customers` body; `now` is its `created_at`.
    pub(crate) fn create(&mut self, body: &Value, now: &str) -> Result<Value, MagentoError> {
        let given = customer_of(body)?;
        let mut record = Map::new();
        record.insert("group_id".to_owned(), json!(1));
        record.insert("created_at".to_owned(), json!(now));
        record.insert("updated_at".to_owned(), json!(now));
        record.insert("created_in".to_owned(), json!("Default Store View"));
        record.insert("store_id".to_owned(), json!(1));
        record.insert("website_id".to_owned(), json!(1));
        record.insert("addresses".to_owned(), json!([]));
        record.insert("disable_auto_group_change".to_owned(), json!(0));
        merge(&mut record, given);
        self.check(&record, None)?;
        let id = self.last_id + 1;
        record.insert("id".to_owned(), json!(id));
        self.last_id = id;
        self.records.insert(id, record.clone());
        Ok(Value::Object(record))
    }

    /// Merges a `PUT /V1/customers/{id}` body into customer `id`; `now` is its new `updated_at`.
    /// The id in the path wins over one in the body, as in Commerce.
    pub(crate) fn update(&mut self, id: u64, body: &Value, now: &str) -> Result<Value, MagentoError> {
        let given = customer_of(body)?;
        let mut record = self
            .records
            .get(&id)
            .cloned()
            .ok_or_else(|| MagentoError::no_such_customer(id))?;
        merge(&mut record, given);
        self.check(&record, Some(id))?;
        record.insert("updated_at".to_owned(), json!(now));
        self.records.insert(id, record.clone());
        Ok(Value::Object(record))
    }

    pub(crate) fn get(&self, id: u64) -> Result<Value, MagentoError> {
        self.records
            .get(&id)
            .map(|record| Value::Object(record.clone()))
            .ok_or_else(|| MagentoError::no_such_customer(id))
    }

    /// The required fields are there, and no other customer of the website has the e-mail.
    fn check(&self, record: &Map<String, Value>, own_id: Option<u64>) -> Result<(), MagentoError> {
        let text = |field: &str| {
            record
                .get(field)
                .and_then(Value::as_str)
                .filter(|v| !v.trim().is_empty())
        };
        if let Some(missing) = REQUIRED.iter().find(|field| text(field).is_none()) {
            return Err(MagentoError::required(missing));
        }
        let email = text("email").unwrap_or_default();
        let website = record.get("website_id");
        let taken = self.records.iter().any(|(id, other)| {
            Some(*id) != own_id
                && other.get("website_id") == website
                && other
                    .get("email")
                    .and_then(Value::as_str)
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
        });
        if taken {
            let message = "A customer with the same email address already exists in an associated website.";
            return Err(MagentoError::plain(StatusCode::BAD_REQUEST, message.to_owned()));
        }
        Ok(())
    }
}

/// The `customer` object of a request body.
fn customer_of(body: &Value) -> Result<&Map<String, Value>, MagentoError> {
    body.get("customer")
        .and_then(Value::as_object)
        .ok_or_else(|| MagentoError::required("customer"))
}

/// Copies the caller's fields over `record`, leaving out those Commerce sets.
fn merge(record: &mut Map<String, Value>, given: &Map<String, Value>) {
    for (field, value) in given {
        if !SERVER_FIELDS.contains(&field.as_str()) {
            record.insert(field.clone(), value.clone());
        }
    }
}

/// Commerce's date-time text for unix milliseconds: `2026-01-23 20:40:15`, UTC.
pub(crate) fn magento_datetime(unix_ms: u64) -> String {
    let at = i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        // Only a clock set past the year 9999 gets here; the epoch is as good an answer as any.
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    at.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

// === routes ===

/// The customers routes over `customers`, for every fake that serves Commerce's REST API (the
/// ACCS one here, the Magento one in `magento.rs`).
pub(crate) fn route(
    customers: &Mutex<Customers>,
    method: &Method,
    rest: &str,
    body: &BodySummary,
) -> Option<Response<Body>> {
    let id = rest.strip_prefix('/').filter(|id| !id.is_empty() && !id.contains('/'));
    let answer = match (method, rest, id) {
        (&Method::POST, "", _) => parse(body).and_then(|body| lock(customers).create(&body, &now())),
        (&Method::GET, _, Some(id)) => customer_id(id).and_then(|id| lock(customers).get(id)),
        (&Method::PUT, _, Some(id)) => customer_id(id)
            .and_then(|id| parse(body).map(|body| (id, body)))
            .and_then(|(id, body)| lock(customers).update(id, &body, &now())),
        _ => return None,
    };
    Some(answer.map_or_else(Response::from, |customer| json(StatusCode::OK, &customer)))
}

/// Commerce's plain error body, `{"message": ...}`.
pub(crate) fn magento_error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &json!({"message": message}))
}

fn now() -> String {
    magento_datetime(clock::unix_millis())
}

/// The request body as JSON; an empty body counts as `{}`.
fn parse(body: &BodySummary) -> Result<Value, MagentoError> {
    if body.len == 0 {
        return Ok(json!({}));
    }
    if body.len as usize != body.head.len() {
        return Err(MagentoError::plain(
            StatusCode::BAD_REQUEST,
            "Request body is too large.".to_owned(),
        ));
    }
    serde_json::from_slice(&body.head)
        .map_err(|_| MagentoError::plain(StatusCode::BAD_REQUEST, "Decoding error.".to_owned()))
}

/// A path id, which Commerce converts to an integer before looking anything up.
fn customer_id(text: &str) -> Result<u64, MagentoError> {
    text.parse().map_err(|_| {
        let message =
            format!("The \"{text}\" value's type is invalid. The \"int\" type was expected. Verify and try again.");
        MagentoError::plain(StatusCode::BAD_REQUEST, message)
    })
}
