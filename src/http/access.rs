//! Who may use which route: ingest routes for clients (with an ingest key), probes for
//! anyone (their details for operators only), operations routes (metrics, status, docs)
//! for operators: on the admin listener (`ADMIN_HOST`/`ADMIN_PORT`) and/or with a key from
//! `ADMIN_API_KEYS`.
//!
//! One middleware decides by path, before routing, from the class each route has in the
//! route table ([`super::ROUTES`]): a route cannot be added without one, and a path no route
//! serves is treated as an operations route.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, ResponseError, web};

use super::keys::KeyRing;
use super::{ApiError, Class, class_of};

/// Where operations routes are served and what they need.
pub struct Gate {
    /// `ADMIN_PORT`: when set, operations routes are served there only, and ingest routes
    /// are not served there.
    pub admin_port: Option<u16>,
    /// The keys: with an admin key configured (`ADMIN_API_KEYS`, or `role = "admin"` in
    /// `CONFIG_FILE`), operations routes (on either listener) need one, and probes show
    /// their details only with one.
    pub keys: std::sync::Arc<KeyRing>,
    /// `APP_ENV=prod`: with neither of the above, operations routes are closed (`403`)
    /// rather than open to whoever can reach the ingest port.
    pub prod: bool,
}

/// Marks the application served on the admin listener (its own app data).
#[derive(Debug, Clone, Copy)]
pub struct AdminListener;

impl Gate {
    fn on_admin_listener(&self, req: &HttpRequest) -> bool {
        self.admin_port.is_some() && req.app_data::<AdminListener>().is_some()
    }

    /// Whether `req` may see operators' details (probes' error texts, the ClickHouse
    /// version): with a valid admin key when keys are set, else on the admin listener, else
    /// anywhere outside `prod` when there is no admin listener.
    pub fn privileged(&self, req: &HttpRequest) -> bool {
        let keys = self.keys.keys();
        if !keys.admin_open() {
            return keys.is_admin(req.headers());
        }
        self.on_admin_listener(req) || (self.admin_port.is_none() && !self.prod)
    }

    /// What to answer instead of serving `req`, if anything.
    fn refusal(&self, req: &HttpRequest) -> Option<ApiError> {
        let on_admin = self.on_admin_listener(req);
        match class_of(req.path()) {
            Class::Ingest if on_admin => Some(ApiError::NotFound),
            Class::Ingest | Class::Probe | Class::Public => None,
            Class::Operations if self.admin_port.is_some() && !on_admin => Some(ApiError::NotFound),
            Class::Operations if !self.keys.keys().admin_open() => {
                (!self.keys.keys().is_admin(req.headers())).then_some(ApiError::Unauthorized)
            }
            Class::Operations if self.prod && !on_admin => Some(ApiError::Forbidden(
                "operations endpoints are closed in prod; set ADMIN_PORT or ADMIN_API_KEYS",
            )),
            Class::Operations => None,
        }
    }
}

/// The middleware: refuses what the [`Gate`] refuses, passes the rest on.
pub async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let refusal = req
        .app_data::<web::Data<Gate>>()
        .and_then(|gate| gate.refusal(req.request()));
    match refusal {
        Some(e) => Ok(req.into_response(e.error_response()).map_into_right_body()),
        None => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
    }
}

/// Request headers a page may send to the ingest routes.
const CORS_HEADERS: &str =
    "Authorization, Content-Type, Content-Encoding, X-Api-Key, X-Sent-At, Idempotency-Key";
/// How long a browser may keep a preflight's answer.
const CORS_MAX_AGE_SECS: u32 = 600;

/// CORS for the ingest routes: a preflight (`OPTIONS`) from an allowed page origin (a
/// browser key's, or `CORS_ALLOWED_ORIGINS`) is answered `204` with what it may send; from
/// another origin `403`. Answers to an allowed origin's requests name it in
/// `Access-Control-Allow-Origin` (never `*`). Other routes are left alone.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    use actix_web::http::{Method, header};
    // Most requests carry no `Origin`: for them nothing more is looked at.
    let origin = (req.headers().get(header::ORIGIN))
        .and_then(|v| v.to_str().ok())
        .filter(|_| class_of(req.path()) == Class::Ingest)
        .map(str::to_string);
    let Some(origin) = origin else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let allowed = (req.app_data::<web::Data<Gate>>())
        .is_some_and(|gate| gate.keys.keys().origin_allowed(&origin));
    if req.method() == Method::OPTIONS {
        let response = match allowed {
            true => actix_web::HttpResponse::NoContent()
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "POST, OPTIONS"))
                .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, CORS_HEADERS))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, CORS_MAX_AGE_SECS))
                .insert_header((header::VARY, "Origin"))
                .finish(),
            false => ApiError::KeyRefused(format!(
                "origin {} may not call this route",
                crate::table::event::excerpt(&origin)
            ))
            .error_response(),
        };
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    if allowed {
        let headers = response.headers_mut();
        if let Ok(value) = header::HeaderValue::from_str(&origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            headers.append(header::VARY, header::HeaderValue::from_static("Origin"));
        }
    }
    Ok(response.map_into_left_body())
}
