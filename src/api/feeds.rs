//! Feeds and instances: what the service knows and where it comes from.
//!
//! - `GET /feeds`: every feed with its instance, source, version, fetch time, counts and
//!   last error.
//! - `GET /instances`: every OTP instance with its refresh status and HTTP client figures
//!   (connections opened, requests sent, reuse ratio, breaker state).
//! - `POST /instances/{name}/refresh`: starts a refresh now (202); when one is running,
//!   202 too, saying so: there is never more than one refresh of an instance at a time.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{ApiError, ApiResult};
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/feeds", get(list_feeds))
        .route("/instances", get(list_instances))
        .route("/instances/{name}/refresh", post(refresh))
}

async fn list_feeds(State(state): State<AppState>) -> Json<Value> {
    let feeds: Vec<Value> = state.feeds.all().iter().map(|f| f.report()).collect();
    Json(json!({ "feeds": feeds }))
}

async fn list_instances(State(state): State<AppState>) -> Json<Value> {
    let instances: Vec<Value> = state.instances.iter().map(|i| i.report()).collect();
    Json(json!({ "instances": instances }))
}

async fn refresh(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let instance = state
        .instance(&name)
        .ok_or_else(|| ApiError::not_found(format!("no instance named {name:?}")))?;
    let status = if instance.trigger() {
        "started"
    } else {
        "already_running"
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "instance": name, "refresh": status })),
    ))
}
