//! The worker: renders each queued message and delivers it over SMTP or
//! into the outbox folder, retrying transient failures, and counts the
//! outcome.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::{self, PoolConfig};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::{Semaphore, mpsc};
use twig_clock::Clock;
use twig_config::{Config, SmtpTls};

use crate::{Mail, Shared, recipient_hash};

/// What became of a message: the `outcome` label of
/// `twig_mail_messages_total` (a fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The relay accepted it.
    Sent,
    /// Written into the outbox folder.
    Written,
    /// Not kept: the queue was full.
    Dropped,
    /// The relay refused it for good (5xx), or it could not be written.
    Rejected,
    /// Every attempt failed (no connection, timeouts, 4xx answers).
    Failed,
    /// The recipient or sender is not a usable address.
    Invalid,
    /// Neither a relay nor an outbox folder is configured.
    NotConfigured,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Written => "written",
            Self::Dropped => "dropped",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Invalid => "invalid",
            Self::NotConfigured => "not_configured",
        }
    }
}

/// Counts one message's outcome.
pub(crate) fn count(template: &'static str, outcome: Outcome) {
    metrics::counter!(
        "twig_mail_messages_total",
        "template" => template,
        "outcome" => outcome.as_str(),
    )
    .increment(1);
}

/// The mailer cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// `mail.from` is not an address lettre accepts.
    #[error("mail.from {from:?} is not a usable address: {reason}")]
    From {
        /// The value.
        from: String,
        /// Why.
        reason: String,
    },
    /// The relay's TLS settings cannot be built.
    #[error("mail.smtp: cannot set up TLS to {host}: {source}")]
    Tls {
        /// The relay.
        host: String,
        /// Why.
        source: smtp::Error,
    },
    /// `mail.smtp.ca_file` cannot be read or holds no usable certificate.
    #[error("mail.smtp.ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The outbox folder cannot be created.
    #[error("cannot create the mail outbox folder {path} (mail.outbox_dir): {source}")]
    Outbox {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Where messages go.
enum Transport {
    Smtp {
        relay: AsyncSmtpTransport<Tokio1Executor>,
        /// Bound on one whole attempt (several relay answers).
        attempt_timeout: Duration,
    },
    Outbox(PathBuf),
    NotConfigured,
}

/// Renders and delivers.
pub(crate) struct Worker {
    transport: Transport,
    from: Mailbox,
    product: String,
    clock: Arc<dyn Clock>,
    attempts: u32,
    backoff: Duration,
}

impl Worker {
    pub(crate) fn new(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, MailError> {
        let mail = &config.mail;
        let from_text = mail.from_or_default();
        let from = from_text.parse::<Mailbox>().map_err(|e| MailError::From {
            from: from_text.to_string(),
            reason: e.to_string(),
        })?;
        let transport = match (&mail.smtp, &mail.outbox_dir) {
            (Some(smtp), _) => {
                let host = smtp.host_bare().to_string();
                // Read even with `tls = "none"` (which the configuration
                // check refuses beside it): a bad file always fails here.
                let extra_roots = match &smtp.ca_file {
                    Some(path) => ca_certificates(path, &host)?,
                    None => Vec::new(),
                };
                let tls = |host: &str| {
                    let mut builder = TlsParameters::builder(host.to_string());
                    for root in &extra_roots {
                        builder = builder.add_root_certificate(root.clone());
                    }
                    builder.build_rustls().map_err(|source| MailError::Tls {
                        host: host.to_string(),
                        source,
                    })
                };
                let mut relay = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host)
                    .port(smtp.port())
                    .timeout(Some(smtp.timeout))
                    .pool_config(PoolConfig::new().max_size(crate::PARALLEL_DELIVERIES as u32))
                    .tls(match smtp.tls {
                        SmtpTls::None => Tls::None,
                        SmtpTls::Starttls => Tls::Required(tls(&host)?),
                        SmtpTls::Tls => Tls::Wrapper(tls(&host)?),
                    });
                if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
                    relay =
                        relay.credentials(Credentials::new(user.clone(), password.expose().into()));
                }
                tracing::info!(
                    host = %smtp.host,
                    port = smtp.port(),
                    tls = ?smtp.tls,
                    extra_ca_certificates = extra_roots.len(),
                    login = smtp.username.is_some(),
                    "mail: delivered to the SMTP relay"
                );
                Transport::Smtp {
                    relay: relay.build(),
                    attempt_timeout: smtp.timeout * 3,
                }
            }
            (None, configured) => {
                match configured
                    .clone()
                    .or_else(|| config.database.sqlite_folder().map(|d| d.join("outbox")))
                {
                    Some(dir) => {
                        create_private_dir(&dir).map_err(|source| MailError::Outbox {
                            path: dir.clone(),
                            source,
                        })?;
                        tracing::info!(
                            dir = %dir.display(),
                            "mail: no SMTP relay ([mail.smtp]): messages are written into the outbox folder"
                        );
                        Transport::Outbox(dir)
                    }
                    None => {
                        tracing::warn!(
                            "mail: no SMTP relay ([mail.smtp]) and no outbox folder \
                             (mail.outbox_dir): messages are NOT sent"
                        );
                        Transport::NotConfigured
                    }
                }
            }
        };
        Ok(Self {
            transport,
            from,
            product: mail.product_name.clone(),
            clock,
            attempts: mail.attempts.max(1),
            backoff: mail.retry_backoff,
        })
    }

    /// Delivers what arrives on `queue`, up to `parallel` at once, until
    /// every handle is dropped.
    pub(crate) async fn run(
        self,
        mut queue: mpsc::Receiver<Mail>,
        shared: Arc<Shared>,
        parallel: usize,
    ) {
        let worker = Arc::new(self);
        let slots = Arc::new(Semaphore::new(parallel));
        while let Some(mail) = queue.recv().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let (worker, shared) = (worker.clone(), shared.clone());
            tokio::spawn(async move {
                let template = mail.template.name();
                let outcome = worker.deliver(mail, &shared).await;
                count(template, outcome);
                drop(slot);
                shared.done();
            });
        }
    }

    /// One message, with its retries.
    async fn deliver(&self, mail: Mail, shared: &Shared) -> Outcome {
        let template = mail.template.name();
        let to = recipient_hash(&mail.to);
        let message = match self.message(&mail) {
            Ok(message) => message,
            Err(reason) => {
                tracing::warn!(template, to, reason, "mail not sent: not a usable message");
                return Outcome::Invalid;
            }
        };
        let mut attempt = 1;
        loop {
            let result = match &self.transport {
                Transport::Smtp {
                    relay,
                    attempt_timeout,
                } => send_smtp(relay, *attempt_timeout, &message).await,
                Transport::Outbox(dir) => self.write(dir, &message).await,
                Transport::NotConfigured => {
                    tracing::warn!(template, to, "mail not sent: no relay and no outbox folder");
                    return Outcome::NotConfigured;
                }
            };
            let failure = match result {
                Ok(outcome) => {
                    tracing::debug!(template, to, attempt, "mail delivered");
                    return outcome;
                }
                Err(failure) => failure,
            };
            let last = attempt >= self.attempts || shared.hurry.load(Ordering::Acquire);
            if failure.permanent || last {
                tracing::warn!(
                    template,
                    to,
                    attempt,
                    error = %failure.reason,
                    "mail not delivered"
                );
                return if failure.permanent {
                    Outcome::Rejected
                } else {
                    Outcome::Failed
                };
            }
            let wait = self.backoff.saturating_mul(1 << (attempt - 1).min(16));
            tracing::debug!(template, to, attempt, error = %failure.reason, ?wait, "mail delivery failed; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// The message as the relay or the outbox gets it.
    fn message(&self, mail: &Mail) -> Result<Message, String> {
        let address = mail
            .to
            .parse::<Address>()
            .map_err(|e| format!("recipient: {e}"))?;
        let rendered = mail.template.render(&self.product, mail.to_name.as_deref());
        let date = SystemTime::from(self.clock.now());
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(mail.to_name.clone(), address))
            .subject(rendered.subject)
            .date(date)
            .message_id(None)
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(rendered.text),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(rendered.html),
                    ),
            )
            .map_err(|e| format!("message: {e}"))
    }

    /// Writes `message` into `dir` as `<time>-<uuid>.eml`: first under a
    /// hidden temporary name, synced, then renamed, so a reader of `*.eml`
    /// never sees half a message.
    async fn write(&self, dir: &Path, message: &Message) -> Result<Outcome, Failure> {
        let name = format!(
            "{}-{}.eml",
            self.clock.now().format("%Y%m%dT%H%M%S%.3fZ"),
            uuid::Uuid::new_v4().simple()
        );
        let (dir, bytes) = (dir.to_path_buf(), message.formatted());
        tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &bytes))
            .await
            .map_err(|e| Failure::transient(format!("outbox writer: {e}")))?
            .map(|()| Outcome::Written)
            .map_err(|e| Failure::transient(format!("outbox: {e}")))
    }
}

/// Why an attempt failed.
struct Failure {
    reason: String,
    /// Retrying cannot help (the relay said no for good).
    permanent: bool,
}

impl Failure {
    fn transient(reason: String) -> Self {
        Self {
            reason,
            permanent: false,
        }
    }
}

async fn send_smtp(
    relay: &AsyncSmtpTransport<Tokio1Executor>,
    within: Duration,
    message: &Message,
) -> Result<Outcome, Failure> {
    let raw = message.formatted();
    match tokio::time::timeout(within, relay.send_raw(message.envelope(), &raw)).await {
        Err(_) => Err(Failure::transient(format!("no answer within {within:?}"))),
        Ok(Ok(_)) => Ok(Outcome::Sent),
        Ok(Err(e)) => Err(Failure {
            permanent: e.is_permanent(),
            reason: describe(&e),
        }),
    }
}

/// An SMTP error for a log line. A relay's answer may quote the recipient,
/// so only its code is kept; connection and TLS errors are given whole.
fn describe(error: &smtp::Error) -> String {
    if let Some(code) = error.status() {
        let kind = if error.is_permanent() {
            "refused"
        } else {
            "deferred"
        };
        return format!("{kind} by the relay ({code})");
    }
    if error.is_timeout() {
        return "timed out".into();
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The certificates of the PEM file `path` (`mail.smtp.ca_file`), one
/// lettre [`Certificate`] each, every one checked on its own as a root a
/// TLS connection to `host` could trust: the error names the file and
/// which certificate is wrong, rather than failing later on the first
/// connection.
fn ca_certificates(path: &Path, host: &str) -> Result<Vec<Certificate>, MailError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let fail = |reason: String| MailError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot be read: {e}")))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        fail("is not PEM text (DER? `openssl x509 -inform der` converts it)".into())
    })?;
    let mut certificates = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let number = certificates.len() + 1;
        let block = &rest[start..];
        let Some(end) = block.find(END) else {
            return Err(fail(format!("certificate {number} has no {END} line")));
        };
        let block = &block[..end + END.len()];
        let certificate = Certificate::from_pem(block.as_bytes())
            .map_err(|e| fail(format!("certificate {number} is not valid PEM: {e}")))?;
        TlsParameters::builder(host.to_string())
            .certificate_store(CertificateStore::None)
            .add_root_certificate(certificate.clone())
            .build_rustls()
            .map_err(|e| {
                fail(format!(
                    "certificate {number} is not a usable CA certificate: {e}"
                ))
            })?;
        certificates.push(certificate);
        rest = &rest[start + end + END.len()..];
    }
    if certificates.is_empty() {
        return Err(fail(format!(
            "holds no certificate: expected PEM ({BEGIN} … {END})"
        )));
    }
    Ok(certificates)
}

/// Creates `dir` (and its parents) if missing, the folder itself readable
/// by the owner only: messages hold sign-in links.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = dir.join(format!(".{name}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = (|| {
        let mut file = options.open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, dir.join(name))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mailer, Template};

    fn outbox_config(dir: &Path) -> Config {
        let mut config = Config::default();
        config.mail.outbox_dir = Some(dir.join("nested/outbox"));
        config.mail.from = Some("Acme <no-reply@acme.example>".into());
        config.mail.product_name = "Acme".into();
        config
    }

    #[tokio::test]
    async fn mail_into_the_outbox_is_one_whole_eml_file_each() {
        let dir = tempfile::tempdir().unwrap();
        let config = outbox_config(dir.path());
        let mailer = Mailer::start(&config, Arc::new(twig_clock::SystemClock)).unwrap();
        let link = mailer.link("/verify", "tok");
        for i in 0..3 {
            mailer.send(
                Mail::new(
                    format!("ann{i}@example.com"),
                    Template::VerifyEmail { link: link.clone() },
                )
                .with_name("Ann"),
            );
        }
        mailer.flush().await;
        let outbox = dir.path().join("nested/outbox");
        let mut files: Vec<_> = std::fs::read_dir(&outbox)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 3, "{files:?}");
        for file in &files {
            assert_eq!(file.extension().unwrap(), "eml");
            let text = std::fs::read_to_string(file).unwrap();
            assert!(
                text.contains("From: Acme <no-reply@acme.example>\r\n"),
                "{text}"
            );
            assert!(
                text.contains("Subject: Verify your email for Acme\r\n"),
                "{text}"
            );
            assert!(text.contains("multipart/alternative"), "{text}");
            assert!(
                text.contains("Content-Type: text/plain; charset=utf-8"),
                "{text}"
            );
            assert!(
                text.contains("Content-Type: text/html; charset=utf-8"),
                "{text}"
            );
            assert!(text.contains("Message-ID: <"), "{text}");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(file).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&outbox).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }

    #[tokio::test]
    async fn mail_to_a_bad_address_is_counted_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let config = outbox_config(dir.path());
        let worker = Worker::new(&config, Arc::new(twig_clock::SystemClock)).unwrap();
        let shared = Shared::default();
        let outcome = worker
            .deliver(
                Mail::new("not an address", Template::VerifyEmail { link: "l".into() }),
                &shared,
            )
            .await;
        assert_eq!(outcome, Outcome::Invalid);
    }

    #[test]
    fn mail_outcomes_are_counted_by_template_and_outcome() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        // A port nothing listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let config = outbox_config(dir.path());
                let outbox = Mailer::start(&config, Arc::new(twig_clock::SystemClock)).unwrap();
                let verify = Template::VerifyEmail { link: "l".into() };
                outbox.send(Mail::new("a@example.com", verify.clone()));
                outbox.send(Mail::new("not an address", verify.clone()));
                outbox.flush().await;

                let mut config = outbox_config(dir.path());
                config.mail.attempts = 3;
                config.mail.retry_backoff = Duration::from_millis(5);
                config.mail.smtp = Some(twig_config::SmtpConfig {
                    host: "127.0.0.1".into(),
                    port: Some(closed.port()),
                    tls: SmtpTls::None,
                    ..Default::default()
                });
                let relay = Mailer::start(&config, Arc::new(twig_clock::SystemClock)).unwrap();
                let started = std::time::Instant::now();
                relay.send(Mail::new(
                    "b@example.com",
                    Template::PasswordChanged {
                        at: chrono::DateTime::UNIX_EPOCH,
                        ip: None,
                    },
                ));
                assert!(started.elapsed() < Duration::from_millis(50));
                relay.flush().await;
                // Three attempts, two waits of 5 and 10 ms between them.
                assert!(started.elapsed() >= Duration::from_millis(15));
            });
        });
        let page = handle.render();
        for line in [
            r#"twig_mail_messages_total{template="verify_email",outcome="written"} 1"#,
            r#"twig_mail_messages_total{template="verify_email",outcome="invalid"} 1"#,
            r#"twig_mail_messages_total{template="password_changed",outcome="failed"} 1"#,
        ] {
            assert!(page.contains(line), "{line} not in\n{page}");
        }
        assert!(!page.contains("example.com"), "{page}");
    }

    /// A relay over TLS at `smtp.acme.example` trusting `ca_file`.
    fn tls_config(dir: &Path, ca_file: PathBuf) -> Config {
        let mut config = outbox_config(dir);
        config.mail.smtp = Some(twig_config::SmtpConfig {
            host: "smtp.acme.example".into(),
            tls: SmtpTls::Tls,
            ca_file: Some(ca_file),
            username: Some("twig".into()),
            password: Some(twig_config::Secret::new("relay-secret-9")),
            ..Default::default()
        });
        config
    }

    fn ca_file_error(config: &Config) -> String {
        match Worker::new(config, Arc::new(twig_clock::SystemClock)) {
            Err(error @ MailError::CaFile { .. }) => error.to_string(),
            Err(other) => panic!("not a ca_file error: {other}"),
            Ok(_) => panic!("the mailer started"),
        }
    }

    // The relay's connection pool needs the runtime.
    #[tokio::test]
    async fn mail_ca_file_of_several_certificates_is_trusted_besides_the_roots() {
        let dir = tempfile::tempdir().unwrap();
        let mut bundle = String::from("# two CAs of the relay\n");
        for name in ["Relay CA 1", "Relay CA 2"] {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let key = rcgen::KeyPair::generate().unwrap();
            bundle.push_str(&params.self_signed(&key).unwrap().pem());
            // A key beside them is not a certificate, and not an error.
            bundle.push_str(&key.serialize_pem());
        }
        let file = dir.path().join("relay-ca.pem");
        std::fs::write(&file, &bundle).unwrap();
        assert_eq!(
            ca_certificates(&file, "smtp.acme.example").unwrap().len(),
            2
        );
        let config = tls_config(dir.path(), file.clone());
        let worker = Worker::new(&config, Arc::new(twig_clock::SystemClock)).unwrap();
        assert!(matches!(worker.transport, Transport::Smtp { .. }));
        // STARTTLS reads it the same.
        let mut config = tls_config(dir.path(), file);
        config.mail.smtp.as_mut().unwrap().tls = SmtpTls::Starttls;
        assert!(Worker::new(&config, Arc::new(twig_clock::SystemClock)).is_ok());
    }

    #[test]
    fn mail_ca_file_that_is_missing_or_holds_no_certificate_fails_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = ca_file_error(&tls_config(dir.path(), missing.clone()));
        assert!(
            err.starts_with(&format!(
                "mail.smtp.ca_file {}: cannot be read: ",
                missing.display()
            )),
            "{err}"
        );
        let cases = [
            ("empty.pem", &b""[..], "holds no certificate"),
            ("text.pem", b"not a certificate\n", "holds no certificate"),
            (
                "binary.der",
                &[0x30, 0x82, 0xff, 0xfe][..],
                "is not PEM text",
            ),
            (
                "key-only.pem",
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "holds no certificate",
            ),
            (
                "cut.pem",
                b"-----BEGIN CERTIFICATE-----\nMIIB\n",
                "certificate 1 has no -----END CERTIFICATE----- line",
            ),
            (
                "bad-base64.pem",
                b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "certificate 1 is not valid PEM",
            ),
            (
                "not-der.pem",
                b"-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
                "certificate 1 is not a usable CA certificate",
            ),
        ];
        for (name, bytes, expected) in cases {
            let file = dir.path().join(name);
            std::fs::write(&file, bytes).unwrap();
            let err = ca_file_error(&tls_config(dir.path(), file.clone()));
            assert!(
                err.starts_with(&format!("mail.smtp.ca_file {}: ", file.display()))
                    && err.contains(expected),
                "{name}: {expected} not in {err}"
            );
            assert!(!err.contains("relay-secret-9"), "{err}");
        }
    }

    #[test]
    fn mail_without_relay_or_folder_is_not_configured() {
        let mut config = Config::default();
        config.database.url = twig_config::Secret::new("postgres://u@db/twig");
        let worker = Worker::new(&config, Arc::new(twig_clock::SystemClock)).unwrap();
        assert!(matches!(worker.transport, Transport::NotConfigured));
        config.mail.from = Some("nobody".into());
        assert!(matches!(
            Worker::new(&config, Arc::new(twig_clock::SystemClock)),
            Err(MailError::From { .. })
        ));
    }
}
