//! Errors of browser routes that answer JSON (the `/auth/` routes, the
//! social link): one shape, `{"code": "<grpc code, lower case>",
//! "message": "…"}`, with the HTTP status of the code, never cached, and
//! `Retry-After` when the error carries one.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use twig_errors::ApiError;

/// `e` as a JSON answer.
pub fn json_error(e: &ApiError) -> Response {
    let code = twig_errors::grpc_code_name(e.code().grpc()).to_ascii_lowercase();
    let mut response = (
        e.code().http(),
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(serde_json::json!({"code": code, "message": e.message()})),
    )
        .into_response();
    if let Some(retry) = e.retry_after()
        && let Ok(value) = HeaderValue::from_str(&twig_errors::whole_seconds_up(retry).to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_answer_their_status_code_and_message() {
        let answer = json_error(&ApiError::resource_exhausted(
            "slow down",
            std::time::Duration::from_millis(1500),
        ));
        assert_eq!(answer.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.headers()[header::RETRY_AFTER], "2");
        assert_eq!(answer.headers()[header::CACHE_CONTROL], "no-store");
        let answer = json_error(&ApiError::unauthenticated("not signed in"));
        assert_eq!(answer.status(), http::StatusCode::UNAUTHORIZED);
    }
}
