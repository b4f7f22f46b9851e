//! The request path: ordered, named phases over one request.
//!
//! ```text
//!  refuse_foreign ─▶ resolve_tenant ─▶ check_caller ─▶ check_declared_size ─▶ wait_for_slot
//!      (CONNECT,        (prefix or own      (SPEC 7)       (413 before any       (429 past
//!   absolute-form)      listener; path                      upstream work)        max_wait)
//!                        normalised)
//!  ─▶ upstream_uri ─▶ prepare_body ─▶ forward_with_replay ─▶ finish
//!     (rewrite,        (buffer what     (token, send, on 401     (hop-by-hop out,
//!      Store header)    may replay)      retire + replay once)    429 pauses limiter)
//! ```
//!
//! Each phase is a small function; the order is fixed in [`proxy`] with the reason for each
//! position. Every failure is a [`ProxyError`] and becomes a response in exactly one place.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use super::{callers, request_id};
use crate::app::{Binding, Snapshot, Tenant};
use crate::cache::CurrentToken;
use crate::error::{ProxyBody, ProxyError};
use crate::routing::{path, rewrite};
use crate::upstream::{UpstreamBody, UpstreamResponseBody, headers};

/// What the pipeline learns about one request, for the access log.
pub(crate) struct RequestCtx {
    pub(crate) started: Instant,
    pub(crate) tenant: Option<Arc<Tenant>>,
    /// How long the request waited for a rate-limit slot; `None` when it never got one (no
    /// limiter, refused earlier, or rejected with 429), so the wait histogram only holds real waits.
    pub(crate) rate_limit_wait: Option<Duration>,
    pub(crate) generation: Option<u64>,
    pub(crate) upstream_status: Option<StatusCode>,
    pub(crate) upstream_elapsed: Option<Duration>,
    pub(crate) replayed: bool,
}

/// Serves one request; never fails (errors become problem+json responses).
pub(crate) async fn handle(snapshot: &Snapshot, binding: &Binding, request: Request<Incoming>) -> Response<ProxyBody> {
    let mut ctx = RequestCtx {
        started: Instant::now(),
        tenant: None,
        rate_limit_wait: None,
        generation: None,
        upstream_status: None,
        upstream_elapsed: None,
        replayed: false,
    };
    // The request is consumed upstream; keep what the access log prints only when it is on
    // (at RUST_LOG=warn the clones, and their reference counts on hyper's buffer, are skipped).
    let logged = tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO).then(|| Logged {
        request_id: request_id::of(request.headers()),
        method: request.method().clone(),
        uri: request.uri().clone(),
    });
    let response = match proxy(snapshot, binding, request, &mut ctx).await {
        Ok(response) => response,
        Err(error) => error.into_response(ctx.tenant.as_ref().map(|t| &t.config.name)),
    };
    record(&ctx, logged.as_ref(), &response);
    response
}

/// What only the access log needs, captured before the request is consumed upstream.
struct Logged {
    /// Correlates the access log line with the caller's own logs (see [`request_id::of`]).
    request_id: request_id::RequestId,
    method: Method,
    uri: Uri,
}

/// Target of the one-per-request access event.
const ACCESS_LOG: &str = "tokenbroker::access";

async fn proxy(
    snapshot: &Snapshot,
    binding: &Binding,
    request: Request<Incoming>,
    ctx: &mut RequestCtx,
) -> Result<Response<ProxyBody>, ProxyError> {
    // Not an open proxy: only origin-form requests for our own tenants go anywhere.
    refuse_foreign(&request)?;
    // The tenant decides every later limit, so it comes first; its path is normalised here, once.
    let (tenant, path) = resolve_tenant(snapshot, binding, request.uri().path())?;
    ctx.tenant = Some(Arc::clone(&tenant));
    // Cheap refusals before we spend a rate-limit slot or a token on the request.
    callers::check(&snapshot.callers, &tenant.config.name, &request)?;
    let declared = check_declared_size(&tenant, request.headers())?;
    // Wait for a slot before taking a token, so a long wait never holds a stale generation.
    ctx.rate_limit_wait = wait_for_slot(&tenant).await?;
    let (uri, store) = upstream_uri(&tenant, &path, request.uri().query())?;
    let (mut parts, body) = request.into_parts();
    let body = prepare_body(&tenant, declared, body).await?;
    headers::sanitize_request(&mut parts.headers);
    add_upstream_headers(&tenant, &mut parts.headers, store);
    forward_with_replay(snapshot, &tenant, parts, uri, body, ctx).await
}

fn refuse_foreign(request: &Request<Incoming>) -> Result<(), ProxyError> {
    if request.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed("CONNECT"));
    }
    // HTTP/2 always carries an authority; in HTTP/1 an absolute-form target asks for a forward proxy.
    if request.version() < Version::HTTP_2 && request.uri().scheme().is_some() {
        return Err(ProxyError::BadRequest(
            "absolute-form requests are refused: this is not a forward proxy",
        ));
    }
    Ok(())
}

fn resolve_tenant<'r>(
    snapshot: &Snapshot,
    binding: &Binding,
    raw_path: &'r str,
) -> Result<(Arc<Tenant>, Cow<'r, str>), ProxyError> {
    let (tenant, rest) = match binding {
        Binding::Tenant(name) => (snapshot.tenant(name.as_str()), raw_path),
        Binding::Main => {
            let (segment, rest) =
                path::split_tenant(raw_path).ok_or(ProxyError::BadRequest("the path must start with /"))?;
            (snapshot.tenant(segment), rest)
        }
    };
    let tenant = tenant.ok_or(ProxyError::UnknownTenant)?;
    let path = path::normalize(rest).map_err(|_| ProxyError::BadRequest("the path contains an encoded traversal"))?;
    Ok((tenant, path))
}

fn check_declared_size(tenant: &Tenant, headers: &HeaderMap) -> Result<Option<u64>, ProxyError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    let length = value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or(ProxyError::BadRequest("Content-Length is not a number"))?;
    if length > tenant.config.max_body {
        return Err(ProxyError::PayloadTooLarge {
            limit: tenant.config.max_body,
        });
    }
    Ok(Some(length))
}

/// The wait for a slot, `None` when the tenant has no limiter.
async fn wait_for_slot(tenant: &Tenant) -> Result<Option<Duration>, ProxyError> {
    match &tenant.limiter {
        None => Ok(None),
        Some(limiter) => limiter
            .acquire()
            .await
            .map(Some)
            .map_err(|limited| ProxyError::RateLimited {
                retry_after: limited.retry_after,
            }),
    }
}

/// Rewrites the path and builds the upstream URI; the query string passes byte for byte.
/// Also returns the `Store` header value when the matching rule captured a store code.
fn upstream_uri(tenant: &Tenant, path: &str, query: Option<&str>) -> Result<(Uri, Option<HeaderValue>), ProxyError> {
    let rewritten = rewrite::rewrite(&tenant.config.rewrite, path);
    let upstream = &tenant.config.upstream;
    let query_len = query.map_or(0, |q| q.len() + 1);
    let mut target = String::with_capacity(upstream.base_path.len() + rewritten.path.len() + query_len);
    target.push_str(&upstream.base_path);
    target.push_str(&rewritten.path);
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    // The plain-http pool writes the URI as given, so it gets origin-form; hyper-util's client
    // needs the scheme and authority to pick a connection.
    let mut uri = Uri::builder();
    if tenant.http1.is_none() {
        uri = uri
            .scheme(upstream.scheme.clone())
            .authority(upstream.authority.clone());
    }
    let uri = uri
        .path_and_query(target)
        .build()
        .map_err(|_| ProxyError::BadRequest("the rewritten path is not a valid URI"))?;
    let store = rewritten.store.and_then(|s| HeaderValue::from_str(s).ok());
    Ok((uri, store))
}

fn add_upstream_headers(tenant: &Tenant, headers: &mut HeaderMap, store: Option<HeaderValue>) {
    for (name, value) in &tenant.upstream_headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(store) = store {
        headers.insert(http::HeaderName::from_static("store"), store);
    }
}

/// A request body: buffered when a 401 may need it again, else streamed under the tenant's cap.
enum PreparedBody {
    Buffered(Bytes),
    Streamed(Limited<Incoming>),
}

async fn prepare_body(tenant: &Tenant, declared: Option<u64>, body: Incoming) -> Result<PreparedBody, ProxyError> {
    let policy = &tenant.config.token;
    let max_body = usize::try_from(tenant.config.max_body).unwrap_or(usize::MAX);
    let fits_replay = match declared {
        Some(length) => length <= policy.replay_body_limit,
        None => body.is_end_stream(),
    };
    if !(fits_replay && policy.retry_on_unauthorized && tenant.renews) {
        return Ok(PreparedBody::Streamed(Limited::new(body, max_body)));
    }
    // Most requests (GETs) have no body: nothing to read or buffer.
    if body.is_end_stream() {
        return Ok(PreparedBody::Buffered(Bytes::new()));
    }
    match Limited::new(body, max_body).collect().await {
        Ok(collected) => Ok(PreparedBody::Buffered(collected.to_bytes())),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ProxyError::PayloadTooLarge {
            limit: tenant.config.max_body,
        }),
        Err(_) => Err(ProxyError::BadRequest("the request body could not be read")),
    }
}

/// Sends the request with the current token; on a rejected token, retires it and replays once.
async fn forward_with_replay(
    snapshot: &Snapshot,
    tenant: &Tenant,
    parts: Parts,
    uri: Uri,
    body: PreparedBody,
    ctx: &mut RequestCtx,
) -> Result<Response<ProxyBody>, ProxyError> {
    let timeout = snapshot.server.request_timeout;
    let exchange = Exchange {
        tenant,
        method: &parts.method,
        deadline: Instant::now() + timeout,
        timeout,
    };
    let token = tenant
        .tokens
        .current(timeout)
        .await
        .map_err(|e| ProxyError::TokenUnavailable(e.0))?;
    ctx.generation = Some(token.generation);
    // Only a buffered body can be sent twice, so only then are headers and URI kept for a replay.
    let (first_body, replay) = match body {
        PreparedBody::Buffered(bytes) => (
            Either::Left(Full::new(bytes.clone())),
            Some((parts.headers.clone(), uri.clone(), bytes)),
        ),
        PreparedBody::Streamed(stream) => (Either::Right(stream), None),
    };
    let response = exchange.send(uri, parts.headers, first_body, &token, ctx).await?;
    let rejected = tenant.config.token.retry_on_unauthorized && tenant.provider_rejects(response.status());
    // `retire` renews only the generation that failed, and says whether a newer token will follow.
    if !(rejected && tenant.tokens.retire(token.generation)) {
        return Ok(finish(tenant, response, ctx));
    }
    let Some((headers, uri, bytes)) = replay else {
        return Ok(finish(tenant, response, ctx));
    };
    let Ok(newer) = tenant.tokens.newer_than(token.generation, exchange.remaining()).await else {
        // No better token: the caller gets the upstream's own 401.
        return Ok(finish(tenant, response, ctx));
    };
    drop(response);
    ctx.generation = Some(newer.generation);
    ctx.replayed = true;
    tenant
        .metrics
        .unauthorized_replays
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let replayed = exchange
        .send(uri, headers, Either::Left(Full::new(bytes)), &newer, ctx)
        .await?;
    Ok(finish(tenant, replayed, ctx))
}

/// What stays the same between a request's first attempt and its replay.
struct Exchange<'a> {
    tenant: &'a Tenant,
    method: &'a Method,
    /// `request_timeout` from the start of forwarding, shared by both attempts.
    deadline: Instant,
    timeout: Duration,
}

impl Exchange<'_> {
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// One attempt with `token`; records how long the upstream took to answer, when it did.
    async fn send(
        &self,
        uri: Uri,
        mut headers: HeaderMap,
        body: UpstreamBody,
        token: &CurrentToken,
        ctx: &mut RequestCtx,
    ) -> Result<Response<UpstreamResponseBody>, ProxyError> {
        headers.insert(token.header_name.clone(), token.header_value.clone());
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let sent = Instant::now();
        let sending = async {
            match &self.tenant.http1 {
                Some(pool) => pool
                    .send(request)
                    .await
                    .map_err(|e| classify_send_error(self.tenant, &e)),
                None => (self.tenant.client.request(request).await)
                    .map(|response| response.map(UpstreamResponseBody::from))
                    .map_err(|e| classify_send_error(self.tenant, &e)),
            }
        };
        let response = tokio::time::timeout_at(self.deadline, sending)
            .await
            .map_err(|_| ProxyError::UpstreamTimeout(self.timeout))??;
        ctx.upstream_elapsed = Some(sent.elapsed());
        Ok(response)
    }
}

/// A body over the cap surfaces as a client error whose cause is our `LengthLimitError`.
fn classify_send_error(tenant: &Tenant, error: &(dyn std::error::Error + 'static)) -> ProxyError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut chain = String::new();
    while let Some(current) = cause {
        if current.is::<http_body_util::LengthLimitError>() {
            return ProxyError::PayloadTooLarge {
                limit: tenant.config.max_body,
            };
        }
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&current.to_string());
        cause = current.source();
    }
    ProxyError::UpstreamUnreachable(chain)
}

/// Streams the upstream response back without its hop-by-hop headers; 429 pauses the tenant.
fn finish(tenant: &Tenant, response: Response<UpstreamResponseBody>, ctx: &mut RequestCtx) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    ctx.upstream_status = Some(parts.status);
    headers::strip_hop_by_hop(&mut parts.headers);
    match parts.status {
        StatusCode::TOO_MANY_REQUESTS => {
            if let Some(limiter) = &tenant.limiter {
                let pause = retry_after(&parts.headers).unwrap_or(Duration::from_secs(1));
                limiter.pause_for(pause);
                tracing::warn!(tenant = %tenant.config.name, pause_ms = pause.as_millis() as u64, "upstream answered 429; pausing the tenant");
            }
        }
        StatusCode::LOCKED => {
            tracing::error!(tenant = %tenant.config.name, "upstream answered 423: the store is locked after repeated rate-limit overruns");
        }
        _ => {}
    }
    Response::from_parts(parts, Either::Left(body))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Metrics and the access log: one event per request, never a query string, header value or body.
fn record(ctx: &RequestCtx, logged: Option<&Logged>, response: &Response<ProxyBody>) {
    let elapsed = ctx.started.elapsed();
    if let Some(tenant) = &ctx.tenant {
        let metrics = &tenant.metrics;
        metrics.record_status(response.status().as_u16());
        metrics.request_duration.observe(elapsed);
        if let Some(elapsed) = ctx.upstream_elapsed {
            metrics.upstream_duration.observe(elapsed);
        }
        if let Some(wait) = ctx.rate_limit_wait {
            metrics.ratelimit_wait.observe(wait);
        }
    }
    let Some(Logged {
        request_id,
        method,
        uri,
    }) = logged
    else {
        return;
    };
    tracing::info!(
        target: ACCESS_LOG,
        request_id = %request_id,
        tenant = ctx.tenant.as_ref().map(|t| t.config.name.as_str()),
        method = %method,
        path = uri.path(),
        status = response.status().as_u16(),
        upstream_status = ctx.upstream_status.map(|s| s.as_u16()),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        rate_limit_wait_ms = ctx.rate_limit_wait.map(|w| w.as_secs_f64() * 1000.0),
        token_generation = ctx.generation,
        replayed = ctx.replayed,
        error = response.headers().get(crate::error::ERROR_HEADER).and_then(|v| v.to_str().ok()),
    );
}
