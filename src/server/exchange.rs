//! Phase 6's unit: one exchange with the upstream under the request's `request_timeout`, sent
//! once and, after a 401 renewal, replayed once (`pipeline::forward` decides). Each attempt is
//! traced as a client span whose id the upstream receives in `traceparent`.

use std::time::Duration;

use futures_util::FutureExt;
use http::header::HeaderMap;
use http::{Method, Request, Response, Uri};
use tokio::time::Instant;

use super::access_log::RequestCtx;
use crate::error::ProxyError;
use crate::tenant::Tenant;
use crate::token::CurrentToken;
use crate::upstream::{Resign, UpstreamBody, UpstreamError, UpstreamResponseBody};

/// What stays the same between a request's first attempt and its replay.
pub(super) struct Exchange<'a> {
    pub(super) tenant: &'a Tenant,
    /// `request_timeout` from the token phase on, shared by both attempts.
    deadline: Instant,
    pub(super) timeout: Duration,
    /// For a tenant that signs each request: what signs each attempt (the token's header is
    /// then not used).
    pub(super) resign: Option<Resign>,
}

impl<'a> Exchange<'a> {
    pub(super) fn start(tenant: &'a Tenant, timeout: Duration) -> Self {
        Self {
            tenant,
            deadline: Instant::now() + timeout,
            timeout,
            resign: None,
        }
    }

    pub(super) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// One attempt with `token`; records how long the upstream took to answer, when it did.
    ///
    /// Not `async` itself: the request is built here and moved once, into the upstream's future,
    /// and that future is held once (an `async fn` would also keep its arguments and the request
    /// in the request future, which hyper moves with every request).
    pub(super) fn send<'s>(
        &'s self,
        method: &Method,
        uri: Uri,
        mut headers: HeaderMap,
        body: UpstreamBody,
        token: &CurrentToken,
        ctx: &'s mut RequestCtx,
    ) -> impl Future<Output = Result<Response<UpstreamResponseBody>, ProxyError>> + Send + 's {
        if self.resign.is_none() {
            headers.insert(token.header_name.clone(), token.header_value.clone());
        }
        let span = (ctx.trace.as_ref()).map(|trace| trace.upstream(method, ctx.replayed, &mut headers));
        let mut request = Request::new(body);
        if let Some(resign) = &self.resign {
            // Signed by the upstream's send, once per attempt.
            request.extensions_mut().insert(resign.clone());
        }
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let sent = Instant::now();
        let answer = tokio::time::timeout_at(self.deadline, self.tenant.upstream.send(request));
        answer.map(move |answer| {
            let response = answer
                .map_err(|_| ProxyError::UpstreamTimeout(self.timeout))
                .and_then(|answer| {
                    answer.map_err(|error| match error {
                        UpstreamError::BodyTooLarge => ProxyError::PayloadTooLarge {
                            limit: self.tenant.config.max_body,
                        },
                        UpstreamError::RequestBody(cause) => ProxyError::RequestBody(cause),
                        UpstreamError::Unreachable(cause) => ProxyError::UpstreamUnreachable(cause),
                    })
                });
            if let Some(span) = span {
                span.end(response.as_ref().map(|r| r.status().as_u16()).map_err(ProxyError::code));
            }
            let response = response?;
            ctx.upstream_elapsed = Some(sent.elapsed());
            Ok(response)
        })
    }
}
