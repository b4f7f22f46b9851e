//! The errors the proxy itself answers with, and the one place they become HTTP responses.
//!
//! Every failure of a request ends here as an `application/problem+json` body (RFC 9457) with a
//! `tokenbroker-error: <code>` header, so a caller can tell a proxy-made 502 from the upstream's own.
//! Bodies carry a short human `detail` written by us, never an upstream or IdP body, a token or a
//! secret. Logging happens in the access log, not here.
//!
//! Whose fault a failure is decides its status: a request the caller got wrong, including a body
//! that broke or stalled on its way in ([`RequestBodyError`], downstream), is a 4xx, even when it
//! broke while streaming to the upstream; what the upstream or the IdP did or failed to do, and
//! the proxy's own failures (internal), are 5xx. A cause is kept as the error it was (the token
//! call's [`TokenUnavailable`], the connection's [`Unreachable`]) and turned into text only when
//! it is shown.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};

use crate::config::TenantName;
use crate::token::TokenUnavailable;
pub(crate) use crate::upstream::RequestBodyError;
use crate::upstream::{Unreachable, UpstreamResponseBody};

/// What the proxy sends back: the upstream's streamed body, or one it made itself.
pub(crate) type ProxyBody = Either<UpstreamResponseBody, Full<Bytes>>;

/// Name of the header that marks proxy-made errors.
pub(crate) const ERROR_HEADER: HeaderName = HeaderName::from_static("tokenbroker-error");

/// Whose fault a failure is: it decides the status class (4xx or 5xx) and who must act. The access
/// event and the problem body carry it as `fault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The caller's request: wrong, unauthorised, too large, over its rate, or a body that broke.
    Downstream,
    /// What the proxy depends on: the upstream, or the IdP behind a missing token.
    Upstream,
    /// The proxy itself: a token task that failed and is restarting, a tenant retired by a reload
    /// while the request waited.
    Internal,
}

impl Fault {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Downstream => "downstream",
            Self::Upstream => "upstream",
            Self::Internal => "internal",
        }
    }
}

/// A request the proxy answers itself.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("no tenant is configured for this path")]
    UnknownTenant,
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("a valid caller key is required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("this listener answers only requests addressed to this machine (a loopback Host or localhost)")]
    MisdirectedRequest,
    #[error("this is not a forward proxy: {0} is not supported")]
    MethodNotAllowed(&'static str),
    #[error("the request head is larger than the limit of {limit} bytes")]
    HeaderTooLarge { limit: usize },
    #[error("the request body is larger than the tenant's limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("the tenant's rate limit is exhausted")]
    RateLimited { retry_after: Duration },
    #[error("no valid upstream token: {0}")]
    TokenUnavailable(TokenUnavailable),
    #[error("the upstream could not be reached: {0}")]
    UpstreamUnreachable(Unreachable),
    #[error("the upstream did not answer within {0:?}")]
    UpstreamTimeout(Duration),
    /// The caller's body stalled (408) or broke (400): the fault is downstream, whether the proxy
    /// was buffering the body or streaming it to the upstream (which then saw it aborted).
    #[error(transparent)]
    RequestBody(RequestBodyError),
}

impl ProxyError {
    /// The stable code carried in `tokenbroker-error` and the problem `type`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::UnknownTenant => "unknown_tenant",
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::MisdirectedRequest => "misdirected_request",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::HeaderTooLarge { .. } => "header_too_large",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::TokenUnavailable(_) => "token_unavailable",
            Self::UpstreamUnreachable(_) => "upstream_unreachable",
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::RequestBody(RequestBodyError::Stalled(_)) => "body_timeout",
            Self::RequestBody(RequestBodyError::Broken) => "bad_request",
        }
    }

    /// Whose fault it is (see [`Fault`]); a test holds it to the status class.
    pub(crate) fn fault(&self) -> Fault {
        match self {
            Self::TokenUnavailable(cause) if cause.is_internal() => Fault::Internal,
            Self::TokenUnavailable(_) | Self::UpstreamUnreachable(_) | Self::UpstreamTimeout(_) => Fault::Upstream,
            Self::UnknownTenant
            | Self::BadRequest(_)
            | Self::Unauthorized
            | Self::Forbidden(_)
            | Self::MisdirectedRequest
            | Self::MethodNotAllowed(_)
            | Self::HeaderTooLarge { .. }
            | Self::PayloadTooLarge { .. }
            | Self::RateLimited { .. }
            | Self::RequestBody(_) => Fault::Downstream,
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::UnknownTenant => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::HeaderTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::TokenUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::RequestBody(RequestBodyError::Stalled(_)) => StatusCode::REQUEST_TIMEOUT,
            Self::RequestBody(RequestBodyError::Broken) => StatusCode::BAD_REQUEST,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::UnknownTenant => "Unknown tenant",
            Self::BadRequest(_) => "Bad request",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden(_) => "Forbidden",
            Self::MisdirectedRequest => "Misdirected request",
            Self::MethodNotAllowed(_) => "Method not allowed",
            Self::HeaderTooLarge { .. } => "Request header fields too large",
            Self::PayloadTooLarge { .. } => "Payload too large",
            Self::RateLimited { .. } => "Rate limited",
            Self::TokenUnavailable(_) => "Token unavailable",
            Self::UpstreamUnreachable(_) => "Upstream unreachable",
            Self::UpstreamTimeout(_) => "Upstream timeout",
            Self::RequestBody(RequestBodyError::Stalled(_)) => "Request body timeout",
            Self::RequestBody(RequestBodyError::Broken) => "Bad request",
        }
    }

    /// The one mapping from error to response.
    pub(crate) fn into_response(self, tenant: Option<&TenantName>) -> Response<ProxyBody> {
        let status = self.status();
        let mut problem = serde_json::json!({
            "type": format!("urn:tokenbroker:error:{}", self.code()),
            "title": self.title(),
            "status": status.as_u16(),
            "detail": self.to_string(),
            "fault": self.fault().as_str(),
        });
        if let Some(tenant) = tenant {
            problem["tenant"] = serde_json::Value::from(tenant.as_str());
        }
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(problem.to_string()))));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        if let Self::RateLimited { retry_after } = self {
            // Whole seconds, rounded up: a client that waits this long will find a slot.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fault_decides_the_status_class() {
        let every = [
            ProxyError::UnknownTenant,
            ProxyError::BadRequest("x"),
            ProxyError::Unauthorized,
            ProxyError::Forbidden("x"),
            ProxyError::MisdirectedRequest,
            ProxyError::MethodNotAllowed("CONNECT"),
            ProxyError::HeaderTooLarge { limit: 1 },
            ProxyError::PayloadTooLarge { limit: 1 },
            ProxyError::RateLimited {
                retry_after: Duration::from_secs(1),
            },
            ProxyError::TokenUnavailable(TokenUnavailable::Timeout(Duration::from_secs(1))),
            ProxyError::TokenUnavailable(TokenUnavailable::ShuttingDown),
            ProxyError::UpstreamUnreachable(Unreachable::new("refused")),
            ProxyError::UpstreamTimeout(Duration::from_secs(1)),
            ProxyError::RequestBody(RequestBodyError::Stalled(Duration::from_secs(1))),
            ProxyError::RequestBody(RequestBodyError::Broken),
        ];
        for error in every {
            let client = error.status().is_client_error();
            assert_eq!(client, error.fault() == Fault::Downstream, "{}", error.code());
            // Only the proxy's own failures are internal, and they are never the caller's.
            let internal = matches!(error, ProxyError::TokenUnavailable(TokenUnavailable::ShuttingDown));
            assert_eq!(internal, error.fault() == Fault::Internal, "{}", error.code());
            assert!(client || error.status().is_server_error(), "{}", error.code());
        }
    }

    #[test]
    fn problem_json_carries_code_status_and_tenant() {
        let tenant = TenantName::try_new("acme").expect("valid name");
        let response = ProxyError::RateLimited {
            retry_after: Duration::from_millis(1200),
        }
        .into_response(Some(&tenant));
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[ERROR_HEADER], "rate_limited");
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        let Either::Right(body) = response.into_body() else {
            panic!("proxy-made body")
        };
        let bytes = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(body))
            .expect("full body is ready")
            .expect("infallible")
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json body");
        assert_eq!(json["status"], 429);
        assert_eq!(json["tenant"], "acme");
        assert_eq!(json["type"], "urn:tokenbroker:error:rate_limited");
        assert_eq!(json["fault"], "downstream");
    }
}
