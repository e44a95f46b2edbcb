//! The OpenID Connect providers of the tests: npm `oidc-provider` run by
//! `tests/node/oidc_idp.mjs`, one process hosting several providers (an
//! organisation's, "Google", "Microsoft"), each under its own path on one
//! port of 127.0.0.1, logging users in without a page (the authorization
//! request's `login_hint` picks the user). Clients and users are added at
//! run time through the peer's admin API.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running peer; killed when dropped.
pub struct OidcPeer {
    child: Child,
    base: String,
    addr: SocketAddr,
    issuers: serde_json::Map<String, serde_json::Value>,
    _config: tempfile::NamedTempFile,
}

fn script() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node/oidc_idp.mjs");
    let package = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node/node_modules/oidc-provider");
    assert!(
        package.exists(),
        "{} is missing: run `npm ci` in tests/node (scripts/test does)",
        package.display()
    );
    script
}

impl OidcPeer {
    /// Starts providers at `paths` (name → path, e.g. `("acme", "/acme")`),
    /// each with no client and no user yet.
    pub async fn start(paths: &[(&str, &str)]) -> Self {
        Self::start_providers(
            paths
                .iter()
                .map(|(name, path)| serde_json::json!({"name": name, "path": path}))
                .collect(),
        )
        .await
    }

    /// Starts `providers` as the peer's configuration gives them (name,
    /// path, and e.g. `tenant_alias` for a multi-tenant discovery); none
    /// has a client or a user yet.
    pub async fn start_providers(mut providers: Vec<serde_json::Value>) -> Self {
        for provider in &mut providers {
            provider["clients"] = serde_json::json!([]);
            provider["users"] = serde_json::json!([]);
            // Claims users added later may carry (Google's hd, Microsoft's
            // tid and oid).
            provider["claim_names"] = serde_json::json!(["hd", "tid", "oid"]);
        }
        let mut config = tempfile::NamedTempFile::new().expect("config file");
        serde_json::to_writer(
            &mut config,
            &serde_json::json!({"port": 0, "providers": providers}),
        )
        .expect("write config");
        let mut child = Command::new("node")
            .arg(script())
            .arg("--config")
            .arg(config.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run node (tests/node needs it)");
        let stdout = child.stdout.take().expect("stdout");
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = tokio::time::timeout(Duration::from_secs(20), line)
            .await
            .expect("the OIDC peer said it was ready within 20 s")
            .expect("join")
            .expect("read the ready line");
        let ready: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
        let port = ready["port"].as_u64().expect("port") as u16;
        Self {
            child,
            base: ready["base"].as_str().expect("base").to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            issuers: ready["issuers"].as_object().expect("issuers").clone(),
            _config: config,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The issuer of the provider `name`.
    pub fn issuer(&self, name: &str) -> String {
        self.issuers[name]
            .as_str()
            .expect("a provider of that name")
            .to_string()
    }

    async fn admin(&self, path: &str, body: serde_json::Value) {
        let body = body.to_string();
        let (status, _, answer) = crate::http1(
            self.addr,
            &format!("POST {path} HTTP/1.1\r\nContent-Type: application/json"),
            body.as_bytes(),
        )
        .await;
        assert!(
            status.contains(" 200 "),
            "{path}: {status} {}",
            String::from_utf8_lossy(&answer)
        );
    }

    /// Registers (or replaces) a client of `provider`.
    pub async fn add_client(&self, provider: &str, id: &str, secret: &str, redirect_uri: &str) {
        self.admin(
            "/_admin/clients",
            serde_json::json!({
                "provider": provider,
                "client_id": id,
                "client_secret": secret,
                "redirect_uris": [redirect_uri],
            }),
        )
        .await;
    }

    /// Adds (or replaces, by `sub`) a user of `provider`: `user` holds
    /// `sub`, `email`, `email_verified`, `name`, `groups`, `claims` (of
    /// these other claims only `hd`, `tid` and `oid` are issued).
    pub async fn add_user(&self, provider: &str, user: serde_json::Value) {
        self.admin(
            "/_admin/users",
            serde_json::json!({"provider": provider, "user": user}),
        )
        .await;
    }
}

impl Drop for OidcPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
