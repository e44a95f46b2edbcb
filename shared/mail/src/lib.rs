//! Outbound email for every service, written once.
//!
//! A service builds a [`Mail`] (recipient and [`Template`]) and hands it to
//! the process's one [`Mailer`] (`twig_module::Context::mailer`).
//! [`Mailer::send`] never waits: it puts the message on a bounded queue
//! and returns, or drops the message when the queue is full (a warning
//! and a metric). Callers therefore answer the same, and as fast, whether
//! or not they sent anything, so timing never tells an outsider whether an
//! address has an account.
//!
//! A worker task delivers the queue: to the SMTP relay of `[mail.smtp]`
//! (lettre over rustls: plain, STARTTLS or TLS, trusting the webpki roots
//! and the CA certificates of `mail.smtp.ca_file`; optional login), or, with
//! no relay, as one `.eml` file per message into an outbox folder
//! (beside the embedded SQLite database by default), written atomically.
//! Transient failures are retried with doubling waits. Each message's
//! outcome is counted in `twig_mail_messages_total{template, outcome}`.
//! Logs name the template and a short hash of the recipient; a message's
//! links (which hold tokens) never reach a log, an error or `Debug`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use twig_clock::Clock;
use twig_config::Config;

mod delivery;
pub mod templates;

pub use delivery::{MailError, Outcome};
pub use templates::{Rendered, Template};

/// Deliveries in progress at once (each may be waiting between retries).
const PARALLEL_DELIVERIES: usize = 4;

/// At most one "queue full" warning this often (drops are all counted).
const DROP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// One message to send.
#[derive(Clone, PartialEq, Eq)]
pub struct Mail {
    /// The recipient's address, normalised by the caller
    /// (`twig_sessions::Email`).
    pub to: String,
    /// The recipient's name, for the `To` header and the greeting.
    pub to_name: Option<String>,
    /// What the message says.
    pub template: Template,
}

impl Mail {
    /// A message to `to`.
    pub fn new(to: impl Into<String>, template: Template) -> Self {
        Self {
            to: to.into(),
            to_name: None,
            template,
        }
    }

    /// The same, greeting the recipient by `name` (ignored when empty).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.to_name = (!name.trim().is_empty()).then_some(name);
        self
    }
}

/// The template and a hash of the recipient: never the address itself or
/// a link.
impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mail")
            .field("to", &recipient_hash(&self.to))
            .field("template", &self.template)
            .finish()
    }
}

/// What became of a message handed to [`Mailer::send`]. Callers answer the
/// same whatever it is; it is for tests and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// On the queue; the worker delivers it.
    Queued,
    /// Not kept: the queue was full, or the mailer has stopped.
    Dropped,
}

/// The process's one sender of email: cheap to clone, shared by every
/// service.
#[derive(Clone)]
pub struct Mailer {
    queue: mpsc::Sender<Mail>,
    shared: Arc<Shared>,
    link_base: Arc<str>,
    capacity: usize,
}

/// What the handles and the worker share.
#[derive(Default)]
struct Shared {
    /// Messages queued or being delivered.
    pending: AtomicUsize,
    /// Told when `pending` drops to zero.
    idle: Notify,
    /// Set once a stop's time is up: no more waits between retries.
    hurry: AtomicBool,
    /// Dropped since the last warning.
    dropped: AtomicU64,
    /// When the last "queue full" warning was written.
    last_drop_warning: Mutex<Option<Instant>>,
}

impl Shared {
    fn done(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("pending", &self.pending())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Starts the mailer of `config` (`[mail]`; the database, for the
    /// default outbox folder) and its worker task, on the current tokio
    /// runtime. Fails when the relay's TLS settings or the outbox folder
    /// cannot be set up. The worker ends when the last handle is dropped.
    pub fn start(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, MailError> {
        let mail = &config.mail;
        let worker = delivery::Worker::new(config, clock)?;
        let capacity = mail.queue_capacity.max(1);
        let (queue, received) = mpsc::channel(capacity);
        let shared = Arc::new(Shared::default());
        tokio::spawn(worker.run(received, shared.clone(), PARALLEL_DELIVERIES));
        Ok(Self {
            queue,
            shared,
            link_base: mail.link_base_or_default().into(),
            capacity,
        })
    }

    /// Queues `mail` and returns at once; never waits. A full queue drops
    /// the message: counted (`outcome="dropped"`) and warned about (at
    /// most one warning every 10 s).
    pub fn send(&self, mail: Mail) -> Enqueued {
        let template = mail.template.name();
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        match self.queue.try_send(mail) {
            Ok(()) => Enqueued::Queued,
            Err(_) => {
                self.shared.done();
                delivery::count(template, Outcome::Dropped);
                self.warn_dropped();
                Enqueued::Dropped
            }
        }
    }

    /// `link_base` + `path` + `?token=` + `token`, each percent-encoded:
    /// `mailer.link("/reset-password", &token)` →
    /// `https://app.example.com/reset-password?token=…`.
    pub fn link(&self, path: &str, token: &str) -> String {
        let mut link = String::with_capacity(self.link_base.len() + path.len() + token.len() + 8);
        link.push_str(&self.link_base);
        link.push('/');
        percent_encode(path.trim_start_matches('/'), b"/", &mut link);
        link.push_str("?token=");
        percent_encode(token, b"", &mut link);
        link
    }

    /// `link_base` + `path`, percent-encoded: a page of the front end
    /// with no token (`mailer.page("/sign-in")`).
    pub fn page(&self, path: &str) -> String {
        let mut link = String::with_capacity(self.link_base.len() + path.len() + 1);
        link.push_str(&self.link_base);
        link.push('/');
        percent_encode(path.trim_start_matches('/'), b"/", &mut link);
        link
    }

    /// Messages queued or being delivered now.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }

    /// Waits until every message sent so far is delivered or has failed
    /// (tests; shutdown uses [`Mailer::drain`]).
    pub async fn flush(&self) {
        loop {
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.pending() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// [`Mailer::flush`] for at most `within` (a stop: the server's drain
    /// time). Past it, deliveries stop waiting between retries, a warning
    /// says how many messages are left, and `false` is returned.
    pub async fn drain(&self, within: Duration) -> bool {
        if tokio::time::timeout(within, self.flush()).await.is_ok() {
            return true;
        }
        self.shared.hurry.store(true, Ordering::Release);
        tracing::warn!(
            left = self.pending(),
            ?within,
            "mail still queued or being delivered at shutdown is not sent"
        );
        false
    }

    fn warn_dropped(&self) {
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        let Ok(mut last) = self.shared.last_drop_warning.lock() else {
            return;
        };
        if last.is_some_and(|at| at.elapsed() < DROP_WARNING_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let dropped = self.shared.dropped.swap(0, Ordering::Relaxed);
        tracing::warn!(
            dropped,
            capacity = self.capacity,
            "mail queue full: messages dropped (the relay is slow or down, or a flood of requests)"
        );
    }
}

/// A short hash of an address, for logs: enough to tell messages to one
/// recipient apart from others, not the address.
pub fn recipient_hash(address: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(address.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends `text` to `out` with every byte but the unreserved characters
/// of RFC 3986 (and those in `keep`) percent-encoded.
fn percent_encode(text: &str, keep: &[u8], out: &mut String) {
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailer(link_base: &str) -> Mailer {
        let (queue, _) = mpsc::channel(1);
        Mailer {
            queue,
            shared: Arc::default(),
            link_base: link_base.trim_end_matches('/').into(),
            capacity: 1,
        }
    }

    #[test]
    fn mail_links_are_joined_and_encoded() {
        let m = mailer("https://app.example.com/");
        assert_eq!(
            m.link("/reset-password", "twig_rt_AbC123"),
            "https://app.example.com/reset-password?token=twig_rt_AbC123"
        );
        assert_eq!(
            m.link("verify email", "a+b/c=d&e?f#g h%"),
            "https://app.example.com/verify%20email?token=a%2Bb%2Fc%3Dd%26e%3Ff%23g%20h%25"
        );
        let m = mailer("https://example.com/console");
        assert_eq!(
            m.link("/join/org?x#y", "é"),
            "https://example.com/console/join/org%3Fx%23y?token=%C3%A9"
        );
    }

    #[test]
    fn a_mail_shows_no_address_and_no_link() {
        let mail = Mail::new(
            "ann@example.com",
            Template::VerifyEmail {
                link: "https://x/v?token=secret".into(),
            },
        )
        .with_name("Ann");
        let shown = format!("{mail:?}");
        assert!(!shown.contains("ann@"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains(&recipient_hash("ann@example.com")),
            "{shown}"
        );
        assert_eq!(
            Mail::new("a@b", mail.template.clone())
                .with_name(" ")
                .to_name,
            None
        );
    }

    #[tokio::test]
    async fn a_full_mail_queue_drops_at_once() {
        // No worker reads this queue of one.
        let (queue, _received) = mpsc::channel(1);
        let m = Mailer {
            queue,
            shared: Arc::default(),
            link_base: "https://x".into(),
            capacity: 1,
        };
        let mail = Mail::new("a@example.com", Template::VerifyEmail { link: "l".into() });
        assert_eq!(m.send(mail.clone()), Enqueued::Queued);
        let started = Instant::now();
        for _ in 0..1000 {
            assert_eq!(m.send(mail.clone()), Enqueued::Dropped);
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(m.pending(), 1);
        assert!(!m.drain(Duration::from_millis(10)).await);
    }
}
