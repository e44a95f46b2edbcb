//! The README's walkthrough, as an operator types it: the binary started
//! with the embedded defaults, driven by `buf curl` through reflection
//! (sign-up → the mailed link from the outbox folder → login → verify →
//! refresh → logout).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::twig_binary;

const INTERNAL: &str = "walkthrough-internal-token-0123456789abcdef";

/// The README's command that takes the sign-up link's token out of the
/// outbox folder (quoted-printable: soft line breaks joined first).
const TOKEN_FROM_OUTBOX: &str = r#"cat twig-data/outbox/*.eml | tr -d '\r' | sed -e ':a' -e '/=$/{N;s/=\n//;ba' -e '}' |
  grep -om1 'twig_ev_[A-Za-z0-9]*'"#;

fn buf() -> PathBuf {
    let buf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/node_modules/.bin/buf");
    assert!(
        buf.exists(),
        "{} is missing: run `npm ci` in tests/node (scripts/test does)",
        buf.display()
    );
    buf
}

fn curl(url: &str, method: &str, body: &str, headers: &[String]) -> (bool, String) {
    let mut cmd = Command::new(buf());
    cmd.args([
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "-d",
        body,
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("{url}/twig.sessions.v1.SessionService/{method}"))
        .output()
        .expect("run buf");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn field(json: &str, name: &str) -> String {
    let key = format!("\"{name}\": \"");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in {json}"))
        + key.len();
    json[start..].split('"').next().unwrap().to_string()
}

#[test]
fn buf_curl_walkthrough_on_the_embedded_defaults() {
    let dir = std::env::temp_dir().join(format!("twig-walk-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // No DATABASE_URL: the default SQLite file under ./twig-data/.
    let mut server = Command::new(twig_binary())
        .current_dir(&dir)
        .env_remove("DATABASE_URL")
        .env("TWIG__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("TWIG__SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .env("TWIG__AUTH__INTERNAL_TOKEN", INTERNAL)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let result = std::panic::catch_unwind(|| {
        let mut listed = String::new();
        for _ in 0..100 {
            let out = Command::new(buf())
                .args([
                    "curl",
                    "--protocol",
                    "grpc",
                    "--http2-prior-knowledge",
                    "--list-services",
                    &url,
                ])
                .output()
                .unwrap();
            listed = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            listed.contains("twig.sessions.v1.SessionService"),
            "{listed}"
        );
        assert!(listed.contains("grpc.health.v1.Health"), "{listed}");

        let health = Command::new(buf())
            .args(["curl", "--protocol", "grpc", "--http2-prior-knowledge"])
            .arg(format!("{url}/grpc.health.v1.Health/Check"))
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&health.stdout).contains("SERVING"));

        let creds = r#"{"email":"ada@example.com","password":"correct horse battery staple"}"#;
        let (ok, out) = curl(&url, "SignUp", creds, &[]);
        assert!(ok, "{out}");
        assert_eq!(out.trim(), "{}", "answered at once, with nothing in it");
        // The link is written in the background: a moment later it is there.
        let mut token = String::new();
        for _ in 0..100 {
            let found = Command::new("sh")
                .current_dir(&dir)
                .args(["-c", TOKEN_FROM_OUTBOX])
                .output()
                .unwrap();
            token = String::from_utf8_lossy(&found.stdout).trim().to_string();
            if !token.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            token.starts_with("twig_ev_"),
            "the link in twig-data/outbox/: {token:?}"
        );
        let (ok, out) = curl(
            &url,
            "VerifyEmail",
            &format!(r#"{{"token":"{token}","password":"correct horse battery staple"}}"#),
            &[],
        );
        assert!(ok && out.contains("accessToken"), "{out}");
        let (ok, out) = curl(&url, "Login", creds, &[]);
        assert!(ok, "{out}");
        let access = field(&out, "accessToken");
        let refresh = field(&out, "refreshToken");

        let internal = vec![format!("x-twig-internal-token: {INTERNAL}")];
        let (ok, out) = curl(
            &url,
            "VerifySession",
            &format!(r#"{{"accessToken":"{access}"}}"#),
            &internal,
        );
        assert!(ok && out.contains(r#""owner""#), "{out}");

        let (ok, out) = curl(
            &url,
            "Refresh",
            &format!(r#"{{"refreshToken":"{refresh}"}}"#),
            &[],
        );
        assert!(ok, "{out}");
        let access2 = field(&out, "accessToken");

        let auth = vec![format!("Authorization: Bearer {access2}")];
        let (ok, out) = curl(&url, "Logout", "{}", &auth);
        assert!(ok, "{out}");
        let (ok, out) = curl(
            &url,
            "VerifySession",
            &format!(r#"{{"accessToken":"{access2}"}}"#),
            &internal,
        );
        assert!(!ok && out.contains("unauthenticated"), "{out}");
        assert!(dir.join("twig-data/twig.db").exists());
    });
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
