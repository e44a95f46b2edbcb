//! Path templates of `google.api.http` rules, read once for both users:
//! the edge's HTTP/JSON routes (`twig-edge`'s `json.rs`) and the OpenAPI
//! document this crate's build script writes.
//!
//! The grammar is the published one: `/` segments, each a literal or a
//! variable `{field.path}` bound to a (possibly nested) request field,
//! optionally ending in a custom verb `:verb`. Of the variable forms, twig
//! reads `{f}` and `{f=*}` (one segment) and `{f=**}` (the rest of the
//! path, last); unbound wildcards and variables spanning literal segments
//! (`{name=orgs/*}`) are refused, so a rule that cannot be served as
//! written stops the build of the document and the start of the server.
//!
//! This file is also compiled into the build script (`#[path]`), so it
//! uses nothing but `std`.

use std::fmt;

/// One parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// The segments between `/`.
    pub segments: Vec<Segment>,
    /// The custom verb after the last segment (`rotate` in `…:rotate`).
    pub verb: Option<String>,
}

/// A segment of a [`PathTemplate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A segment that must be exactly this text.
    Literal(String),
    /// A variable bound to a request field.
    Variable {
        /// The field path (`["limit", "subject"]` for `{limit.subject}`).
        field: Vec<String>,
        /// `{f=**}`: the rest of the path, slashes included.
        rest: bool,
    },
}

/// Why a template cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// The template.
    pub template: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "path template {:?}: {}", self.template, self.reason)
    }
}

impl std::error::Error for TemplateError {}

impl PathTemplate {
    /// Reads `template`.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let fail = |reason| TemplateError {
            template: template.to_string(),
            reason,
        };
        let rest = template
            .strip_prefix('/')
            .ok_or_else(|| fail("it must start with /"))?;
        // The verb: a `:` outside braces after the last `/`.
        let mut depth = 0usize;
        let mut last_slash = 0;
        let mut colon = None;
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth = depth.checked_sub(1).ok_or_else(|| fail("unbalanced }"))?,
                '/' if depth == 0 => {
                    last_slash = i;
                    colon = None;
                }
                ':' if depth == 0 && i >= last_slash => colon = Some(i),
                _ => {}
            }
        }
        if depth != 0 {
            return Err(fail("unbalanced {"));
        }
        let (path, verb) = match colon {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        if let Some(verb) = verb
            && !is_literal(verb)
        {
            return Err(fail("the verb must be a plain literal"));
        }
        let mut segments = Vec::new();
        for part in path.split('/') {
            if let Some(inner) = part.strip_prefix('{') {
                let inner = inner
                    .strip_suffix('}')
                    .ok_or_else(|| fail("a variable must be a whole segment"))?;
                let (field, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                let field: Vec<String> = field.split('.').map(str::to_string).collect();
                if field.iter().any(|f| !is_identifier(f)) {
                    return Err(fail("a variable must name a field path (a.b.c)"));
                }
                let rest = match pattern {
                    "*" => false,
                    "**" => true,
                    _ => return Err(fail("only {f}, {f=*} and {f=**} variables are served")),
                };
                segments.push(Segment::Variable { field, rest });
            } else if part == "*" || part == "**" {
                return Err(fail("wildcards must be bound to a field ({f=*})"));
            } else if is_literal(part) {
                segments.push(Segment::Literal(part.to_string()));
            } else {
                return Err(fail("a segment is empty or has characters a path cannot"));
            }
        }
        let rest_at = segments
            .iter()
            .position(|s| matches!(s, Segment::Variable { rest: true, .. }));
        if let Some(at) = rest_at
            && (at + 1 != segments.len() || verb.is_some())
        {
            return Err(fail("a {f=**} variable must end the path"));
        }
        let template = Self {
            segments,
            verb: verb.map(str::to_string),
        };
        let mut seen: Vec<&[String]> = Vec::new();
        for field in template.variables() {
            if seen.contains(&field) {
                return Err(fail("a field is bound twice"));
            }
            seen.push(field);
        }
        Ok(template)
    }

    /// The field paths the variables bind, in order.
    pub fn variables(&self) -> impl Iterator<Item = &[String]> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Variable { field, .. } => Some(field.as_slice()),
            Segment::Literal(_) => None,
        })
    }

    /// The template as an OpenAPI path (`/v1/api-keys/{key_id}:rotate`):
    /// each variable as `{field.path}`, the verb as written.
    pub fn openapi_path(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Variable { field, .. } => {
                    out.push('{');
                    out.push_str(&field.join("."));
                    out.push('}');
                }
            }
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Unreserved and sub-delimiter characters of a URL path segment, without
/// the ones the template grammar itself uses.
fn is_literal(text: &str) -> bool {
    !text.is_empty()
        && text.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '!' | '$' | '&')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(field: &str) -> Segment {
        Segment::Variable {
            field: field.split('.').map(str::to_string).collect(),
            rest: false,
        }
    }

    #[test]
    fn templates_are_read_as_published() {
        let t = PathTemplate::parse("/v1/api-keys/{key_id}:rotate").unwrap();
        assert_eq!(
            t.segments,
            [
                Segment::Literal("v1".into()),
                Segment::Literal("api-keys".into()),
                var("key_id")
            ]
        );
        assert_eq!(t.verb.as_deref(), Some("rotate"));
        assert_eq!(t.openapi_path(), "/v1/api-keys/{key_id}:rotate");

        let t = PathTemplate::parse("/v1/sessions:login").unwrap();
        assert_eq!(t.segments.len(), 2);
        assert_eq!(t.verb.as_deref(), Some("login"));
        assert_eq!(t.openapi_path(), "/v1/sessions:login");

        let t = PathTemplate::parse("/v1/quota/limits/{limit.subject=*}").unwrap();
        assert_eq!(t.segments[3], var("limit.subject"));
        assert_eq!(t.openapi_path(), "/v1/quota/limits/{limit.subject}");

        let t = PathTemplate::parse("/v1/files/{path=**}").unwrap();
        assert_eq!(
            t.segments[2],
            Segment::Variable {
                field: vec!["path".into()],
                rest: true
            }
        );
        assert_eq!(PathTemplate::parse("/v1/me").unwrap().verb, None);
    }

    #[test]
    fn what_cannot_be_served_is_refused() {
        for bad in [
            "v1/me",
            "/v1/{name=orgs/*}",
            "/v1/*",
            "/v1/{a}/{a}",
            "/v1/{rest=**}/more",
            "/v1/{rest=**}:verb",
            "/v1/x{id}",
            "/v1//x",
            "/v1/{a.}",
            "/v1/{id",
            "/v1/x:",
            "/v1/me/",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
