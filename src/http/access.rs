//! Who may use which route: ingest routes for clients (with `INGEST_API_KEYS`), probes for
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

use super::client::ApiKeys;
use super::{ApiError, Class, class_of};

/// Where operations routes are served and what they need.
pub struct Gate {
    /// `ADMIN_PORT`: when set, operations routes are served there only, and ingest routes
    /// are not served there.
    pub admin_port: Option<u16>,
    /// `ADMIN_API_KEYS`: when set, operations routes (on either listener) need one, and
    /// probes show their details only with one.
    pub admin_keys: ApiKeys,
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
        if !self.admin_keys.is_open() {
            return self.admin_keys.allows(req);
        }
        self.on_admin_listener(req) || (self.admin_port.is_none() && !self.prod)
    }

    /// What to answer instead of serving `req`, if anything.
    fn refusal(&self, req: &HttpRequest) -> Option<ApiError> {
        let on_admin = self.on_admin_listener(req);
        match class_of(req.path()) {
            Class::Ingest if on_admin => Some(ApiError::NotFound),
            Class::Ingest | Class::Probe => None,
            Class::Operations if self.admin_port.is_some() && !on_admin => Some(ApiError::NotFound),
            Class::Operations if !self.admin_keys.is_open() => {
                (!self.admin_keys.allows(req)).then_some(ApiError::Unauthorized)
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
