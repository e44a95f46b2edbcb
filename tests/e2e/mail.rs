//! Outbound mail through the suite's one mailer (`twig_mail::Mailer`, as
//! every service gets it from its `Context`): to a real SMTP server —
//! maildev, started once by `scripts/test`, or one of a test's own for TLS
//! with a login to a relay of a private CA — or into the outbox folder
//! beside the SQLite database; a relay that is down or stuck never slows
//! the caller.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use twig_config::{Config, Secret, SmtpConfig, SmtpTls};
use twig_mail::{Enqueued, Mail, Template};
use twig_tests::{
    Backend, Maildev, PrivateMaildev, ReceivedMail, TestApp, TestCertificates, email, metric_value,
    token_from_link,
};

use crate::twig_binary;

fn reset(link: String) -> Template {
    Template::ResetPassword {
        link,
        expires_in_minutes: 30,
    }
}

/// A relay at `port` on 127.0.0.1, in plain text, one attempt unless
/// `attempts` says otherwise.
fn relay_at(config: &mut Config, port: u16, attempts: u32) {
    config.mail.from = Some("no-reply@twig.test".into());
    config.mail.link_base = Some(twig_tests::TEST_LINK_BASE.into());
    config.mail.attempts = attempts;
    config.mail.retry_backoff = Duration::from_millis(50);
    config.mail.smtp = Some(SmtpConfig {
        host: "127.0.0.1".into(),
        port: Some(port),
        tls: SmtpTls::None,
        timeout: Duration::from_secs(5),
        ..Default::default()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_reaches_the_smtp_server_with_both_parts() {
    let app = TestApp::builder(Backend::Sqlite).with_smtp().spawn().await;
    let to = email("mail-verify");
    let token = "twig_vt_Ab+/c=d";
    let link = app.mailer.link("/verify-email", token);
    assert_eq!(
        link,
        "https://app.twig.test/verify-email?token=twig_vt_Ab%2B%2Fc%3Dd"
    );
    let mail =
        Mail::new(&to, Template::VerifyEmail { link: link.clone() }).with_name("Ann Example");
    assert_eq!(app.mailer.send(mail), Enqueued::Queued);

    let received = app.mail_to(&to).await;
    assert_eq!(received.len(), 1, "{received:#?}");
    let mail = &received[0];
    assert_eq!(mail.subject, "Verify your email for twig");
    assert_eq!(mail.from, "\"Twig Tests\" <no-reply@twig.test>");
    assert!(
        mail.to.contains(&to) && mail.to.contains("Ann Example"),
        "{}",
        mail.to
    );
    assert!(
        mail.header("content-type")
            .is_some_and(|t| t.starts_with("multipart/alternative")),
        "{:?}",
        mail.headers
    );
    assert!(mail.header("message-id").is_some() && mail.header("date").is_some());
    assert!(mail.text.starts_with("Hello Ann Example,"), "{}", mail.text);
    assert!(mail.text.contains(&link), "{}", mail.text);
    assert!(
        mail.html.contains(&format!("href=\"{link}\"")),
        "{}",
        mail.html
    );
    assert_eq!(mail.links, std::slice::from_ref(&link));
    assert_eq!(token_from_link(&mail.links[0]).as_deref(), Some(token));
    // Our own reading of the message as it arrived agrees with maildev's.
    let ours = ReceivedMail::from_eml(&mail.source);
    assert_eq!(ours.text.trim_end(), mail.text.trim_end());
    assert_eq!(ours.html.trim_end(), mail.html.trim_end());
    assert_eq!(ours.subject, mail.subject);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mail_template_arrives_escaped() {
    let app = TestApp::builder(Backend::Sqlite)
        .with_smtp()
        .config(|c| c.mail.product_name = "Twig & Co".into())
        .spawn()
        .await;
    let at = chrono::DateTime::parse_from_rfc3339("2026-12-06T09:30:00Z")
        .unwrap()
        .to_utc();
    let link = app.mailer.link("/join", "twig_it_x");
    let templates = [
        (
            Template::VerifyEmail { link: link.clone() },
            "Verify your email for Twig & Co",
        ),
        (reset(link.clone()), "Reset your Twig & Co password"),
        (
            Template::Invited {
                organization_name: "<script>alert(1)</script>".into(),
                inviter_name: "Mallory <m@evil.test>".into(),
                link: link.clone(),
                expires_at: at,
            },
            "You are invited to join <script>alert(1)</script> on Twig & Co",
        ),
        (
            Template::PasswordChanged {
                at,
                ip: Some("203.0.113.9".parse().unwrap()),
            },
            "Your Twig & Co password was changed",
        ),
        (
            Template::NewSignIn {
                at,
                ip: None,
                user_agent: Some("<img src=x onerror=alert(1)>".into()),
            },
            "A new sign-in to your Twig & Co account",
        ),
    ];
    let mut sent = Vec::new();
    for (template, subject) in templates {
        let to = email(&format!("mail-{}", template.name().replace('_', "-")));
        assert_eq!(app.mailer.send(Mail::new(&to, template)), Enqueued::Queued);
        sent.push((to, subject));
    }
    for (to, subject) in sent {
        let mail = app.mail_to(&to).await.remove(0);
        assert_eq!(mail.subject, subject);
        assert!(!mail.text.is_empty() && !mail.html.is_empty(), "{mail:#?}");
        assert!(mail.html.contains("Twig &amp; Co"), "{}", mail.html);
        for raw in ["<script>", "<img", "<m@evil"] {
            assert!(!mail.html.contains(raw), "{raw} in {}", mail.html);
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_queued_at_a_stop_is_delivered_before_the_process_ends() {
    let app = TestApp::builder(Backend::Sqlite).with_smtp().spawn().await;
    let to = email("mail-stop");
    for _ in 0..10 {
        let link = app.mailer.link("/reset-password", "t");
        assert_eq!(
            app.mailer.send(Mail::new(&to, reset(link))),
            Enqueued::Queued
        );
    }
    // No flush: the stop drains the queue within the drain time.
    app.stop().await;
    let received = Maildev::from_env().wait_for(&to, 10).await;
    assert_eq!(received.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_without_a_relay_is_an_eml_file_in_the_outbox_beside_the_database() {
    // The embedded default, not the folder test apps get of their own.
    let app = TestApp::builder(Backend::Sqlite)
        .default_outbox()
        .spawn()
        .await;
    let outbox = app
        .config
        .database
        .sqlite_folder()
        .expect("a SQLite file")
        .join("outbox");
    // The message's date is the services' clock's.
    app.clock.advance(Duration::from_secs(3 * 366 * 24 * 3600));
    let year = chrono::DateTime::from_timestamp(app.clock_now(), 0)
        .unwrap()
        .format("%Y")
        .to_string();
    let to = email("mail-outbox");
    let link = app.mailer.link("/reset-password", "twig_rt_secret");
    assert!(
        link.starts_with("http://localhost/reset-password?token="),
        "{link}"
    );
    app.mailer
        .send(Mail::new(&to, reset(link.clone())).with_name("Ann"));
    app.mailer.flush().await;

    let files: Vec<_> = std::fs::read_dir(&outbox)
        .unwrap_or_else(|e| panic!("{}: {e}", outbox.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one file, no temporary left: {files:?}");
    assert_eq!(files[0].extension().unwrap(), "eml");
    let mail = ReceivedMail::from_eml(&std::fs::read_to_string(&files[0]).unwrap());
    assert_eq!(mail.subject, "Reset your twig password");
    assert_eq!(mail.from, "no-reply@localhost");
    assert!(
        mail.to.contains("Ann") && mail.to.contains(&format!("<{to}>")),
        "{}",
        mail.to
    );
    assert_eq!(mail.header("mime-version"), Some("1.0"));
    assert!(
        mail.header("date").is_some_and(|d| d.contains(&year)),
        "{:?} should be in {year}",
        mail.header("date")
    );
    assert!(mail.text.contains("within 30 minutes"), "{}", mail.text);
    assert!(mail.text.contains("The link works once"), "{}", mail.text);
    assert!(mail.html.contains("<!DOCTYPE html>"), "{}", mail.html);
    assert_eq!(mail.links, [link]);
    assert_eq!(
        token_from_link(&mail.links[0]).as_deref(),
        Some("twig_rt_secret")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_to_a_relay_that_is_down_costs_the_caller_nothing_and_is_counted() {
    let failed = r#"twig_mail_messages_total{template="reset_password",outcome="failed"}"#;
    let before = metric_value(&twig_tests::metrics_page(), failed);
    let closed = twig_tests::free_addr();
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| relay_at(c, closed.port(), 2))
        .spawn()
        .await;
    let started = Instant::now();
    for i in 0..20 {
        let mail = Mail::new(email(&format!("mail-down-{i}")), reset("l".into()));
        assert_eq!(app.mailer.send(mail), Enqueued::Queued);
    }
    // Waiting for the relay would cost at least the 50 ms between the two
    // attempts of each message: 1 s for all.
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "20 sends took {took:?}");
    app.mailer.flush().await;
    let page = twig_tests::metrics_page();
    assert_eq!(metric_value(&page, failed) - before, 20.0, "{page}");
    assert!(
        !page.contains("mail-down-"),
        "no address in a label: {page}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mail_queue_drops_instead_of_blocking() {
    let dropped_series = r#"twig_mail_messages_total{template="verify_email",outcome="dropped"}"#;
    let before = metric_value(&twig_tests::metrics_page(), dropped_series);
    // A relay that accepts connections and never says a word: every
    // delivery hangs until its timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| {
            relay_at(c, port, 1);
            c.mail.queue_capacity = 3;
        })
        .spawn()
        .await;
    let started = Instant::now();
    let outcomes: Vec<Enqueued> = (0..50)
        .map(|i| {
            let to = email(&format!("mail-full-{i}"));
            app.mailer
                .send(Mail::new(to, Template::VerifyEmail { link: "l".into() }))
        })
        .collect();
    // Waiting for the relay would cost its 5 s timeout.
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "50 sends took {took:?}");
    let queued = outcomes.iter().filter(|o| **o == Enqueued::Queued).count();
    // The queue, the deliveries hanging (4) and the one waiting for them.
    assert!((3..=8).contains(&queued), "{queued} queued: {outcomes:?}");
    let dropped = 50 - queued;
    let page = twig_tests::metrics_page();
    assert_eq!(
        metric_value(&page, dropped_series) - before,
        dropped as f64,
        "{page}"
    );
    holder.abort();
}

#[test]
fn mail_settings_are_checked_before_the_server_starts() {
    let dir = std::env::temp_dir().join(format!("twig-mail-{}", uuid::Uuid::new_v4().simple()));
    let out = Command::new(twig_binary())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/twig.db?mode=rwc", dir.display()),
        )
        .env("TWIG__MAIL__SMTP__HOST", "smtp.example.com")
        .env("TWIG__MAIL__SMTP__TLS", "none")
        .env("TWIG__MAIL__SMTP__CA_FILE", "/etc/twig/relay-ca.pem")
        .env("TWIG__MAIL__LINK_BASE", "http://app.example.com")
        .stdin(Stdio::null())
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "mail.smtp.tls = \"none\" to \"smtp.example.com\"",
        "mail.from is required",
        "mail.link_base: \"http://app.example.com\" must use https://",
        "mail.smtp.ca_file \"/etc/twig/relay-ca.pem\" is set but smtp.tls = \"none\" uses no TLS",
    ] {
        assert!(err.contains(expected), "{expected} not in {err}");
    }
    assert!(!dir.exists(), "nothing was created before the check");
}

/// The login of the private TLS relay.
const RELAY_USER: &str = "twig-relay";
const RELAY_PASSWORD: &str = "relay password 7Qx!";

/// A user name and password to log in to the relay with, or none.
type Login<'a> = Option<(&'a str, &'a str)>;

/// A maildev of this test's own speaking SMTPS (TLS from the first byte)
/// with a certificate for `localhost` from a CA of the test's own, and
/// taking mail only after a login.
async fn tls_relay_with_login() -> (TestCertificates, PrivateMaildev) {
    let certificates = TestCertificates::new(&["localhost"]);
    let relay = PrivateMaildev::start([
        OsStr::new("--incoming-secure"),
        OsStr::new("--incoming-cert"),
        certificates.cert.as_os_str(),
        OsStr::new("--incoming-key"),
        certificates.key.as_os_str(),
        OsStr::new("--incoming-user"),
        OsStr::new(RELAY_USER),
        OsStr::new("--incoming-pass"),
        OsStr::new(RELAY_PASSWORD),
    ])
    .await;
    (certificates, relay)
}

/// Since the metrics page `before`, of the `outcomes` series of one
/// template, `counted` went up by one and every other stayed.
fn assert_counted_once(case: &str, before: &str, outcomes: &[&String], counted: &str) {
    let page = twig_tests::metrics_page();
    for series in outcomes {
        let expected = if series.as_str() == counted { 1.0 } else { 0.0 };
        assert_eq!(
            metric_value(&page, series) - metric_value(before, series),
            expected,
            "{case}: {series}\n{page}"
        );
    }
}

/// The private relay at `localhost` (the name its certificate holds) with
/// `tls = "tls"`, trusting `ca_file` besides the webpki roots, logging in
/// with `login` (user and password); one attempt.
fn tls_relay_at(config: &mut Config, relay: &PrivateMaildev, ca_file: Option<&Path>, login: Login) {
    relay_at(config, relay.maildev.smtp.port(), 1);
    let smtp = config.mail.smtp.as_mut().expect("relay_at sets smtp");
    smtp.host = "localhost".into();
    smtp.tls = SmtpTls::Tls;
    smtp.ca_file = ca_file.map(Path::to_path_buf);
    smtp.username = login.map(|(user, _)| user.to_string());
    smtp.password = login.map(|(_, password)| Secret::new(password));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_over_tls_with_a_login_reaches_a_relay_of_a_private_ca() {
    let sent = r#"twig_mail_messages_total{template="reset_password",outcome="sent"}"#;
    let before = metric_value(&twig_tests::metrics_page(), sent);
    let (certificates, relay) = tls_relay_with_login().await;
    // A bundle: another CA first, then the relay's; every one is trusted.
    let other = TestCertificates::new(&["localhost"]);
    let bundle = certificates.folder().join("bundle.pem");
    std::fs::write(
        &bundle,
        std::fs::read_to_string(&other.ca).unwrap()
            + &std::fs::read_to_string(&certificates.ca).unwrap(),
    )
    .unwrap();
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| tls_relay_at(c, &relay, Some(&bundle), Some((RELAY_USER, RELAY_PASSWORD))))
        .spawn()
        .await;
    let to = email("mail-tls-login");
    let link = app.mailer.link("/reset-password", "twig_rt_over_tls");
    assert_eq!(
        app.mailer
            .send(Mail::new(&to, reset(link.clone())).with_name("Ann")),
        Enqueued::Queued
    );
    app.mailer.flush().await;
    let page = twig_tests::metrics_page();
    assert_eq!(metric_value(&page, sent) - before, 1.0, "{page}");

    let received = relay.maildev.wait_for(&to, 1).await;
    assert_eq!(received.len(), 1, "{received:#?}");
    let mail = &received[0];
    assert_eq!(mail.subject, "Reset your twig password");
    assert_eq!(mail.from, "no-reply@twig.test");
    assert!(
        mail.to.contains(&to) && mail.to.contains("Ann"),
        "{}",
        mail.to
    );
    assert_eq!(mail.links, std::slice::from_ref(&link));
    assert_eq!(
        token_from_link(&mail.links[0]).as_deref(),
        Some("twig_rt_over_tls")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_to_a_tls_relay_that_is_not_trusted_or_refuses_the_login_is_counted_not_delivered() {
    let series = |outcome: &str| {
        format!(r#"twig_mail_messages_total{{template="reset_password",outcome="{outcome}"}}"#)
    };
    let (failed, rejected, sent) = (series("failed"), series("rejected"), series("sent"));
    twig_tests::metrics_page();
    let (certificates, relay) = tls_relay_with_login().await;
    let right = Some((RELAY_USER, RELAY_PASSWORD));
    // Each case: how the app reaches the relay, and the outcome it counts.
    let cases: [(&str, Option<&Path>, Login, &str); 4] = [
        // The relay's certificate is from a CA the webpki roots do not
        // hold: the TLS handshake fails (UnknownIssuer), a failure a retry
        // might get past, so "failed" (after the one attempt) rather than
        // "rejected".
        ("untrusted", None, right, &failed),
        // The relay answers 535 to the login: refused for good.
        (
            "wrong-password",
            Some(&certificates.ca),
            Some((RELAY_USER, "not the password")),
            &rejected,
        ),
        // The relay answers 530 to MAIL FROM without a login.
        ("no-login", Some(&certificates.ca), None, &rejected),
        // The control: the same relay takes mail set up right.
        ("right", Some(&certificates.ca), right, &sent),
    ];
    for (case, ca_file, login, counted) in cases {
        let before = twig_tests::metrics_page();
        let app = TestApp::builder(Backend::Sqlite)
            .config(|c| tls_relay_at(c, &relay, ca_file, login))
            .spawn()
            .await;
        let to = email(&format!("mail-tls-{case}"));
        assert_eq!(
            app.mailer.send(Mail::new(&to, reset("l".into()))),
            Enqueued::Queued
        );
        app.mailer.flush().await;
        assert_counted_once(case, &before, &[&failed, &rejected, &sent], counted);
        let arrived = if case == "right" {
            relay.maildev.wait_for(&to, 1).await
        } else {
            relay.maildev.received(&to).await
        };
        assert_eq!(
            arrived.len(),
            usize::from(case == "right"),
            "{case}: {arrived:#?}\nmaildev: {}",
            relay.log()
        );
        app.stop().await;
    }
}

/// An aiosmtpd relay of this test's own (`tests/smtp/relay.py`, in the
/// venv `scripts/test` makes): in `starttls` mode it offers STARTTLS with
/// a certificate for `localhost`, requires it first and takes mail only
/// after the login; in `plain` mode it offers no STARTTLS at all. Each
/// message it takes is a file in its folder. Killed when dropped.
struct StarttlsRelay {
    port: u16,
    out: tempfile::TempDir,
    child: std::process::Child,
}

impl StarttlsRelay {
    fn start(mode: &str, certificates: &TestCertificates) -> Self {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/.venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/test (it installs PyPI aiosmtpd into tests/smtp/.venv)",
            python.display()
        );
        let out = tempfile::tempdir().unwrap();
        let port = twig_tests::free_addr().port();
        let mut child = Command::new(python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/relay.py"))
            .args(["--port", &port.to_string(), "--mode", mode])
            .arg("--out")
            .arg(out.path())
            .arg("--cert")
            .arg(&certificates.cert)
            .arg("--key")
            .arg(&certificates.key)
            .args(["--user", RELAY_USER, "--password", RELAY_PASSWORD])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the aiosmtpd relay");
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready.trim(), "ready", "the relay did not start");
        Self { port, out, child }
    }

    /// The envelopes of the messages it took (`tls`, `login`, `to`).
    fn taken(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<_> = std::fs::read_dir(self.out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for StarttlsRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The default mode, `starttls`, end to end: with the relay's CA and the
/// login the message goes over TLS after the login; a wrong password is
/// refused for good; a relay that offers no STARTTLS gets nothing — the
/// mailer never falls back to plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_over_starttls_with_a_login_and_never_in_the_clear() {
    let series = |outcome: &str| {
        format!(r#"twig_mail_messages_total{{template="reset_password",outcome="{outcome}"}}"#)
    };
    let (failed, rejected, sent) = (series("failed"), series("rejected"), series("sent"));
    twig_tests::metrics_page();
    let certificates = TestCertificates::new(&["localhost"]);
    let starttls = StarttlsRelay::start("starttls", &certificates);
    let plain = StarttlsRelay::start("plain", &certificates);
    let cases: [(&str, &StarttlsRelay, &str, &str); 3] = [
        ("right", &starttls, RELAY_PASSWORD, &sent),
        ("wrong-password", &starttls, "not the password", &rejected),
        ("no-starttls", &plain, RELAY_PASSWORD, &failed),
    ];
    for (case, relay, password, counted) in cases {
        let before = twig_tests::metrics_page();
        let app = TestApp::builder(Backend::Sqlite)
            .config(|c| {
                relay_at(c, relay.port, 1);
                let smtp = c.mail.smtp.as_mut().expect("relay_at sets smtp");
                smtp.host = "localhost".into();
                smtp.tls = SmtpTls::Starttls;
                smtp.ca_file = Some(certificates.ca.clone());
                smtp.username = Some(RELAY_USER.into());
                smtp.password = Some(Secret::new(password));
            })
            .spawn()
            .await;
        let to = email(&format!("mail-stls-{case}"));
        assert_eq!(
            app.mailer.send(Mail::new(&to, reset("l".into()))),
            Enqueued::Queued
        );
        app.mailer.flush().await;
        assert_counted_once(case, &before, &[&failed, &rejected, &sent], counted);
        app.stop().await;
    }
    let taken = starttls.taken();
    assert_eq!(taken.len(), 1, "only the right login's message: {taken:?}");
    assert_eq!(taken[0]["tls"], true, "{taken:?}");
    assert_eq!(taken[0]["login"], true, "{taken:?}");
    assert!(plain.taken().is_empty(), "nothing in the clear");
}

/// Runs `serve` with `mail.smtp.ca_file = ca_file` for a TLS relay; returns
/// its exit code and what it wrote to stderr (it must stop on its own).
fn serve_with_a_relay_ca_file(ca_file: &Path) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(twig_binary())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/twig.db?mode=rwc", dir.path().display()),
        )
        .env("TWIG__SERVER__LISTEN", "127.0.0.1:0")
        .env("TWIG__SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .env("TWIG__MAIL__FROM", "no-reply@twig.test")
        .env("TWIG__MAIL__LINK_BASE", twig_tests::TEST_LINK_BASE)
        .env("TWIG__MAIL__SMTP__HOST", "localhost")
        .env("TWIG__MAIL__SMTP__TLS", "tls")
        .env("TWIG__MAIL__SMTP__CA_FILE", ca_file)
        .env("TWIG__MAIL__SMTP__USERNAME", RELAY_USER)
        .env("TWIG__MAIL__SMTP__PASSWORD", RELAY_PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .arg("serve")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "serve did not stop within 60 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_mail_ca_file_that_is_not_pem_or_missing_stops_the_start_with_a_clear_error() {
    use base64::Engine;
    let certificates = TestCertificates::new(&["localhost"]);
    let folder = certificates.folder();
    // The relay's CA, in DER rather than PEM: a likely mistake.
    let pem = std::fs::read_to_string(&certificates.ca).unwrap();
    let base64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = folder.join("relay-ca.der");
    std::fs::write(
        &der,
        base64::engine::general_purpose::STANDARD
            .decode(base64)
            .unwrap(),
    )
    .unwrap();
    // Text, and no certificate in it.
    let text = folder.join("relay-ca.txt");
    std::fs::write(&text, "this is the CA, trust me\n").unwrap();
    let missing = folder.join("no-such-ca.pem");
    for (file, problem) in [
        (&der, "is not PEM text"),
        (&text, "holds no certificate"),
        (&missing, "cannot be read"),
    ] {
        let (code, err) = serve_with_a_relay_ca_file(file);
        assert_eq!(code, Some(1), "{err}");
        let expected = format!(
            "setting up outbound mail ([mail]): mail.smtp.ca_file {}: {problem}",
            file.display()
        );
        assert!(err.contains(&expected), "{expected} not in {err}");
        assert!(!err.contains(RELAY_PASSWORD), "{err}");
    }
}
