//! The HTTP/JSON surface, mapped from the protos.
//!
//! Every RPC with an `option (twig.api.v1.http)` route is served at that
//! method and path. The request message is read from the JSON body (POST,
//! PATCH) or the query string (GET, DELETE), `{field}` path segments fill
//! the request's fields of that name, and the message goes to the same
//! gRPC route a gRPC client would reach — through the auth layer, so the
//! decision (credential, declared caller, allowlists, quota) is the same
//! one. The answer is the response message as proto3 JSON, or an error
//! body with the HTTP status of the gRPC code; 429 carries `Retry-After`
//! and `RateLimit-Limit` / `-Remaining` / `-Reset`. Each answer carries
//! its route's template ([`MatchedPath`]) in its extensions, the one
//! label the request metrics take from it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body as HttpBody;
use axum::extract::{MatchedPath, RawPathParams, Request};
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use tonic_types::StatusExt;
use twig_errors::ErrorCode;

/// Largest JSON body read.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Request headers that travel on to the gRPC call.
const FORWARDED: [&str; 4] = [
    "authorization",
    "x-twig-internal-token",
    "x-forwarded-for",
    "user-agent",
];

/// Why the HTTP routes cannot be built; the server does not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The descriptor set does not decode.
    #[error("the API descriptor set does not decode: {0}")]
    Descriptor(String),
    /// The route option is missing from the descriptor set.
    #[error("the descriptor set has no twig.api.v1.http option")]
    NoOption,
    /// A route option without a method and path.
    #[error("{0}: the http option names no method and path")]
    Empty(String),
}

/// One HTTP route and the RPC behind it.
struct Route {
    grpc_path: String,
    input: MessageDescriptor,
    output: MessageDescriptor,
    /// The request comes in the body (POST, PATCH), else the query.
    from_body: bool,
}

/// The HTTP routes of every RPC that declares one, each calling `grpc`
/// (the gRPC routes behind the auth layer).
pub fn router<S>(descriptor_set: &[u8], grpc: S) -> Result<Router, GatewayError>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let pool = DescriptorPool::decode(descriptor_set)
        .map_err(|e| GatewayError::Descriptor(e.to_string()))?;
    let option = pool
        .get_extension_by_name("twig.api.v1.http")
        .ok_or(GatewayError::NoOption)?;
    let mut by_path: BTreeMap<String, MethodRouter> = BTreeMap::new();
    for service in pool.services() {
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&option) {
                continue;
            }
            let grpc_path = format!("/{}/{}", service.full_name(), method.name());
            let rule = options.get_extension(&option);
            let (verb, path) = match rule.as_ref() {
                Value::Message(rule) => ["get", "post", "patch", "delete"]
                    .into_iter()
                    .find_map(|verb| {
                        let field = rule.descriptor().get_field_by_name(verb)?;
                        rule.has_field(&field)
                            .then(|| {
                                rule.get_field(&field)
                                    .as_str()
                                    .map(|p| (verb, p.to_string()))
                            })
                            .flatten()
                    })
                    .ok_or_else(|| GatewayError::Empty(grpc_path.clone()))?,
                _ => return Err(GatewayError::Empty(grpc_path)),
            };
            let filter = match verb {
                "get" => MethodFilter::GET,
                "post" => MethodFilter::POST,
                "patch" => MethodFilter::PATCH,
                _ => MethodFilter::DELETE,
            };
            let route = Arc::new(Route {
                grpc_path,
                input: method.input(),
                output: method.output(),
                from_body: matches!(verb, "post" | "patch"),
            });
            let grpc = grpc.clone();
            let handler = move |params: RawPathParams, request: Request| {
                let route = route.clone();
                let grpc = grpc.clone();
                async move {
                    // The route's template names the request in the
                    // metrics (twig-server's TraceLayer reads it).
                    let template = request.extensions().get::<MatchedPath>().cloned();
                    let mut response = match call(&route, grpc, params, request).await {
                        Ok(response) => response,
                        Err(refused) => refused,
                    };
                    if let Some(template) = template {
                        response.extensions_mut().insert(template);
                    }
                    response
                }
            };
            let entry = by_path.remove(&path).unwrap_or_default();
            by_path.insert(path, entry.on(filter, handler));
        }
    }
    Ok(by_path
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(&path, methods)
        }))
}

async fn call<S>(
    route: &Route,
    grpc: S,
    params: RawPathParams,
    request: Request,
) -> Result<Response, Response>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
{
    let (parts, body) = request.into_parts();
    let mut fields = if route.from_body {
        let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "the body is over 4 MiB",
            )
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            serde_json::Map::new()
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => return Err(invalid("the body must be a JSON object")),
            }
        }
    } else {
        query_fields(parts.uri.query().unwrap_or("")).map_err(|e| invalid(&e))?
    };
    for (name, value) in params.iter() {
        fields.insert(
            name.to_string(),
            serde_json::Value::String(value.to_string()),
        );
    }
    let message =
        DynamicMessage::deserialize(route.input.clone(), serde_json::Value::Object(fields))
            .map_err(|e| invalid(&format!("not a valid {} in JSON: {e}", route.input.name())))?;

    let payload = message.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + payload.len());
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(&payload);
    let mut call = http::Request::builder()
        .method(Method::POST)
        .uri(route.grpc_path.as_str())
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers");
    for name in FORWARDED {
        for value in parts.headers.get_all(name) {
            call = call.header(name, value);
        }
    }
    let mut call = call
        .body(tonic::body::Body::new(http_body_util::Full::new(
            Bytes::from(framed),
        )))
        .map_err(|_| invalid("a header cannot be forwarded"))?;
    if let Some(info) = parts
        .extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
    {
        call.extensions_mut().insert(info.clone());
    }

    let answer = tower::ServiceExt::oneshot(grpc, call)
        .await
        .unwrap_or_else(|never| match never {});
    let (answer, body) = answer.into_parts();
    let collected = body.collect().await.map_err(|_| {
        error(
            StatusCode::BAD_GATEWAY,
            "INTERNAL",
            "the service's answer was cut off",
        )
    })?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();
    let status = tonic::Status::from_header_map(&answer.headers)
        .or_else(|| tonic::Status::from_header_map(&trailers))
        .unwrap_or_else(|| tonic::Status::internal("the service sent no gRPC status"));
    if status.code() != tonic::Code::Ok {
        return Err(status_response(&status));
    }
    let message = unframe(&data)
        .and_then(|bytes| DynamicMessage::decode(route.output.clone(), bytes).ok())
        .ok_or_else(|| {
            error(
                StatusCode::BAD_GATEWAY,
                "INTERNAL",
                "the service's answer does not decode",
            )
        })?;
    let json = serde_json::to_vec(&message).map_err(|_| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "the answer cannot be written as JSON",
        )
    })?;
    Ok(json_response(StatusCode::OK, json))
}

/// The message of a single uncompressed gRPC frame.
fn unframe(data: &[u8]) -> Option<&[u8]> {
    let (head, rest) = data.split_at_checked(5)?;
    let len = u32::from_be_bytes(head[1..5].try_into().ok()?) as usize;
    (head[0] == 0 && rest.len() >= len).then(|| &rest[..len])
}

/// Query parameters as JSON string values (proto3 JSON reads numbers and
/// enums from strings too). A name given twice is refused.
fn query_fields(query: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut fields = serde_json::Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (percent_decode(name)?, percent_decode(value)?);
        if fields
            .insert(name.clone(), serde_json::Value::String(value))
            .is_some()
        {
            return Err(format!("query parameter {name:?} is given twice"));
        }
    }
    Ok(fields)
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("the query string has a bad %-escape")?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "the query string is not UTF-8".to_string())
}

fn invalid(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "code": code, "message": message });
    json_response(status, body.to_string().into_bytes())
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(HttpBody::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A gRPC error as HTTP: the status of its code, a JSON body with the
/// code, message and field violations, and the retry headers.
fn status_response(status: &tonic::Status) -> Response {
    let code = ErrorCode::from_grpc(status.code());
    let details = status.get_error_details();
    let mut body = serde_json::json!({
        "code": twig_errors::grpc_code_name(status.code()),
        "message": status.message(),
    });
    if let Some(bad) = details.bad_request() {
        body["fieldViolations"] = bad
            .field_violations
            .iter()
            .map(|v| serde_json::json!({ "field": v.field, "description": v.description }))
            .collect();
    }
    let mut response = json_response(code.http(), body.to_string().into_bytes());
    let headers: &mut HeaderMap = response.headers_mut();
    if let Some(delay) = details.retry_info().and_then(|r| r.retry_delay) {
        headers.insert(
            header::RETRY_AFTER,
            twig_errors::whole_seconds_up(delay).into(),
        );
    }
    for name in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
        if let Some(value) = status.metadata().get(name).and_then(|v| v.to_str().ok())
            && let Ok(value) = HeaderValue::from_str(value)
        {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every declared route reaches its RPC, with path fields and the
    /// query in the message.
    #[tokio::test]
    async fn routes_come_from_the_protos() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let grpc = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
            let record = record.clone();
            async move {
                let path = req.uri().path().to_string();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                record.lock().unwrap().push((path, body.to_vec()));
                let mut answer = http::Response::new(tonic::body::Body::new(
                    http_body_util::Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])),
                ));
                answer
                    .headers_mut()
                    .insert("grpc-status", HeaderValue::from_static("0"));
                Ok::<_, Infallible>(answer)
            }
        });
        let router = router(twig_proto::FILE_DESCRIPTOR_SET, grpc).unwrap();
        for (method, uri, grpc_path) in [
            (
                "GET",
                "/v1/me",
                "/twig.sessions.v1.SessionService/GetCurrentUser",
            ),
            (
                "GET",
                "/v1/api-keys/k-1",
                "/twig.apikeys.v1.ApiKeyService/GetApiKey",
            ),
            (
                "DELETE",
                "/v1/api-keys/k-1",
                "/twig.apikeys.v1.ApiKeyService/RevokeApiKey",
            ),
            (
                "GET",
                "/v1/api-keys?pageSize=7",
                "/twig.apikeys.v1.ApiKeyService/ListApiKeys",
            ),
        ] {
            let request = http::Request::builder()
                .method(method)
                .uri(uri)
                .body(HttpBody::empty())
                .unwrap();
            let response = tower::ServiceExt::oneshot(router.clone(), request)
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{method} {uri}");
            let (path, _) = seen.lock().unwrap().last().cloned().unwrap();
            assert_eq!(path, grpc_path);
        }
        let calls = seen.lock().unwrap().clone();
        // GetApiKey {key_id: "k-1"}: field 1, length 3.
        assert_eq!(calls[1].1, [0, 0, 0, 0, 5, 0x0a, 3, b'k', b'-', b'1']);
        // ListApiKeys {page_size: 7}.
        assert_eq!(calls[3].1, [0, 0, 0, 0, 2, 0x08, 7]);
        // A method the route does not declare.
        let wrong = http::Request::builder()
            .method("PUT")
            .uri("/v1/me")
            .body(HttpBody::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(router, wrong).await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn frames_and_queries_are_read_strictly() {
        assert_eq!(unframe(&[0, 0, 0, 0, 2, 8, 1]), Some(&[8u8, 1][..]));
        assert_eq!(
            unframe(&[0, 0, 0, 0, 9, 8, 1]),
            None,
            "shorter than it says"
        );
        assert_eq!(unframe(&[1, 0, 0, 0, 0]), None, "compressed");
        assert_eq!(unframe(&[0, 0]), None);
        let fields = query_fields("page_size=10&page_token=a%2Bb+c").unwrap();
        assert_eq!(fields["page_size"], "10");
        assert_eq!(fields["page_token"], "a+b c");
        assert!(query_fields("a=1&a=2").is_err());
        assert!(query_fields("a=%zz").is_err());
        assert!(query_fields("a=%ff").is_err());
    }
}
