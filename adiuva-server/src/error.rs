//! Errors on the wire: always `{"detail", "code"}`. HTTP status comes from one mapping of
//! core error kinds ([`ApiError::from`]); poem's own errors (unknown route, wrong
//! method, bad JSON, missing auth) are reshaped in [`to_json_error`].

use adiuva_core::Error;
use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::Object;
use poem_openapi::payload::Json;
use serde_json::Value;

/// The body of every error response.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// A sentence for people (FastAPI-compatible).
    pub detail: String,
    /// A snake_case code for programs.
    pub code: String,
}

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Body.
    pub body: ErrorBody,
    /// Seconds for `Retry-After` (429 only).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with this status, code and detail.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                detail: detail.into(),
                code: code.to_owned(),
            },
            retry_after: None,
        }
    }

    /// 429 `rate_limited` with `Retry-After: secs`.
    pub fn rate_limited(detail: impl Into<String>, secs: u64) -> Self {
        Self {
            retry_after: Some(secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
        }
    }

    fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal server error",
        )
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::RateLimited {
                detail,
                retry_after_secs,
            } => return Self::rate_limited(detail.clone(), *retry_after_secs),
            Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Internal(_) => {
                tracing::error!(error = %error_chain(&e), "internal error");
                return Self::internal();
            }
            _ => {
                tracing::error!(error = %error_chain(&e), "unmapped error kind");
                return Self::internal();
            }
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = %e, "backend unavailable");
        } else if status == StatusCode::BAD_GATEWAY || status == StatusCode::GATEWAY_TIMEOUT {
            tracing::warn!(error = %e, code = e.code(), "upstream failure");
        }
        Self::new(status, code(&e), e.to_string())
    }
}

/// The code of `e` on the wire: core's, except for a missing device, agent, journey
/// session or OAuth provider, which their routes name `device_not_found`,
/// `agent_not_found`, `journey_not_found`, `provider_not_found` so a client can tell
/// them from an unknown route.
fn code(e: &Error) -> &'static str {
    match e {
        Error::NotFound("device") => "device_not_found",
        Error::NotFound("agent") => "agent_not_found",
        Error::NotFound("journey") => "journey_not_found",
        Error::NotFound("provider") => "provider_not_found",
        other => other.code(),
    }
}

/// `e` and all its sources, `: `-separated, for the log.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body.detail)
    }
}

impl std::error::Error for ApiError {}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        let mut resp = json_response(self.status, &self.body);
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(poem::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

fn json_response(status: StatusCode, body: &ErrorBody) -> Response {
    let mut resp = Json(body.clone()).into_response();
    resp.set_status(status);
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            poem::http::header::WWW_AUTHENTICATE,
            poem::http::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

/// Turns any error that reached the edge into a `{"detail", "code"}` response.
pub async fn to_json_error(err: poem::Error) -> Response {
    use poem::error::{CorsError, MethodNotAllowedError, NotFoundError};
    use poem_openapi::error::{
        AuthorizationError, ContentTypeError, ParseParamError, ParsePathError,
        ParseRequestPayloadError,
    };

    if let Some(api) = err.downcast_ref::<ApiError>() {
        return poem::error::ResponseError::as_response(api);
    }
    let (status, code, detail): (StatusCode, String, String) = if err.is::<NotFoundError>() {
        (
            StatusCode::NOT_FOUND,
            "not_found".into(),
            "no such route".into(),
        )
    } else if err.is::<MethodNotAllowedError>() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed".into(),
            "this route does not accept that method".into(),
        )
    } else if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
        let reason = e.to_string();
        // serde_json's syntax errors end in "at line N column M"; schema mismatches do not.
        let code = if reason.contains(" at line ") {
            "malformed_json"
        } else {
            "validation_error"
        };
        (StatusCode::UNPROCESSABLE_ENTITY, code.into(), reason)
    } else if let Some(e) = err.downcast_ref::<ParseParamError>() {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error".into(),
            e.to_string(),
        )
    } else if let Some(e) = err.downcast_ref::<ParsePathError>() {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error".into(),
            e.to_string(),
        )
    } else if let Some(e) = err.downcast_ref::<ContentTypeError>() {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type".into(),
            e.to_string(),
        )
    } else if err.is::<AuthorizationError>() {
        (StatusCode::UNAUTHORIZED, "unauthorized".into(), "missing or malformed Authorization header; send `Authorization: Bearer <access token>`".into())
    } else if let Some(e) = err.downcast_ref::<CorsError>() {
        (StatusCode::FORBIDDEN, "cors_rejected".into(), e.to_string())
    } else {
        let status = err.status();
        let detail = err.to_string();
        // Typed error responses of our operations (`api_errors!`) arrive here as errors
        // whose response is already `{"detail", "code"}` JSON: pass them through.
        let resp = err.into_response();
        let is_json = resp
            .headers()
            .get(poem::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json {
            let mut resp = resp;
            if status == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(
                    poem::http::header::WWW_AUTHENTICATE,
                    poem::http::HeaderValue::from_static("Bearer"),
                );
            }
            return resp;
        }
        if status.is_server_error() {
            tracing::error!(error = %detail, "unhandled error");
            (
                status,
                "internal_error".into(),
                "internal server error".into(),
            )
        } else {
            let code = status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase()
                .replace([' ', '-'], "_");
            (status, code, detail)
        }
    };
    json_response(status, &ErrorBody { detail, code })
}

/// The error codes one operation can answer with one status: implemented by each
/// [`api_errors!`] enum (and [`crate::api::chat::ChatError`]) once per declared status, so
/// the document lists, per operation and status, the closed set of `code`s.
pub trait ErrorCodes<const STATUS: u16> {
    /// The enum's name; the body schema is named `{NAME}{STATUS}`.
    const NAME: &'static str;
    /// Every `code` this status can carry.
    const CODES: &'static [&'static str];
}

/// An [`ErrorBody`] whose schema names its possible codes (`E`'s [`ErrorCodes`] for
/// `STATUS`). The wire is exactly `ErrorBody`'s; the schema extends it (`allOf`) with
/// `code` as an enum, so a generated client can `switch` on codes without a cast.
pub struct Coded<E, const STATUS: u16>(pub ErrorBody, std::marker::PhantomData<fn() -> E>);

impl<E, const STATUS: u16> Coded<E, STATUS> {
    /// Wraps a body.
    pub fn new(body: ErrorBody) -> Self {
        Self(body, std::marker::PhantomData)
    }
}

impl<E, const STATUS: u16> std::fmt::Debug for Coded<E, STATUS> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: ErrorCodes<STATUS>, const STATUS: u16> poem_openapi::types::Type for Coded<E, STATUS> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        format!("{}{STATUS}", E::NAME).into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        poem_openapi::registry::MetaSchemaRef::Reference(Self::name().into_owned())
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
        ErrorBody::register(registry);
        registry.create_schema::<Self, _>(Self::name().into_owned(), |_| {
            let mut code = MetaSchema::new("string");
            code.description = Some("What went wrong, for programs: one of these.");
            code.enum_items = E::CODES.iter().map(|c| Value::from(*c)).collect();
            let mut detail = MetaSchema::new("string");
            detail.description = Some("A sentence for people (FastAPI-compatible).");
            let mut schema = MetaSchema::new("object");
            schema.description =
                Some("An `ErrorBody` whose `code` is one of this response's codes.");
            schema.all_of = vec![ErrorBody::schema_ref()];
            schema.required = vec!["detail", "code"];
            schema.properties = vec![
                ("detail", MetaSchemaRef::Inline(Box::new(detail))),
                ("code", MetaSchemaRef::Inline(Box::new(code))),
            ];
            schema
        });
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl<E: ErrorCodes<STATUS>, const STATUS: u16> poem_openapi::types::ToJSON for Coded<E, STATUS> {
    fn to_json(&self) -> Option<Value> {
        self.0.to_json()
    }
}

/// Lists the codes of each status of an error-response enum ([`ErrorCodes`]).
#[macro_export]
macro_rules! error_codes {
    ($name:ident { $($status:literal => [$($code:ident),+ $(,)?]),* $(,)? }) => {
        $(
            impl $crate::error::ErrorCodes<$status> for $name {
                const NAME: &'static str = stringify!($name);
                const CODES: &'static [&'static str] = &[$(stringify!($code)),+];
            }
        )*
    };
}

/// Declares an operation's error responses: the listed statuses, each with the codes it
/// can carry, plus 429 (`rate_limited`), 500 (`internal_error`) and 503
/// (`database_unavailable` and the codes after `unavailable`), each body a [`Coded`]
/// [`ErrorBody`]. Converting an [`ApiError`] whose status is not listed is a bug: it is
/// logged and answered as 500, and the tests catch it (`tests/api/openapi.rs` checks
/// real error bodies of each kind against the codes the document lists).
#[macro_export]
macro_rules! api_errors {
    (
        $(#[$meta:meta])* $name:ident {
            $($status:literal => $variant:ident [$($code:ident),+ $(,)?]: $desc:literal),* $(,)?
        }
        $(unavailable [$($unavailable:ident),* $(,)?])?
    ) => {
        $(#[$meta])*
        #[derive(poem_openapi::ApiResponse, Debug)]
        pub enum $name {
            $(
                #[doc = $desc]
                #[oai(status = $status)]
                $variant(poem_openapi::payload::Json<$crate::error::Coded<$name, $status>>),
            )*
            /// `rate_limited`: over the per-minute budget; see `Retry-After`.
            #[oai(status = 429)]
            TooManyRequests(
                poem_openapi::payload::Json<$crate::error::Coded<$name, 429>>,
                /// Seconds until the budget has room again.
                #[oai(header = "Retry-After")] Option<u64>,
            ),
            /// A backend (database, blob store, vector index, model provider) is
            /// unavailable; retry later.
            #[oai(status = 503)]
            Unavailable(poem_openapi::payload::Json<$crate::error::Coded<$name, 503>>),
            /// Unexpected failure; details are in the server log under the request id.
            #[oai(status = 500)]
            Internal(poem_openapi::payload::Json<$crate::error::Coded<$name, 500>>),
        }

        $crate::error_codes!($name {
            $($status => [$($code),+],)*
            429 => [rate_limited],
            503 => [database_unavailable $($(, $unavailable)*)?],
            500 => [internal_error],
        });

        impl From<$crate::error::ApiError> for $name {
            fn from(e: $crate::error::ApiError) -> Self {
                use $crate::error::Coded;
                use poem_openapi::payload::Json;
                match e.status.as_u16() {
                    $($status => Self::$variant(Json(Coded::new(e.body))),)*
                    429 => Self::TooManyRequests(Json(Coded::new(e.body)), e.retry_after),
                    503 => Self::Unavailable(Json(Coded::new(e.body))),
                    500 => Self::Internal(Json(Coded::new(e.body))),
                    other => {
                        tracing::error!(status = other, code = %e.body.code, concat!("bug: status not declared for ", stringify!($name)));
                        Self::Internal(Json(Coded::new($crate::error::ErrorBody {
                            detail: "internal server error".into(),
                            code: "internal_error".into(),
                        })))
                    }
                }
            }
        }

        impl From<adiuva_core::Error> for $name {
            fn from(e: adiuva_core::Error) -> Self {
                $crate::error::ApiError::from(e).into()
            }
        }
    };
}
