//! The request path: ordered, named phases over one request.
//!
//! ```text
//!  1 route ──▶ 2 caller ──▶ 3 limits ──────────▶ 4 token ──▶ 5 headers ──▶ 6 forward ──▶ 7 response ──▶ 8 log
//!  CONNECT and   tenant and   declared size (413),  current     rewrite,      send; the      hop-by-hop   metrics,
//!  absolute-form method       rate-limit slot       token,      Store header, 401 rule:    and proxy-   request id
//!  refused; key  (README      (429 past max_wait),  waiting     hygiene,      renew once,  only headers echoed;
//!  (401) or      "Callers")   body kept for a       at most     credential    replay once  out; 429     access
//!  local origin               resend (or capped)    request_                  if the body  pauses the   event at
//!  (421/403);                                       timeout                   was kept     limiter      body end
//!  tenant by prefix or own listener; path normalised
//! ```
//!
//! Each phase is a small function; [`proxy`] applies them in this order, with the reason for each
//! position. Every failure is a [`ProxyError`] and becomes a response in exactly one place; the
//! upstream's own failures arrive as [`UpstreamError`] and are mapped in [`Exchange::send`]. The
//! 401 rule belongs to the token manager ([`crate::token::TokenManager::after_response`]); this
//! file only keeps what a replay needs. `docs/architecture.md` walks through a request.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::access_log::{self, AccessBody, Logged, RequestBytes, RequestCtx, TRACEPARENT, record};
use super::exchange::Exchange;
use super::inbound::{Binding, Inbound};
use super::request_body::{BodyRules, PreparedBody, blame, prepare_body};
use super::{callers, origin, request_id};
use crate::config::CallerClass;
use crate::error::{ProxyBody, ProxyError};
use crate::routing::{path, rewrite};
use crate::telemetry::traces::RequestTrace;
use crate::tenant::{Snapshot, Tenant};
use crate::token::CurrentToken;
use crate::upstream::{Resign, UpstreamResponseBody, headers};

/// Serves one request from `peer`; never fails (errors become problem+json responses).
pub(crate) async fn handle(
    snapshot: &Arc<Snapshot>,
    inbound: &Inbound,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<AccessBody> {
    let mut ctx = RequestCtx {
        started: Instant::now(),
        tenant: None,
        rate_limit_wait: None,
        caller: None,
        class: CallerClass::Standard,
        generation: None,
        upstream_status: None,
        upstream_elapsed: None,
        replayed: false,
        request_bytes: RequestBytes::None,
        trace: RequestTrace::start(request.headers(), request.method(), request.uri().path()),
        fault: None,
    };
    let request_id = request_id::of(request.headers());
    // The request is consumed upstream; keep what the access log prints only when it is on
    // (at RUST_LOG=warn the clones, and their reference counts on hyper's buffer, are skipped).
    let logged = access_log::enabled().then(|| {
        Box::new(Logged {
            method: request.method().clone(),
            uri: request.uri().clone(),
            traceparent: request.headers().get(TRACEPARENT).cloned(),
            peer,
        })
    });
    let http1 = request.version() < Version::HTTP_2;
    let count = logged.is_some();
    let response = match proxy(snapshot, inbound, request, count, &mut ctx).await {
        Ok(response) => response,
        Err(error) => {
            ctx.fault = Some(error.fault());
            refusal(error, ctx.tenant.as_ref().map(|t| &t.config.name), http1)
        }
    };
    record(snapshot, &ctx, &response);
    access_log::finish(snapshot, ctx, request_id, logged, response)
}

/// The problem response for `error`. An oversized HTTP/1 head also closes the connection: the
/// caller may be trying to wear the connection's buffers down, and nothing it sends next on it is
/// worth reading. So does a body that stalled or broke: the rest of it cannot be found on the
/// connection. (HTTP/2 has no `Connection` header; hyper bounds its header list instead.)
fn refusal(error: ProxyError, tenant: Option<&crate::config::TenantName>, http1: bool) -> Response<ProxyBody> {
    let close = http1 && matches!(error, ProxyError::HeaderTooLarge { .. } | ProxyError::RequestBody(_));
    let mut response = error.into_response(tenant);
    if close {
        (response.headers_mut()).insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn proxy(
    snapshot: &Snapshot,
    inbound: &Inbound,
    request: Request<Incoming>,
    count: bool,
    ctx: &mut RequestCtx,
) -> Result<Response<ProxyBody>, ProxyError> {
    // 1. Route. Not an open proxy: only origin-form requests for our own tenants go anywhere. The
    //    tenant decides every later limit, so it comes first; its path is normalised here, once.
    //    Who is asking comes before which tenant, so a request without a valid key gets 401 for
    //    every path and cannot list tenant names by their 404s; an anonymous listener answers only
    //    local programs, not web pages.
    let (mut parts, body) = request.into_parts();
    check_head_size(&parts, snapshot.server.max_request_head)?;
    refuse_foreign(&parts)?;
    let caller = callers::authenticate(&snapshot.callers, &parts)?;
    ctx.caller = caller.map(|(index, _)| index);
    let caller = caller.map(|(_, caller)| caller);
    if caller.is_none() {
        origin::check(&parts, inbound.loopback, &snapshot.server.allowed_hosts)?;
    }
    // Kept apart from the head, so the path the route borrows outlives the headers' move
    // upstream: a 401 replay builds its URI from it again instead of keeping a copy.
    let target = std::mem::take(&mut parts.uri);
    let (tenant, path) = route(snapshot, &inbound.binding, target.path())?;
    ctx.tenant = Some(Arc::clone(&tenant));
    // 2. Caller: a cheap refusal before we spend a rate-limit slot or a token on the request.
    let class = callers::authorize(caller, &tenant.config.name, &parts.method)?;
    // 3. Limits. A declared body over the cap is refused before any wait; the slot comes before
    //    the token, so a long wait never holds a stale generation; the body is read (when it
    //    may be sent twice: a 401 replay, a refused h2 stream, and the replay budget takes it)
    //    only once the request may go.
    let declared = check_declared_size(&tenant, &parts.headers)?;
    ctx.class = class;
    ctx.rate_limit_wait = wait_for_slot(&tenant, class, ctx.trace.as_deref_mut()).await?;
    let rules = BodyRules {
        budget: &inbound.replay_budget,
        timeout: snapshot.server.body_timeout,
        count,
        signed_form: tenant.signer.is_some() && is_form(&parts.headers),
    };
    let body = prepare_body(&tenant, declared, body, rules).await?;
    ctx.request_bytes = request_bytes(&body);
    // 4. Token: `request_timeout` runs from here to the response head, across a replay too.
    let mut exchange = Exchange::start(&tenant, snapshot.server.request_timeout);
    let token = take_token(&exchange, ctx).await?;
    // 5. Headers: the path rewritten, the caller's credentials and hop-by-hop headers out, the
    //    tenant's fixed headers in (the credential itself goes on at each send, signed afresh
    //    for each attempt where the provider signs requests).
    let (uri, store) = upstream_uri(&tenant, &path, target.query())?;
    exchange.resign = resign(&tenant, &parts, &uri, &body, rules.signed_form);
    headers::sanitize_request(&mut parts.headers);
    add_upstream_headers(&tenant, &mut parts.headers, store);
    // 6. Forward, with the 401 rule.
    let again = || upstream_uri(&tenant, &path, target.query()).map(|(uri, _)| uri);
    let response = forward(&exchange, parts, uri, again, body, token, ctx).await?;
    // 7. Response filter (8, the log, starts in `handle` for answers and errors alike).
    Ok(filter_response(&tenant, response, ctx))
}

/// The request head as it arrived (`headers::head_size`) against the limit. hyper stops reading
/// far above it (see `server`); this is the exact check, made before anything else so an
/// oversized head costs nothing more.
fn check_head_size(request: &Parts, limit: usize) -> Result<(), ProxyError> {
    if headers::head_size(request) > limit {
        return Err(ProxyError::HeaderTooLarge { limit });
    }
    Ok(())
}

fn refuse_foreign(request: &Parts) -> Result<(), ProxyError> {
    if request.method == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed("CONNECT"));
    }
    // HTTP/2 always carries an authority; in HTTP/1 an absolute-form target asks for a forward proxy.
    if request.version < Version::HTTP_2 && request.uri.scheme().is_some() {
        return Err(ProxyError::BadRequest(
            "absolute-form requests are refused: this is not a forward proxy",
        ));
    }
    Ok(())
}

fn route<'r>(
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
    let path = path::normalize(rest).map_err(|e| ProxyError::BadRequest(e.message()))?;
    Ok((tenant, path))
}

/// What the access event says of the request body: its length when it was read, a count the
/// body keeps as it streams, or nothing.
fn request_bytes(body: &PreparedBody) -> RequestBytes {
    match body {
        PreparedBody::Buffered { bytes, .. } => RequestBytes::Read(bytes.len() as u64),
        PreparedBody::Streamed { fate, .. } => fate
            .as_ref()
            .map_or(RequestBytes::None, |fate| RequestBytes::Counted(Arc::clone(fate))),
    }
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

/// The wait for a slot, `None` when the tenant has no limiter; traced as a span of its own.
async fn wait_for_slot(
    tenant: &Tenant,
    class: CallerClass,
    mut trace: Option<&mut RequestTrace>,
) -> Result<Option<Duration>, ProxyError> {
    let Some(limiter) = &tenant.limiter else {
        return Ok(None);
    };
    if let Some(trace) = trace.as_deref_mut() {
        trace.begin();
    }
    let slot = limiter.acquire(class).await;
    if let Some(trace) = trace {
        trace.rate_limit_wait(class.as_str(), slot.is_ok());
    }
    slot.map(Some).map_err(|limited| {
        tenant.metrics.ratelimit_rejected.by(class).fetch_add(1, Relaxed);
        ProxyError::RateLimited {
            retry_after: limited.retry_after,
        }
    })
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
    let target =
        PathAndQuery::try_from(target).map_err(|_| ProxyError::BadRequest("the rewritten path is not a valid URI"))?;
    let store = rewritten.store.and_then(|s| HeaderValue::from_str(s).ok());
    Ok((tenant.upstream.uri(upstream, target), store))
}

/// Whether the body is one Magento signs: its `Content-Type` starts with
/// `application/x-www-form-urlencoded` (case-sensitive, as Magento compares it).
fn is_form(headers: &HeaderMap) -> bool {
    (headers.get(header::CONTENT_TYPE)).is_some_and(|v| v.as_bytes().starts_with(b"application/x-www-form-urlencoded"))
}

/// The per-attempt signer of a request to a tenant that signs requests: everything but the
/// nonce and timestamp is worked out here, once (method, the URL as sent, the query and, for a
/// form, the body's parameters).
fn resign(tenant: &Tenant, parts: &Parts, uri: &Uri, body: &PreparedBody, signed_form: bool) -> Option<Resign> {
    let signer = tenant.signer.as_ref()?;
    let form = match body {
        PreparedBody::Buffered { bytes, .. } if signed_form => Some(&bytes[..]),
        _ => None,
    };
    let prepared = signer.prepare(&parts.method, uri.path(), uri.query(), form);
    Some(Resign(Arc::new(move || prepared.authorization())))
}

fn add_upstream_headers(tenant: &Tenant, headers: &mut HeaderMap, store: Option<HeaderValue>) {
    for (name, value) in &tenant.upstream_headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(store) = store {
        headers.insert(http::HeaderName::from_static("store"), store);
    }
}

/// The current token, waiting (within the exchange's deadline) for a first fetch under way.
async fn take_token(exchange: &Exchange<'_>, ctx: &mut RequestCtx) -> Result<Arc<CurrentToken>, ProxyError> {
    let tokens = &exchange.tenant.tokens;
    let token = match tokens.usable() {
        Some(token) => token,
        None => {
            if let Some(trace) = ctx.trace.as_deref_mut() {
                trace.begin();
            }
            let waiting = Instant::now();
            let token = tokens.current(exchange.timeout).await;
            exchange.tenant.metrics.token_wait.observe(waiting.elapsed());
            if let Some(trace) = &ctx.trace {
                let fetch = token.as_ref().ok().and_then(|t| t.fetch_span.as_ref());
                trace.token_wait("no usable token", fetch);
            }
            token.map_err(ProxyError::TokenUnavailable)?
        }
    };
    ctx.generation = Some(token.generation);
    Ok(token)
}

/// Sends the request with `token`; when the token manager's 401 rule asks for it, once more with
/// the renewed token. Only a body kept for that can be sent twice, so only then are the headers
/// kept for a replay; its URI is built `again` (the first one goes upstream with the request).
async fn forward(
    exchange: &Exchange<'_>,
    parts: Parts,
    uri: Uri,
    again: impl FnOnce() -> Result<Uri, ProxyError>,
    body: PreparedBody,
    token: Arc<CurrentToken>,
    ctx: &mut RequestCtx,
) -> Result<Response<UpstreamResponseBody>, ProxyError> {
    let (first_body, replay, fate) = match body {
        PreparedBody::Buffered { bytes, replay: true } => (
            Either::Left(Full::new(bytes.clone())),
            Some((parts.headers.clone(), bytes)),
            None,
        ),
        PreparedBody::Buffered { bytes, replay: false } => (Either::Left(Full::new(bytes)), None, None),
        PreparedBody::Streamed { body, fate } => (Either::Right(body), None, fate),
    };
    let response = exchange
        .send(&parts.method, uri, parts.headers, first_body, &token, ctx)
        .await
        .map_err(|error| match &fate {
            Some(fate) => blame(fate, error),
            None => error,
        })?;
    let tenant = exchange.tenant;
    if let Some(trace) = ctx.trace.as_deref_mut() {
        trace.begin();
    }
    let renewed = (tenant.tokens)
        .after_response(response.status(), token.generation, replay, exchange.remaining())
        .await;
    let Some(((headers, bytes), newer)) = renewed else {
        return Ok(response);
    };
    let uri = again()?;
    if let Some(trace) = &ctx.trace {
        trace.token_wait("upstream 401", newer.fetch_span.as_ref());
    }
    drop(response);
    ctx.generation = Some(newer.generation);
    ctx.replayed = true;
    tenant.metrics.unauthorized_replays.fetch_add(1, Relaxed);
    let body = Either::Left(Full::new(bytes));
    exchange.send(&parts.method, uri, headers, body, &newer, ctx).await
}

/// Streams the upstream response back without its hop-by-hop headers; 429 pauses the tenant.
fn filter_response(
    tenant: &Tenant,
    response: Response<UpstreamResponseBody>,
    ctx: &mut RequestCtx,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    ctx.upstream_status = Some(parts.status);
    headers::strip_hop_by_hop(&mut parts.headers);
    // The header marks what the proxy answered itself; an upstream's copy would pass its errors
    // off as ours (a caller that trusts it would, say, retry a 502 the upstream meant).
    parts.headers.remove(crate::error::ERROR_HEADER);
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
            // Overrunning a locked store prolongs the lock: every replica holds off too.
            if let Some(limiter) = &tenant.limiter {
                limiter.pause_for(retry_after(&parts.headers).unwrap_or(Duration::from_secs(1)));
            }
        }
        _ => {}
    }
    Response::from_parts(parts, Either::Left(body))
}

/// Seconds or an HTTP-date, capped (`ratelimit::retry_after`).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    crate::ratelimit::retry_after(headers.get(header::RETRY_AFTER)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `make` returns, from its type alone (nothing is built or run).
    fn future_size<A, F, C: FnOnce(A) -> F>(_make: C) -> usize {
        std::mem::size_of::<F>()
    }

    /// hyper moves the request future twice per request (built, then into its in-flight slot),
    /// copying all of it each time. It was 7,536 bytes before the rare large awaits (connecting,
    /// the first request on a new connection, a retried one) were boxed and the upstream sends
    /// stopped holding second copies of the request, and was 4,904 then, in debug and release
    /// builds alike; 5,176 since the caller's body carries its `body_timeout` timer and failure
    /// note through the phases; 5,224 since it carries the request id (echoed on every answer) and
    /// the boxed trace and access-log captures; 5,328 with the webhooks and stores of 2026-12-07,
    /// and 4,408 since the retrying HTTP/2 send (twice the size of the other upstream sends) is
    /// boxed. The bound leaves room for compiler changes and catches an await that makes it grow
    /// back.
    const BOUND: usize = 4_600;

    #[test]
    fn the_request_future_stays_small() {
        let size = future_size::<(&Arc<Snapshot>, &Inbound, SocketAddr, Request<Incoming>), _, _>(|(s, b, p, r)| {
            handle(s, b, p, r)
        });
        assert!(
            size <= BOUND,
            "the request future is {size} bytes, over {BOUND}: box the large, rare await that grew it"
        );
    }
}
