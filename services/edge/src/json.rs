//! The HTTP/JSON surface, mapped from the protos' standard
//! `option (google.api.http)` rules as the API's catalogue
//! ([`twig_proto::catalogue::Catalogue`]) holds them.
//!
//! Every binding of a rule (the rule and its `additional_bindings`) is
//! served at its method and path template. Path variables `{field.path}`
//! fill (possibly nested) request fields; `body: "*"` reads the whole
//! request from the JSON body, `body: "field"` puts the JSON body in that
//! field, and every field bound by neither comes from the query string
//! (`a.b=…`, a repeated field by naming it again). A custom verb after a
//! literal (`/v1/sessions:login`) is part of the route; after a variable
//! (`/v1/api-keys/{key_id}:rotate`) it is matched here, since the router
//! takes variables as whole segments. The message goes to the same gRPC
//! route a gRPC client would reach — through the auth layer, so the
//! decision (credential, declared caller, allowlists, quota) is the same
//! one. The answer is the response message as proto3 JSON, or an error
//! body (`{"code", "message", "fieldViolations"}`) with the HTTP status of
//! the gRPC code; 429 carries `Retry-After` and `RateLimit-Limit` /
//! `-Remaining` / `-Reset`. Unknown paths are 404 and undeclared methods
//! 405, with the same error body. Each answer carries its route's template
//! ([`MatchedPath`]; a variable's verb is not in it) in its extensions,
//! the one label the request metrics take from it.
//!
//! `GET /openapi.json` serves the OpenAPI document the build writes from
//! the same rules ([`twig_proto::OPENAPI_JSON`]).

use std::collections::{BTreeMap, HashSet};
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
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use tonic_types::StatusExt;
use twig_errors::ErrorCode;
use twig_proto::catalogue::Catalogue;
use twig_proto::google::api::{HttpRule, http_rule::Pattern};
use twig_proto::http_template::{PathTemplate, Segment};

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
    /// A rule that cannot be served as written.
    #[error("{rpc}: {reason}")]
    Rule {
        /// The RPC (`/package.Service/Method`).
        rpc: String,
        /// What is wrong.
        reason: String,
    },
    /// Two bindings with one method and template.
    #[error("{0} is declared twice")]
    Duplicate(String),
}

/// One HTTP binding of an RPC, as its rule declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The HTTP method.
    pub method: Method,
    /// The path template as OpenAPI writes it (`/v1/api-keys/{key_id}`).
    pub template: String,
    /// The RPC (`/package.Service/Method`).
    pub rpc: String,
}

/// Where the request message is read from, besides the path.
#[derive(Debug, Clone)]
enum Body {
    /// The query string.
    None,
    /// The whole message from the JSON body.
    All,
    /// This field from the JSON body, the rest from the query string.
    Field(FieldDescriptor),
}

/// One HTTP binding and the RPC behind it.
#[derive(Debug)]
struct Route {
    binding: Binding,
    input: MessageDescriptor,
    output: MessageDescriptor,
    body: Body,
    /// Each path variable: the router's parameter name and the field path.
    variables: Vec<(String, Vec<FieldDescriptor>)>,
    /// A verb after the last variable, matched and cut off here.
    verb: Option<String>,
}

/// The HTTP bindings of every RPC that declares a rule, in the
/// catalogue's order.
#[cfg(test)]
pub fn bindings(catalogue: &Catalogue) -> Result<Vec<Binding>, GatewayError> {
    Ok(routes(catalogue)?
        .into_iter()
        .map(|(_, route)| route.binding)
        .collect())
}

/// Every binding with the router path it is served at.
fn routes(catalogue: &Catalogue) -> Result<Vec<(String, Route)>, GatewayError> {
    let mut routes = Vec::new();
    let mut seen = HashSet::new();
    for rpc in catalogue.rpcs() {
        let Some(rule) = &rpc.http else {
            continue;
        };
        let fail = |reason: String| GatewayError::Rule {
            rpc: rpc.path.clone(),
            reason,
        };
        if rule
            .additional_bindings
            .iter()
            .any(|b| !b.additional_bindings.is_empty())
        {
            return Err(fail("an additional binding has bindings of its own".into()));
        }
        let (input, output) = (rpc.method.input(), rpc.method.output());
        for binding in std::iter::once(rule).chain(&rule.additional_bindings) {
            let (path, route) = route(&rpc.path, &input, &output, binding).map_err(fail)?;
            let key = format!("{} {}", route.binding.method, route.binding.template);
            if !seen.insert(key.clone()) {
                return Err(GatewayError::Duplicate(key));
            }
            routes.push((path, route));
        }
    }
    Ok(routes)
}

fn route(
    rpc: &str,
    input: &MessageDescriptor,
    output: &MessageDescriptor,
    rule: &HttpRule,
) -> Result<(String, Route), String> {
    let (method, template) = match &rule.pattern {
        Some(Pattern::Get(t)) => (Method::GET, t),
        Some(Pattern::Put(t)) => (Method::PUT, t),
        Some(Pattern::Post(t)) => (Method::POST, t),
        Some(Pattern::Delete(t)) => (Method::DELETE, t),
        Some(Pattern::Patch(t)) => (Method::PATCH, t),
        Some(Pattern::Custom(_)) => return Err("custom HTTP methods are not served".into()),
        None => return Err("the http rule names no method and path".into()),
    };
    if !rule.response_body.is_empty() {
        return Err("response_body is not served".into());
    }
    let parsed = PathTemplate::parse(template).map_err(|e| e.to_string())?;
    let body = match rule.body.as_str() {
        "" => Body::None,
        _ if method == Method::GET => return Err("a GET rule takes no body".into()),
        "*" => Body::All,
        name => Body::Field(
            input
                .get_field_by_name(name)
                .ok_or_else(|| format!("body names no field of {}: {name}", input.name()))?,
        ),
    };
    let mut path = String::new();
    let mut variables = Vec::new();
    for segment in &parsed.segments {
        path.push('/');
        match segment {
            Segment::Literal(text) => path.push_str(text),
            Segment::Variable { field, rest } => {
                let name = field.join(".");
                let fields = field_path(input, field)?;
                path.push_str(&if *rest {
                    format!("{{*{name}}}")
                } else {
                    format!("{{{name}}}")
                });
                variables.push((name, fields));
            }
        }
    }
    let verb = match (&parsed.verb, parsed.segments.last()) {
        (Some(verb), Some(Segment::Literal(_))) => {
            path.push(':');
            path.push_str(verb);
            None
        }
        (verb, _) => verb.clone(),
    };
    let route = Route {
        binding: Binding {
            method,
            template: parsed.openapi_path(),
            rpc: rpc.to_string(),
        },
        input: input.clone(),
        output: output.clone(),
        body,
        variables,
        verb,
    };
    Ok((path, route))
}

/// The fields of a path variable, through singular message fields to a
/// singular scalar.
fn field_path(input: &MessageDescriptor, names: &[String]) -> Result<Vec<FieldDescriptor>, String> {
    let mut message = input.clone();
    let mut fields = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let field = message
            .get_field_by_name(name)
            .ok_or_else(|| format!("{} has no field {name}", message.full_name()))?;
        if field.is_list() || field.is_map() {
            return Err(format!(
                "path variable {}: {name} is repeated",
                names.join(".")
            ));
        }
        match (field.kind(), i + 1 == names.len()) {
            (Kind::Message(next), false) => message = next,
            (Kind::Message(_), true) | (_, false) => {
                return Err(format!(
                    "path variable {} must end at a scalar field",
                    names.join(".")
                ));
            }
            (_, true) => {}
        }
        fields.push(field);
    }
    Ok(fields)
}

/// The HTTP routes of every RPC of `catalogue` that declares one, each
/// calling `grpc` (the gRPC routes behind the auth layer), and
/// `GET /openapi.json`.
pub fn router<S>(catalogue: &Catalogue, grpc: S) -> Result<Router, GatewayError>
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
    // Bindings that share a router path and method (a variable's verbs)
    // share one handler, which picks by verb.
    let mut groups: BTreeMap<(String, Method), Vec<Arc<Route>>> = BTreeMap::new();
    for (path, route) in routes(catalogue)? {
        groups
            .entry((path, route.binding.method.clone()))
            .or_default()
            .push(Arc::new(route));
    }
    let mut by_path: BTreeMap<String, MethodRouter> = BTreeMap::new();
    for ((path, method), mut candidates) in groups {
        // A verb that matches comes before the plain variable.
        candidates.sort_by_key(|r| r.verb.is_none());
        let candidates: Arc<[Arc<Route>]> = candidates.into();
        let grpc = grpc.clone();
        let handler = move |params: RawPathParams, request: Request| {
            let candidates = candidates.clone();
            let grpc = grpc.clone();
            async move {
                // The route's template names the request in the
                // metrics (twig-server's TraceLayer reads it).
                let template = request.extensions().get::<MatchedPath>().cloned();
                let params: Vec<(String, String)> = params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let raw_path = request.uri().path().to_string();
                let mut response = match pick(&candidates, params, &raw_path) {
                    Some((route, params)) => match call(route, grpc, params, request).await {
                        Ok(response) => response,
                        Err(refused) => refused,
                    },
                    None => not_found(request.method(), request.uri().path()),
                };
                if let Some(template) = template {
                    response.extensions_mut().insert(template);
                }
                response
            }
        };
        let filter = MethodFilter::try_from(method.clone()).map_err(|_| GatewayError::Rule {
            rpc: path.clone(),
            reason: format!("{method} cannot be routed"),
        })?;
        let entry = by_path.remove(&path).unwrap_or_default();
        by_path.insert(path, entry.on(filter, handler));
    }
    let openapi = |request: Request| async move {
        let mut response = json_response(StatusCode::OK, twig_proto::OPENAPI_JSON.into());
        if let Some(template) = request.extensions().get::<MatchedPath>() {
            response.extensions_mut().insert(template.clone());
        }
        response
    };
    by_path.insert("/openapi.json".to_string(), axum::routing::get(openapi));
    Ok(by_path
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(&path, methods)
        })
        .method_not_allowed_fallback(|request: Request| async move {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                &format!(
                    "{} is not a method of {}",
                    request.method(),
                    request.uri().path()
                ),
            )
        })
        .fallback(
            |request: Request| async move { not_found(request.method(), request.uri().path()) },
        ))
}

/// The binding a request reaches among those of one router path and
/// method, and its path parameters with the verb cut off. The verb is
/// read from the path as sent (`raw_path`): a percent-encoded colon
/// (`%3A`) is part of the variable's value, never the verb separator, so
/// a filter in front of the server sees the same verb this router does.
fn pick<'r>(
    candidates: &'r [Arc<Route>],
    params: Vec<(String, String)>,
    raw_path: &str,
) -> Option<(&'r Route, Vec<(String, String)>)> {
    for route in candidates {
        let Some(verb) = &route.verb else {
            return Some((route, params));
        };
        let sent_with_verb = raw_path
            .strip_suffix(verb.as_str())
            .is_some_and(|rest| rest.ends_with(':'));
        if !sent_with_verb {
            continue;
        }
        let mut params = params.clone();
        let (name, _) = route.variables.last()?;
        let (_, last) = params.iter_mut().find(|(n, _)| n == name)?;
        if let Some(value) = last
            .strip_suffix(verb.as_str())
            .and_then(|v| v.strip_suffix(':'))
            && !value.is_empty()
        {
            *last = value.to_string();
            return Some((route, params));
        }
    }
    None
}

fn not_found(method: &Method, path: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        &format!("no route for {method} {path}"),
    )
}

async fn call<S>(
    route: &Route,
    grpc: S,
    params: Vec<(String, String)>,
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
    let body = match route.body {
        Body::None => None,
        Body::All | Body::Field(_) => {
            let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    "the body is over 4 MiB",
                )
            })?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                Some(
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                        .map_err(|e| invalid(&format!("the body is not JSON: {e}")))?,
                )
            }
        }
    };
    let fields = request_fields(route, parts.uri.query().unwrap_or(""), body, &params)
        .map_err(|e| invalid(&e))?;
    let message = DynamicMessage::deserialize(route.input.clone(), fields)
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
        .uri(route.binding.rpc.as_str())
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

/// The request message as JSON: the body where the rule takes one, the
/// query string for the fields it does not, then the path variables.
fn request_fields(
    route: &Route,
    query: &str,
    body: Option<serde_json::Value>,
    params: &[(String, String)],
) -> Result<serde_json::Value, String> {
    let mut fields = serde_json::Map::new();
    match (&route.body, body) {
        (Body::All, None) => {}
        (Body::All, Some(serde_json::Value::Object(map))) => fields = map,
        (Body::All, Some(_)) => return Err("the body must be a JSON object".into()),
        (Body::None, _) => query_fields(&mut fields, &route.input, query)?,
        (Body::Field(field), body) => {
            query_fields(&mut fields, &route.input, query)?;
            if fields.contains_key(field.json_name()) || fields.contains_key(field.name()) {
                return Err(format!("{} comes in the body, not the query", field.name()));
            }
            if let Some(body) = body {
                fields.insert(field.json_name().to_string(), body);
            }
        }
    }
    for (name, path) in &route.variables {
        let value = params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("the path has no {name}"))?;
        set_path(&mut fields, path, value)?;
    }
    Ok(serde_json::Value::Object(fields))
}

/// Sets the field at `path` (a path variable) to `value`, replacing what
/// the body said under either of its names.
fn set_path(
    fields: &mut serde_json::Map<String, serde_json::Value>,
    path: &[FieldDescriptor],
    value: &str,
) -> Result<(), String> {
    let Some((field, rest)) = path.split_first() else {
        return Ok(());
    };
    let by_name = fields.remove(field.name());
    let by_json = fields.remove(field.json_name());
    if rest.is_empty() {
        fields.insert(field.json_name().to_string(), scalar(field, value));
        return Ok(());
    }
    let mut inner = match by_json.or(by_name) {
        None | Some(serde_json::Value::Null) => serde_json::Map::new(),
        Some(serde_json::Value::Object(map)) => map,
        Some(_) => return Err(format!("{} must be a JSON object", field.name())),
    };
    set_path(&mut inner, rest, value)?;
    fields.insert(
        field.json_name().to_string(),
        serde_json::Value::Object(inner),
    );
    Ok(())
}

/// A path or query value as the JSON value of `field`: booleans as
/// booleans, everything else as a string (proto3 JSON reads numbers,
/// enums, timestamps and durations from strings).
fn scalar(field: &FieldDescriptor, value: &str) -> serde_json::Value {
    match (field.kind(), value) {
        (Kind::Bool, "true") => serde_json::Value::Bool(true),
        (Kind::Bool, "false") => serde_json::Value::Bool(false),
        _ => serde_json::Value::String(value.to_string()),
    }
}

/// The query string into `fields`: each name a field path of `message`
/// (`a.b`, proto or JSON names) ending at a scalar, an enum, a well-known
/// type or a list of them. A repeated field takes each value given; any
/// other name given twice, or a name that is no such field, is refused.
fn query_fields(
    fields: &mut serde_json::Map<String, serde_json::Value>,
    message: &MessageDescriptor,
    query: &str,
) -> Result<(), String> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (percent_decode(name)?, percent_decode(value)?);
        let unknown = || {
            format!(
                "query parameter {name:?} is not a field of {}",
                message.name()
            )
        };
        let mut target = &mut *fields;
        let mut current = message.clone();
        let mut parts = name.split('.').peekable();
        while let Some(part) = parts.next() {
            let field = current
                .get_field_by_name(part)
                .or_else(|| current.get_field_by_json_name(part))
                .ok_or_else(unknown)?;
            let key = field.json_name().to_string();
            let well_known = matches!(field.kind(), Kind::Message(m) if m.full_name().starts_with("google.protobuf."));
            if parts.peek().is_some() {
                let Kind::Message(next) = field.kind() else {
                    return Err(unknown());
                };
                if field.is_list() || field.is_map() || well_known {
                    return Err(unknown());
                }
                current = next;
                let entry = target
                    .entry(key)
                    .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
                target = entry.as_object_mut().ok_or_else(unknown)?;
                continue;
            }
            if field.is_map() || (matches!(field.kind(), Kind::Message(_)) && !well_known) {
                return Err(format!("{name:?} cannot be given in the query"));
            }
            let value = scalar(&field, &value);
            match target.get_mut(&key) {
                None if field.is_list() => {
                    target.insert(key, serde_json::Value::Array(vec![value]));
                }
                None => {
                    target.insert(key, value);
                }
                Some(serde_json::Value::Array(list)) if field.is_list() => list.push(value),
                Some(_) => return Err(format!("query parameter {name:?} is given twice")),
            }
        }
    }
    Ok(())
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

    type Calls = Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

    /// A router whose gRPC side records each call and answers OK with an
    /// empty message.
    fn recording_router() -> (Router, Calls) {
        let seen: Calls = Arc::default();
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
        (router(Catalogue::get(), grpc).unwrap(), seen)
    }

    async fn send(router: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, Response) {
        let request = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(HttpBody::from(body.to_string()))
            .unwrap();
        let response = tower::ServiceExt::oneshot(router.clone(), request)
            .await
            .unwrap();
        (response.status(), response)
    }

    async fn json_of(response: Response) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Every declared route reaches its RPC, with path fields, the body
    /// and the query in the message.
    #[tokio::test]
    async fn routes_come_from_the_protos() {
        let (router, seen) = recording_router();
        for (method, uri, body, grpc_path, message) in [
            (
                "GET",
                "/v1/me",
                "",
                "/twig.sessions.v1.SessionService/GetCurrentUser",
                &[][..],
            ),
            // GetApiKey {key_id: "k-1"}: field 1, length 3.
            (
                "GET",
                "/v1/api-keys/k-1",
                "",
                "/twig.apikeys.v1.ApiKeyService/GetApiKey",
                &[0x0a, 3, b'k', b'-', b'1'][..],
            ),
            (
                "DELETE",
                "/v1/api-keys/k-1",
                "",
                "/twig.apikeys.v1.ApiKeyService/RevokeApiKey",
                &[0x0a, 3, b'k', b'-', b'1'][..],
            ),
            // ListApiKeys {page_size: 7}.
            (
                "GET",
                "/v1/api-keys?pageSize=7",
                "",
                "/twig.apikeys.v1.ApiKeyService/ListApiKeys",
                &[0x08, 7][..],
            ),
            // The path wins over the body; an additional binding with a verb.
            (
                "POST",
                "/v1/api-keys/k-1:rotate",
                r#"{"keyId":"other","overlapSeconds":9}"#,
                "/twig.apikeys.v1.ApiKeyService/RotateApiKey",
                &[0x0a, 3, b'k', b'-', b'1', 0x10, 9][..],
            ),
            (
                "POST",
                "/v1/api-keys/k-1/rotate",
                "",
                "/twig.apikeys.v1.ApiKeyService/RotateApiKey",
                &[0x0a, 3, b'k', b'-', b'1'][..],
            ),
            // SetMemberRole {organization_id: "o", user_id: "u", role: ADMIN}:
            // two path variables, then a verb.
            (
                "POST",
                "/v1/organizations/o/members/u:setRole",
                r#"{"role":"ROLE_ADMIN"}"#,
                "/twig.sessions.v1.SessionService/SetMemberRole",
                &[0x0a, 1, b'o', 0x12, 1, b'u', 0x18, 2][..],
            ),
            (
                "DELETE",
                "/v1/sessions/s",
                "",
                "/twig.sessions.v1.SessionService/RevokeSession",
                &[0x0a, 1, b's'][..],
            ),
            (
                "POST",
                "/v1/sessions:logout",
                "",
                "/twig.sessions.v1.SessionService/Logout",
                &[][..],
            ),
            // body: "allowlist": SetOrgAllowlist {allowlist: {cidrs: ["10.0.0.0/8"]}}.
            (
                "PUT",
                "/v1/ip-allowlist",
                r#"{"cidrs":["10.0.0.0/8"]}"#,
                "/twig.apikeys.v1.ApiKeyService/SetOrgAllowlist",
                b"\x0a\x0c\x0a\x0a10.0.0.0/8",
            ),
            // An encoded colon stays in the value: GetApiKey {key_id: "k:1"}.
            (
                "GET",
                "/v1/api-keys/k%3A1",
                "",
                "/twig.apikeys.v1.ApiKeyService/GetApiKey",
                &[0x0a, 3, b'k', b':', b'1'][..],
            ),
            // GetKeyUsage {key_id: "k", granularity: DAY}.
            (
                "GET",
                "/v1/api-keys/k/usage?granularity=GRANULARITY_DAY",
                "",
                "/twig.apikeys.v1.ApiKeyService/GetKeyUsage",
                &[0x0a, 1, b'k', 0x10, 2][..],
            ),
        ] {
            let (status, response) = send(&router, method, uri, body).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{method} {uri}: {}",
                json_of(response).await
            );
            let (path, framed) = seen.lock().unwrap().last().cloned().unwrap();
            assert_eq!(path, grpc_path, "{method} {uri}");
            assert_eq!(&framed[5..], message, "{method} {uri}");
        }
        let calls = seen.lock().unwrap().len();

        // Wrong method, unknown path, a variable without its verb, bad
        // JSON: JSON errors, and no call.
        for (method, uri, body, expected, code) in [
            (
                "PUT",
                "/v1/me",
                "",
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
            ),
            ("GET", "/v1/nope", "", StatusCode::NOT_FOUND, "NOT_FOUND"),
            (
                "POST",
                "/v1/api-keys/k-1",
                "",
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
            ),
            (
                "POST",
                "/v1/api-keys/:rotate",
                "",
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
            ),
            // A percent-encoded colon is the variable's, not the verb's:
            // a filter in front that stops `:rotate` is not bypassed.
            (
                "POST",
                "/v1/api-keys/k-1%3Arotate",
                "",
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
            ),
            (
                "POST",
                "/v1/api-keys/k-1%3arotate",
                "",
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
            ),
            (
                "POST",
                "/v1/api-keys",
                "{nope",
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
            ),
            (
                "POST",
                "/v1/api-keys",
                "[]",
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
            ),
            (
                "GET",
                "/v1/api-keys?colour=red",
                "",
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
            ),
            (
                "PUT",
                "/v1/ip-allowlist?allowlist.cidrs=1.2.3.4",
                "{}",
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
            ),
        ] {
            let (status, response) = send(&router, method, uri, body).await;
            assert_eq!(status, expected, "{method} {uri}");
            assert_eq!(
                response.headers().get(header::CONTENT_TYPE).unwrap(),
                "application/json"
            );
            assert_eq!(json_of(response).await["code"], code, "{method} {uri}");
        }
        assert_eq!(seen.lock().unwrap().len(), calls);

        let (status, response) = send(&router, "GET", "/openapi.json", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json_of(response).await["openapi"], "3.0.3");
    }

    /// Every RPC that is not internal-only has a route (so a new one cannot
    /// be forgotten), each method and template is declared once, and the
    /// OpenAPI document lists every binding.
    #[test]
    fn every_public_rpc_has_a_route() {
        let bindings = bindings(Catalogue::get()).unwrap();
        let policy = twig_auth::AccessPolicy::of_twig_apis().unwrap();
        let mut public = 0;
        for rpc in policy.paths() {
            if matches!(
                policy.requirement(rpc),
                Some(twig_auth::Requirement::Internal(_))
            ) {
                continue;
            }
            public += 1;
            assert!(
                bindings.iter().any(|b| b.rpc == rpc),
                "{rpc} is not internal-only but has no `option (google.api.http)`"
            );
        }
        assert!(public >= 31, "{public} public RPCs");
        let unique: HashSet<_> = bindings
            .iter()
            .map(|b| (b.method.clone(), b.template.clone()))
            .collect();
        assert_eq!(unique.len(), bindings.len());

        let doc: serde_json::Value = serde_json::from_str(twig_proto::OPENAPI_JSON).unwrap();
        for b in &bindings {
            let op = &doc["paths"][&b.template][b.method.as_str().to_ascii_lowercase()];
            assert_eq!(
                op["x-twig-rpc"],
                b.rpc.as_str(),
                "{} {}",
                b.method,
                b.template
            );
        }
    }

    #[test]
    fn rules_that_cannot_be_served_are_refused() {
        let pool = Catalogue::get().pool();
        let input = pool
            .get_message_by_name("twig.quota.v1.SetLimitRequest")
            .unwrap();
        let output = input.clone();
        let rule = |pattern, body: &str| HttpRule {
            pattern: Some(pattern),
            body: body.into(),
            ..HttpRule::default()
        };
        for bad in [
            rule(Pattern::Get("/v1/x".into()), "*"),
            rule(Pattern::Post("/v1/{nope}".into()), ""),
            rule(Pattern::Post("/v1/{limit}".into()), ""),
            rule(Pattern::Post("/v1/x".into()), "nope"),
            rule(Pattern::Post("/v1/{limit.subject=a/*}".into()), ""),
            rule(
                Pattern::Custom(twig_proto::google::api::CustomHttpPattern {
                    kind: "HEAD".into(),
                    path: "/v1/x".into(),
                }),
                "",
            ),
            HttpRule {
                response_body: "limit".into(),
                ..rule(Pattern::Get("/v1/x".into()), "")
            },
        ] {
            assert!(route("/x/Y", &input, &output, &bad).is_err(), "{bad:?}");
        }
        // A nested path variable fills the message in the body.
        let (path, route) = route(
            "/x/Y",
            &input,
            &output,
            &rule(Pattern::Put("/v1/limits/{limit.subject}".into()), "limit"),
        )
        .unwrap();
        assert_eq!(path, "/v1/limits/{limit.subject}");
        let fields = request_fields(
            &route,
            "",
            Some(serde_json::json!({"subject": "ignored", "limit": "5"})),
            &[("limit.subject".into(), "org:1".into())],
        )
        .unwrap();
        assert_eq!(
            fields,
            serde_json::json!({"limit": {"subject": "org:1", "limit": "5"}})
        );
        DynamicMessage::deserialize(input, fields).unwrap();
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
        let pool = Catalogue::get().pool();
        let list = pool
            .get_message_by_name("twig.audit.v1.ListEventsRequest")
            .unwrap();
        let read = |query: &str| {
            let mut fields = serde_json::Map::new();
            query_fields(&mut fields, &list, query).map(|()| fields)
        };
        let fields = read("page_size=10&pageToken=a%2Bb+c&since=2025-01-01T00:00:00Z").unwrap();
        assert_eq!(fields["pageSize"], "10");
        assert_eq!(fields["pageToken"], "a+b c");
        assert_eq!(fields["since"], "2025-01-01T00:00:00Z");
        assert!(read("actor=a&actor=b").is_err());
        assert!(read("page_size=1&pageSize=2").is_err());
        assert!(read("a=%zz").is_err());
        assert!(read("actor=%ff").is_err());
        assert!(read("colour=red").is_err());
        assert!(read("since.seconds=1").is_err());
        // Repeated and nested fields.
        let update = pool
            .get_message_by_name("twig.apikeys.v1.UpdateApiKeyRequest")
            .unwrap();
        let mut fields = serde_json::Map::new();
        query_fields(
            &mut fields,
            &update,
            "scopes=SCOPE_READ&scopes=SCOPE_WRITE&allowed_cidrs.cidrs=10.0.0.0/8",
        )
        .unwrap();
        assert_eq!(
            serde_json::Value::Object(fields),
            serde_json::json!({
                "scopes": ["SCOPE_READ", "SCOPE_WRITE"],
                "allowedCidrs": {"cidrs": ["10.0.0.0/8"]}
            })
        );
    }
}
