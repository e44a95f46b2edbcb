//! Browser sessions in cookie mode, with curl as the browser: the refresh
//! token lives in `__Secure-twig_refresh` (HttpOnly, Secure,
//! SameSite=Strict, Path=/auth/), the page gets access tokens from
//! `POST /auth/refresh`, logs out with `POST /auth/logout`; each of these
//! passes the CSRF check. A single sign-on leaves the same cookie.

use twig_proto::sessions::v1 as spb;
use twig_tests::curl::{CurlBrowser, Hop};
use twig_tests::{Backend, PASSWORD, TestApp, bearer, email};

async fn app(backend: Backend) -> (TestApp, String) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let app = TestApp::builder(backend)
        .weak_hashing()
        .config_at_origin(move |c, origin| {
            c.server.public_origins = vec![origin.to_string()];
            let _ = tx.send(origin.to_string());
        })
        .spawn()
        .await;
    (app, rx.await.unwrap())
}

/// A same-origin page's POST to an `/auth/` route.
async fn post(browser: &CurlBrowser, origin: &str, route: &str, body: Option<&str>) -> Hop {
    let mut headers = vec![("Origin", origin), ("x-twig-csrf", "1")];
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    browser
        .request("POST", &format!("{origin}/auth/{route}"), &headers, body)
        .await
}

fn json(hop: &Hop) -> serde_json::Value {
    serde_json::from_str(&hop.body).unwrap_or_else(|e| panic!("{hop:#?}: {e}"))
}

fn refresh_cookie(hop: &Hop) -> Option<String> {
    hop.set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Secure-twig_refresh="))
        .map(str::to_string)
}

async fn a_browser_signs_in_refreshes_and_signs_out(backend: Backend) {
    let (app, origin) = app(backend).await;
    let who = email("browser");
    let signed = app.sign_up(&who).await;
    let browser = CurlBrowser::new();
    let body = serde_json::json!({"email": who, "password": PASSWORD}).to_string();

    let login = post(&browser, &origin, "login", Some(&body)).await;
    assert_eq!(login.status, 200, "{login:#?}");
    let session = json(&login);
    assert_eq!(
        session["user_id"],
        signed.user.as_ref().unwrap().id.as_str()
    );
    assert_eq!(
        session["organization_id"],
        signed.organization.as_ref().unwrap().id.as_str()
    );
    let cookie = refresh_cookie(&login).expect("the session cookie");
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/auth/",
        "Max-Age=",
    ] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(
        !login.body.contains("twig_rt_"),
        "no refresh token in the body"
    );
    assert_eq!(login.header("cache-control"), Some("no-store"));
    // The access token works.
    let token = session["access_token"].as_str().unwrap().to_string();
    app.sessions()
        .get_current_user(bearer(&token, spb::GetCurrentUserRequest {}))
        .await
        .unwrap();

    // The cookie (curl sends it as a browser would) gets new tokens, and
    // is replaced by the next refresh token.
    let refreshed = post(&browser, &origin, "refresh", None).await;
    assert_eq!(refreshed.status, 200, "{refreshed:#?}");
    let next = json(&refreshed);
    assert_eq!(next["session_id"], session["session_id"]);
    assert_ne!(next["access_token"], session["access_token"]);
    let rotated = refresh_cookie(&refreshed).expect("a new cookie");
    assert_ne!(rotated, cookie);

    // Logout ends the session and clears the cookie; the cookie's token
    // is dead.
    let old_refresh = rotated
        .trim_start_matches("__Secure-twig_refresh=")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let out = post(&browser, &origin, "logout", None).await;
    assert_eq!(out.status, 204, "{out:#?}");
    let cleared = refresh_cookie(&out).expect("the cookie cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let dead = app
        .sessions()
        .refresh(spb::RefreshRequest {
            refresh_token: old_refresh,
        })
        .await
        .unwrap_err();
    assert_eq!(dead.code(), tonic::Code::Unauthenticated);
    let after = post(&browser, &origin, "refresh", None).await;
    assert_eq!(after.status, 401, "{after:#?}");
    assert_eq!(json(&after)["code"], "unauthenticated");
    // Logging out again is harmless.
    assert_eq!(post(&browser, &origin, "logout", None).await.status, 204);
    let logouts = twig_audit::events_with_action(&app.db, "session.logout")
        .await
        .unwrap();
    assert_eq!(logouts.len(), 1);
    app.stop().await;
}

async fn cross_site_requests_are_refused(backend: Backend) {
    let (app, origin) = app(backend).await;
    let who = email("csrf");
    app.sign_up(&who).await;
    let body = serde_json::json!({"email": who, "password": PASSWORD}).to_string();
    let browser = CurlBrowser::new();
    let url = format!("{origin}/auth/login");
    for headers in [
        // A form on another site: its Origin, no header.
        vec![
            ("Origin", "https://evil.example"),
            ("Content-Type", "application/json"),
        ],
        // Another site's script cannot send the header without a
        // preflight, which these routes never answer.
        vec![
            ("Origin", "https://evil.example"),
            ("x-twig-csrf", "1"),
            ("Content-Type", "application/json"),
        ],
        // Our origin without the header (a form).
        vec![
            ("Origin", origin.as_str()),
            ("Content-Type", "application/json"),
        ],
        // No Origin at all, no Referer.
        vec![("x-twig-csrf", "1"), ("Content-Type", "application/json")],
        vec![
            ("Origin", "null"),
            ("x-twig-csrf", "1"),
            ("Content-Type", "application/json"),
        ],
    ] {
        let refused = browser.request("POST", &url, &headers, Some(&body)).await;
        assert_eq!(refused.status, 403, "{headers:?}: {refused:#?}");
        assert!(refresh_cookie(&refused).is_none());
    }
    // A preflight gets no CORS answer.
    let preflight = browser
        .request(
            "OPTIONS",
            &url,
            &[
                ("Origin", "https://evil.example"),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "x-twig-csrf"),
            ],
            None,
        )
        .await;
    assert!(
        preflight.header("access-control-allow-origin").is_none(),
        "{preflight:#?}"
    );
    // Bad bodies are clear 400s.
    for bad in [
        "",
        "{",
        "{\"email\": 1}",
        "{\"email\":\"a@b.c\",\"password\":\"x\",\"other\":1}",
    ] {
        let refused = post(&browser, &origin, "login", Some(bad)).await;
        assert_eq!(refused.status, 400, "{bad:?}: {refused:#?}");
        assert_eq!(json(&refused)["code"], "invalid_argument");
    }
    let wrong = post(
        &browser,
        &origin,
        "login",
        Some(&serde_json::json!({"email": who, "password": "not the password"}).to_string()),
    )
    .await;
    assert_eq!(wrong.status, 401, "{wrong:#?}");
    app.stop().await;
}

async fn two_tabs_refreshing_at_once_keep_the_session(backend: Backend) {
    let (app, origin) = app(backend).await;
    let who = email("tabs");
    app.sign_up(&who).await;
    let browser = CurlBrowser::new();
    let body = serde_json::json!({"email": who, "password": PASSWORD}).to_string();
    assert_eq!(
        post(&browser, &origin, "login", Some(&body)).await.status,
        200
    );
    // Both tabs send the same cookie at once.
    let jar = std::fs::read_to_string(browser.jar()).unwrap();
    let second = CurlBrowser::new();
    std::fs::write(second.jar(), &jar).unwrap();
    let (a, b) = tokio::join!(
        post(&browser, &origin, "refresh", None),
        post(&second, &origin, "refresh", None)
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:#?} {b:#?}");
    let lost = if a.status == 409 { &a } else { &b };
    assert_eq!(json(lost)["code"], "refresh_race");
    assert!(
        refresh_cookie(lost).is_none(),
        "a lost race keeps the cookie"
    );
    // The winner's cookie works on.
    let winner = if a.status == 200 { &browser } else { &second };
    assert_eq!(post(winner, &origin, "refresh", None).await.status, 200);
    app.stop().await;
}

on_both_backends!(
    a_browser_signs_in_refreshes_and_signs_out,
    cross_site_requests_are_refused,
    two_tabs_refreshing_at_once_keep_the_session,
);
