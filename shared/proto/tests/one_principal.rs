//! The caller has one shape on the wire: exactly one `Principal` message
//! and one `Scope` enum across every twig API, both `twig.auth.v1`'s
//! (proto `twig/auth/v1/principal.proto`). A service that defines its own
//! again fails here.

use prost::Message as _;
use prost_types::{DescriptorProto, FileDescriptorSet};

/// Every message of the twig packages, nested ones too, by full name.
fn messages(set: &FileDescriptorSet) -> Vec<(String, &DescriptorProto)> {
    fn walk<'a>(
        prefix: &str,
        m: &'a DescriptorProto,
        out: &mut Vec<(String, &'a DescriptorProto)>,
    ) {
        let name = format!("{prefix}.{}", m.name());
        for nested in &m.nested_type {
            walk(&name, nested, out);
        }
        out.push((name, m));
    }
    let mut out = Vec::new();
    for file in twig_files(set) {
        for m in &file.message_type {
            walk(file.package(), m, &mut out);
        }
    }
    out
}

fn twig_files(set: &FileDescriptorSet) -> impl Iterator<Item = &prost_types::FileDescriptorProto> {
    set.file.iter().filter(|f| f.package().starts_with("twig."))
}

/// Every enum of the twig packages, nested ones too, by full name.
fn enums(set: &FileDescriptorSet) -> Vec<String> {
    let mut out = Vec::new();
    for file in twig_files(set) {
        out.extend(
            file.enum_type
                .iter()
                .map(|e| format!("{}.{}", file.package(), e.name())),
        );
    }
    for (name, m) in messages(set) {
        out.extend(m.enum_type.iter().map(|e| format!("{name}.{}", e.name())));
    }
    out
}

fn set() -> FileDescriptorSet {
    FileDescriptorSet::decode(twig_proto::FILE_DESCRIPTOR_SET).expect("the descriptor set decodes")
}

#[test]
fn there_is_one_principal_message() {
    let set = set();
    let principals: Vec<String> = messages(&set)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.to_ascii_lowercase().contains("principal"))
        .collect();
    assert_eq!(principals, vec!["twig.auth.v1.Principal".to_string()]);
}

#[test]
fn there_is_one_scope_enum() {
    let set = set();
    let scopes: Vec<String> = enums(&set)
        .into_iter()
        .filter(|name| name.ends_with("Scope"))
        .collect();
    assert_eq!(scopes, vec!["twig.auth.v1.Scope".to_string()]);
}

#[test]
fn every_principal_and_scope_field_uses_them() {
    let set = set();
    for (name, m) in messages(&set) {
        for field in &m.field {
            let type_name = field.type_name();
            let lower = field.name().to_ascii_lowercase();
            if lower == "principal" {
                assert_eq!(
                    type_name,
                    ".twig.auth.v1.Principal",
                    "{name}.{}",
                    field.name()
                );
            }
            if lower == "scope" || lower == "scopes" || lower == "required_scope" {
                // Internal scopes (`vault.reveal`) are names, not the enum.
                if field.r#type() != prost_types::field_descriptor_proto::Type::String {
                    assert_eq!(type_name, ".twig.auth.v1.Scope", "{name}.{}", field.name());
                }
            }
        }
    }
}
