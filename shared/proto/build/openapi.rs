//! The OpenAPI 3.0.3 document of the HTTP/JSON surface, written by the
//! build script from the descriptor set it has just compiled: every
//! `(google.api.http)` binding (the primary rule and its
//! `additional_bindings`) is an operation, with its request and response
//! schemas in the proto3 JSON mapping (64-bit integers as strings, enums by
//! name, Timestamp and Duration as strings, repeated fields as arrays, maps
//! as objects, nested messages as components), the bearer scheme where the
//! RPC's `(twig.auth.v1.access)` option asks for a credential, and the
//! JSON error body the edge sends (`twig-edge`'s `json.rs`).

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{
    DescriptorPool, DynamicMessage, EnumDescriptor, FieldDescriptor, FileDescriptor, Kind,
    MessageDescriptor, MethodDescriptor,
};
use serde_json::{Map, Value as Json, json};

use crate::http_template::{PathTemplate, Segment};

/// `twig.auth.v1.Caller` numbers.
const CALLER_PUBLIC: i32 = 1;
const CALLER_PRINCIPAL: i32 = 2;
const CALLER_SESSION: i32 = 3;
const CALLER_INTERNAL: i32 = 4;
const CALLER_PRINCIPAL_OR_INTERNAL: i32 = 5;

/// The document, as pretty JSON.
pub fn document(descriptor_set: &[u8], version: &str) -> Result<String, String> {
    let pool = DescriptorPool::decode(descriptor_set).map_err(|e| e.to_string())?;
    let http = pool
        .get_extension_by_name("google.api.http")
        .ok_or("the descriptor set has no google.api.http option")?;
    let access = pool
        .get_extension_by_name("twig.auth.v1.access")
        .ok_or("the descriptor set has no twig.auth.v1.access option")?;

    let mut schemas = Schemas::default();
    let mut paths: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    let mut tags = BTreeMap::new();
    for service in pool.services() {
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&http) {
                continue;
            }
            let grpc_path = format!("/{}/{}", service.full_name(), method.name());
            let rule = options.get_extension(&http);
            let rule = rule
                .as_message()
                .ok_or_else(|| format!("{grpc_path}: the http option is not a message"))?;
            let caller = options
                .get_extension(&access)
                .as_message()
                .and_then(|a| a.get_field_by_name("caller"))
                .and_then(|c| c.as_enum_number())
                .unwrap_or(0);
            let mut bindings = vec![rule.clone()];
            if let Some(more) = rule
                .get_field_by_name("additional_bindings")
                .and_then(|v| v.as_list().map(<[_]>::to_vec))
            {
                bindings.extend(more.iter().filter_map(|v| v.as_message().cloned()));
            }
            tags.insert(
                service.name().to_string(),
                comment(service.parent_file(), service.path()),
            );
            for (n, binding) in bindings.iter().enumerate() {
                let (verb, template) = pattern(binding)
                    .ok_or_else(|| format!("{grpc_path}: an http rule names no method and path"))?;
                let template =
                    PathTemplate::parse(&template).map_err(|e| format!("{grpc_path}: {e}"))?;
                let mut operation = operation(&method, binding, &template, caller, &mut schemas)
                    .map_err(|e| format!("{grpc_path}: {e}"))?;
                let id = match n {
                    0 => format!("{}_{}", service.name(), method.name()),
                    n => format!("{}_{}_{}", service.name(), method.name(), n + 1),
                };
                operation.insert("operationId".into(), json!(id));
                operation.insert("tags".into(), json!([service.name()]));
                operation.insert("x-twig-rpc".into(), json!(grpc_path));
                let item = paths.entry(template.openapi_path()).or_default();
                if item.insert(verb.clone(), Json::Object(operation)).is_some() {
                    return Err(format!(
                        "{} {} is declared twice",
                        verb.to_uppercase(),
                        template.openapi_path()
                    ));
                }
            }
        }
    }
    let mut components = Map::new();
    schemas.insert_error_schemas();
    components.insert("schemas".into(), Json::Object(schemas.done));
    components.insert("responses".into(), error_responses());
    components.insert(
        "securitySchemes".into(),
        json!({
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A session's access token (`twig_at_…`) or an API key (`twig_sk_…`)."
            },
            "internal": {
                "type": "apiKey",
                "in": "header",
                "name": "x-twig-internal-token",
                "description": "The service credential of twig's own services (internal RPCs only)."
            }
        }),
    );
    let doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "twig-identity HTTP/JSON API",
            "version": version,
            "description": "Every operation is a gRPC method of twig-identity, reached over HTTP with \
                JSON (the proto3 JSON mapping). Generated at build time from the protos' \
                `google.api.http` and `twig.auth.v1.access` options."
        },
        "servers": [{"url": "/"}],
        "tags": tags.into_iter().map(|(name, description)| match description {
            Some(d) => json!({"name": name, "description": d}),
            None => json!({"name": name}),
        }).collect::<Vec<_>>(),
        "paths": paths,
        "components": components,
    });
    serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())
}

/// The rule's method (lower case, as OpenAPI names it) and template.
fn pattern(rule: &DynamicMessage) -> Option<(String, String)> {
    ["get", "put", "post", "delete", "patch"]
        .into_iter()
        .find(|verb| rule.has_field_by_name(verb))
        .and_then(|verb| {
            let path = rule.get_field_by_name(verb)?.as_str()?.to_string();
            Some((verb.to_string(), path))
        })
}

fn string_field(message: &DynamicMessage, name: &str) -> String {
    message
        .get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn operation(
    method: &MethodDescriptor,
    rule: &DynamicMessage,
    template: &PathTemplate,
    caller: i32,
    schemas: &mut Schemas,
) -> Result<Map<String, Json>, String> {
    if !string_field(rule, "response_body").is_empty() {
        return Err("response_body is not served".into());
    }
    let input = method.input();
    let body = string_field(rule, "body");
    let mut op = Map::new();
    if let Some(text) = comment(method.parent_file(), method.path()) {
        let summary = text
            .split(". ")
            .next()
            .unwrap_or(&text)
            .trim_end_matches('.');
        op.insert("summary".into(), json!(summary.replace('\n', " ")));
        op.insert("description".into(), json!(text));
    }

    // Path variables, each a field of the request.
    let mut parameters = Vec::new();
    let mut bound: Vec<Vec<String>> = Vec::new();
    for segment in &template.segments {
        let Segment::Variable { field, rest } = segment else {
            continue;
        };
        let leaf = resolve(&input, field)?;
        if leaf.is_list() || leaf.is_map() || matches!(leaf.kind(), Kind::Message(_)) {
            return Err(format!(
                "path variable {} must be a single scalar field",
                field.join(".")
            ));
        }
        let mut parameter = json!({
            "name": field.join("."),
            "in": "path",
            "required": true,
            "schema": schemas.field(&leaf),
        });
        if *rest {
            parameter["description"] = json!("the rest of the path, slashes included");
        }
        parameters.push(parameter);
        bound.push(field.clone());
    }

    // The body: the whole request, one field of it, or none.
    match body.as_str() {
        "" => {}
        "*" => {
            let top: BTreeSet<&str> = bound
                .iter()
                .filter(|f| f.len() == 1)
                .map(|f| f[0].as_str())
                .collect();
            let schema = if top.is_empty() {
                schemas.message_ref(&input)
            } else {
                schemas.message_schema(&input, &top)
            };
            op.insert(
                "requestBody".into(),
                json!({"content": {"application/json": {"schema": schema}}}),
            );
        }
        field => {
            let field = input
                .get_field_by_name(field)
                .ok_or_else(|| format!("body names no field of {}: {field}", input.name()))?;
            op.insert(
                "requestBody".into(),
                json!({"content": {"application/json": {"schema": schemas.field(&field)}}}),
            );
            bound.push(vec![field.name().to_string()]);
        }
    }
    if body != "*" {
        query_parameters(&input, &[], &[], &bound, schemas, &mut parameters);
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Json::Array(parameters));
    }

    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({
            "description": "The RPC's response message.",
            "content": {"application/json": {"schema": schemas.message_ref(&method.output())}}
        }),
    );
    let credential = caller != CALLER_PUBLIC;
    for (status, name) in ERRORS {
        if !credential && matches!(*name, "Unauthenticated" | "PermissionDenied") {
            continue;
        }
        responses.insert(
            status.to_string(),
            json!({"$ref": format!("#/components/responses/{name}")}),
        );
    }
    op.insert("responses".into(), Json::Object(responses));
    let security = match caller {
        CALLER_PUBLIC => json!([]),
        CALLER_PRINCIPAL | CALLER_SESSION => json!([{"bearer": []}]),
        CALLER_INTERNAL => json!([{"internal": []}]),
        CALLER_PRINCIPAL_OR_INTERNAL => json!([{"bearer": []}, {"internal": []}]),
        _ => return Err("the RPC declares no caller".into()),
    };
    op.insert("security".into(), security);
    if caller == CALLER_SESSION {
        let note = "Needs a signed-in user's session token, not an API key.";
        let text = match op.get("description").and_then(Json::as_str) {
            Some(d) => format!("{d}\n\n{note}"),
            None => note.to_string(),
        };
        op.insert("description".into(), json!(text));
    }
    Ok(op)
}

/// The field at `path` (names as in the proto), through singular
/// message fields.
fn resolve(message: &MessageDescriptor, path: &[String]) -> Result<FieldDescriptor, String> {
    let mut message = message.clone();
    let mut found = None;
    for (i, name) in path.iter().enumerate() {
        let field = message
            .get_field_by_name(name)
            .ok_or_else(|| format!("{} has no field {name}", message.full_name()))?;
        if i + 1 < path.len() {
            match field.kind() {
                Kind::Message(m) if !field.is_list() && !field.is_map() => message = m,
                _ => return Err(format!("{name} is not a singular message field")),
            }
        }
        found = Some(field);
    }
    found.ok_or_else(|| "an empty field path".to_string())
}

/// The fields read from the query string: every field not bound by the
/// path or the body, nested messages flattened as `a.b` (maps are not).
/// `prefix` is the proto names of the path to `message`, `json_prefix`
/// their JSON names.
fn query_parameters(
    message: &MessageDescriptor,
    prefix: &[String],
    json_prefix: &[String],
    bound: &[Vec<String>],
    schemas: &mut Schemas,
    out: &mut Vec<Json>,
) {
    for field in message.fields() {
        let mut path = prefix.to_vec();
        path.push(field.name().to_string());
        let mut json_path = json_prefix.to_vec();
        json_path.push(field.json_name().to_string());
        if bound.contains(&path) || field.is_map() {
            continue;
        }
        match field.kind() {
            Kind::Message(m) if well_known(&m).is_none() => {
                if prefix.len() < 3 && !field.is_list() {
                    query_parameters(&m, &path, &json_path, bound, schemas, out);
                }
            }
            _ => {
                let mut parameter = json!({
                    "name": json_path.join("."),
                    "in": "query",
                    "schema": schemas.field(&field),
                });
                if field.is_list() {
                    parameter["style"] = json!("form");
                    parameter["explode"] = json!(true);
                }
                if let Some(d) = comment(field.parent_file(), field.path()) {
                    parameter["description"] = json!(d);
                }
                out.push(parameter);
            }
        }
    }
}

/// The schema of a well-known type, which JSON writes as a plain value.
fn well_known(message: &MessageDescriptor) -> Option<Json> {
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => json!({
            "type": "string", "format": "date-time",
            "description": "RFC 3339, UTC (`2025-01-31T12:00:00Z`)"
        }),
        "google.protobuf.Duration" => json!({
            "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
            "description": "seconds with an `s` suffix (`60s`, `1.5s`)", "example": "60s"
        }),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.FieldMask" => json!({"type": "string"}),
        "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array", "items": {}}),
        "google.protobuf.Any" => json!({
            "type": "object", "required": ["@type"],
            "properties": {"@type": {"type": "string"}}, "additionalProperties": true
        }),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => json!({"type": "number"}),
        "google.protobuf.Int64Value" => json!({"type": "string", "format": "int64"}),
        "google.protobuf.UInt64Value" => json!({"type": "string", "format": "uint64"}),
        "google.protobuf.Int32Value" => json!({"type": "integer", "format": "int32"}),
        "google.protobuf.UInt32Value" => {
            json!({"type": "integer", "format": "int64", "minimum": 0})
        }
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BytesValue" => json!({"type": "string", "format": "byte"}),
        _ => return None,
    })
}

/// The component schemas, filled as operations refer to messages.
#[derive(Default)]
struct Schemas {
    done: Map<String, Json>,
    pending: BTreeSet<String>,
}

impl Schemas {
    fn reference(name: &str) -> Json {
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    /// A reference to the message's component (written on first use), or
    /// a well-known type's own schema.
    fn message_ref(&mut self, message: &MessageDescriptor) -> Json {
        if let Some(schema) = well_known(message) {
            return schema;
        }
        let name = message.full_name().to_string();
        if !self.done.contains_key(&name) && self.pending.insert(name.clone()) {
            let schema = self.message_schema(message, &BTreeSet::new());
            self.done.insert(name.clone(), schema);
            self.pending.remove(&name);
        }
        Self::reference(&name)
    }

    fn enum_ref(&mut self, e: &EnumDescriptor) -> Json {
        let name = e.full_name().to_string();
        if !self.done.contains_key(&name) {
            let mut schema = json!({
                "type": "string",
                "enum": e.values().map(|v| v.name().to_string()).collect::<Vec<_>>(),
            });
            if let Some(d) = comment(e.parent_file(), e.path()) {
                schema["description"] = json!(d);
            }
            self.done.insert(name.clone(), schema);
        }
        Self::reference(&name)
    }

    /// The object schema of a message, without the fields in `skip`.
    fn message_schema(&mut self, message: &MessageDescriptor, skip: &BTreeSet<&str>) -> Json {
        let mut properties = Map::new();
        for field in message.fields() {
            if skip.contains(field.name()) {
                continue;
            }
            let mut schema = self.field(&field);
            if let Some(d) = comment(field.parent_file(), field.path()) {
                schema = describe(schema, &d);
            }
            properties.insert(field.json_name().to_string(), schema);
        }
        let mut schema = json!({"type": "object", "properties": properties});
        let mut notes = Vec::new();
        if let Some(d) = comment(message.parent_file(), message.path()) {
            notes.push(d);
        }
        for oneof in message.oneofs().filter(|o| !o.is_synthetic()) {
            let names: Vec<String> = oneof
                .fields()
                .map(|f| format!("`{}`", f.json_name()))
                .collect();
            notes.push(format!(
                "At most one of {} (oneof `{}`).",
                names.join(", "),
                oneof.name()
            ));
        }
        if !notes.is_empty() {
            schema["description"] = json!(notes.join("\n\n"));
        }
        schema
    }

    /// The schema of a field's JSON value.
    fn field(&mut self, field: &FieldDescriptor) -> Json {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                return json!({"type": "object"});
            };
            let value = entry.map_entry_value_field();
            return json!({"type": "object", "additionalProperties": self.kind(&value.kind())});
        }
        let item = self.kind(&field.kind());
        if field.is_list() {
            json!({"type": "array", "items": item})
        } else {
            item
        }
    }

    fn kind(&mut self, kind: &Kind) -> Json {
        match kind {
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": 4_294_967_295u32})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "string", "format": "uint64", "pattern": "^[0-9]+$"})
            }
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "format": "byte"}),
            Kind::Message(m) => self.message_ref(m),
            Kind::Enum(e) => self.enum_ref(e),
        }
    }

    fn insert_error_schemas(&mut self) {
        self.done.insert(
            "twig.Error".into(),
            json!({
                "type": "object",
                "description": "Every error the HTTP/JSON surface sends: the gRPC code's name \
                    (`INVALID_ARGUMENT`, `UNAUTHENTICATED`, …, or the edge's own `NOT_FOUND`, \
                    `METHOD_NOT_ALLOWED`, `PAYLOAD_TOO_LARGE`), a message for people, and for \
                    invalid fields the field violations.",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "example": "INVALID_ARGUMENT"},
                    "message": {"type": "string"},
                    "fieldViolations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["field", "description"],
                            "properties": {
                                "field": {"type": "string"},
                                "description": {"type": "string"}
                            }
                        }
                    }
                }
            }),
        );
    }
}

/// A schema with a description; a reference is wrapped, since OpenAPI
/// 3.0 ignores what sits beside `$ref`.
fn describe(schema: Json, description: &str) -> Json {
    if schema.get("$ref").is_some() {
        json!({"allOf": [schema], "description": description})
    } else {
        let mut schema = schema;
        if schema.get("description").is_none() {
            schema["description"] = json!(description);
        }
        schema
    }
}

/// HTTP status and component name of each error an operation can answer.
const ERRORS: &[(u16, &str)] = &[
    (400, "InvalidArgument"),
    (401, "Unauthenticated"),
    (403, "PermissionDenied"),
    (404, "NotFound"),
    (409, "AlreadyExists"),
    (412, "FailedPrecondition"),
    (413, "PayloadTooLarge"),
    (429, "ResourceExhausted"),
    (500, "Internal"),
    (503, "Unavailable"),
];

fn error_responses() -> Json {
    let body = json!({"application/json": {"schema": {"$ref": "#/components/schemas/twig.Error"}}});
    let text = |name: &str| match name {
        "InvalidArgument" => {
            "INVALID_ARGUMENT: the request is malformed (not JSON, an unknown field, a bad value); `fieldViolations` names the fields."
        }
        "Unauthenticated" => "UNAUTHENTICATED: no credential, or one that is not valid.",
        "PermissionDenied" => {
            "PERMISSION_DENIED: the credential lacks the scope, or the client address is outside an IP allowlist."
        }
        "NotFound" => "NOT_FOUND: no such resource in the caller's organisation.",
        "AlreadyExists" => "ALREADY_EXISTS: the resource exists already.",
        "FailedPrecondition" => {
            "FAILED_PRECONDITION: the resource is not in a state that allows this."
        }
        "PayloadTooLarge" => "PAYLOAD_TOO_LARGE: the body is over 4 MiB.",
        "ResourceExhausted" => {
            "RESOURCE_EXHAUSTED: over the quota; retry after `Retry-After` seconds."
        }
        "Internal" => "INTERNAL: a fault of the server.",
        _ => "UNAVAILABLE: a store or service the call needs is down; retry later.",
    };
    let mut responses = Map::new();
    for (_, name) in ERRORS {
        let mut response = json!({"description": text(name), "content": body.clone()});
        if *name == "ResourceExhausted" {
            let seconds = json!({"schema": {"type": "integer", "minimum": 0}});
            response["headers"] = json!({
                "Retry-After": {"description": "Whole seconds until a retry may succeed.", "schema": {"type": "integer", "minimum": 0}},
                "RateLimit-Limit": seconds.clone(),
                "RateLimit-Remaining": seconds.clone(),
                "RateLimit-Reset": seconds,
            });
        }
        responses.insert((*name).to_string(), response);
    }
    Json::Object(responses)
}

/// The leading comment of the element at `path`, trimmed; `None` when
/// there is none (or the descriptor set has no source information).
fn comment(file: FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location.leading_comments.as_deref()?;
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let text = lines.join("\n").trim().to_string();
    (!text.is_empty()).then_some(text)
}
