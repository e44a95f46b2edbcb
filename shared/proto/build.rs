//! Generates Rust code for every `.proto` file under the workspace's `proto/`
//! folder, plus one encoded descriptor set for server reflection.
//!
//! From that descriptor set it then writes the OpenAPI document of the
//! HTTP/JSON surface (`build/openapi.rs`), so the document follows the
//! protos' `google.api.http` rules and is never kept by hand.
//!
//! A fresh machine needs no `protoc`: the vendored one is used unless `PROTOC`
//! is already set.

use std::path::{Path, PathBuf};

#[allow(dead_code)]
#[path = "src/http_template.rs"]
mod http_template;
#[path = "build/openapi.rs"]
mod openapi;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let root = root.canonicalize()?;

    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        let include = protoc_bin_vendored::include_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the
        // environment concurrently.
        #[allow(unsafe_code, clippy::disallowed_methods)]
        unsafe {
            std::env::set_var("PROTOC", protoc);
            std::env::set_var("PROTOC_INCLUDE", include);
        }
    }

    let mut protos = Vec::new();
    collect_protos(&root, &mut protos)?;
    protos.sort();
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    println!("cargo:rerun-if-changed={}", root.display());

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("twig_descriptor.bin"))
        // Every package as nested modules, included once by `lib.rs`.
        .include_file("twig_packages.rs")
        // Malformed requests are INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::codec::TwigCodec")
        // Transit payloads decode without a copy and clone cheaply.
        .bytes(".twig.vault.v1.SealRequest.plaintext")
        .bytes(".twig.vault.v1.UnsealResponse.plaintext")
        .compile_protos(&protos, &[root])?;

    println!("cargo:rerun-if-changed=build/openapi.rs");
    println!("cargo:rerun-if-changed=src/http_template.rs");
    let descriptor_set = std::fs::read(out_dir.join("twig_descriptor.bin"))?;
    let version = std::env::var("CARGO_PKG_VERSION")?;
    let document = openapi::document(&descriptor_set, &version)?;
    std::fs::write(out_dir.join("openapi.json"), document)?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
