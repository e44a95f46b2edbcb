//! A browser as curl is one: requests with a cookie jar (curl's own,
//! honouring `Path`, `Secure`, `HttpOnly`, `Max-Age`), redirects followed
//! one hop at a time so a test sees and checks each.

use std::process::Command;

/// One request and its answer.
#[derive(Debug, Clone)]
pub struct Hop {
    /// What was asked.
    pub url: String,
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl Hop {
    /// The first header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::header(&self.headers, name)
    }

    /// Every `Set-Cookie`.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `Location`, resolved against the URL asked.
    pub fn location(&self) -> Option<String> {
        let location = self.header("location")?;
        let base = url::Url::parse(&self.url).ok()?;
        base.join(location).ok().map(|u| u.to_string())
    }
}

/// A cookie jar and the requests that use it.
pub struct CurlBrowser {
    jar: tempfile::TempDir,
}

impl Default for CurlBrowser {
    fn default() -> Self {
        Self::new()
    }
}

impl CurlBrowser {
    /// An empty jar.
    pub fn new() -> Self {
        Self {
            jar: tempfile::tempdir().expect("a folder for the jar"),
        }
    }

    /// The jar file (Netscape format), e.g. to check what it holds.
    pub fn jar(&self) -> std::path::PathBuf {
        self.jar.path().join("cookies")
    }

    /// One request: `method` to `url` with `headers` and `body`, the
    /// jar's cookies sent and its answer's kept; no redirect followed.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Hop {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "-i", "--max-time", "15", "-X", method])
            .arg("-b")
            .arg(self.jar())
            .arg("-c")
            .arg(self.jar());
        for (name, value) in headers {
            command.arg("-H").arg(format!("{name}: {value}"));
        }
        if let Some(body) = body {
            command.arg("--data-binary").arg(body);
        }
        command.arg(url);
        let url = url.to_string();
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("join")
            .expect("run curl (scripts/test installs it)");
        assert!(
            output.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let raw = String::from_utf8_lossy(&output.stdout).to_string();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("curl {url}: no status line in {raw:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Hop {
            url,
            status,
            headers,
            body: body.to_string(),
        }
    }

    /// A GET.
    pub async fn get(&self, url: &str) -> Hop {
        self.request("GET", url, &[], None).await
    }

    /// GETs `url` and follows redirects, hop by hop, until an answer is
    /// not a redirect, or the next URL satisfies `stop` (not requested),
    /// at most `max` hops. Every hop, in order.
    pub async fn follow(&self, url: &str, stop: impl Fn(&str) -> bool, max: usize) -> Vec<Hop> {
        let mut hops = Vec::new();
        let mut next = url.to_string();
        for _ in 0..max {
            let hop = self.get(&next).await;
            let location = (300..400)
                .contains(&hop.status)
                .then(|| hop.location())
                .flatten();
            hops.push(hop);
            match location {
                Some(location) if !stop(&location) => next = location,
                _ => return hops,
            }
        }
        panic!("more than {max} redirects from {url}: {hops:#?}");
    }
}
