//! The Admin service (admin key only): hot reloads and status.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::error::to_status;
use super::metrics::Method;
use super::pb;
use super::scoring::observed;
use super::{convert, State};

pub struct Admin {
    state: Arc<State>,
}

impl Admin {
    pub fn new(state: Arc<State>) -> Admin {
        Admin { state }
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for Admin {
    async fn reload_models(
        &self,
        request: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        observed(&self.state.metrics, Method::ReloadModels, async {
            self.state
                .auth
                .admin(request.metadata())
                .map_err(to_status)?;
            let version = self.state.reload_models().await.map_err(to_status)?;
            Ok(Response::new(pb::ReloadResponse { version }))
        })
        .await
    }

    async fn reload_rules(
        &self,
        request: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        observed(&self.state.metrics, Method::ReloadRules, async {
            self.state
                .auth
                .admin(request.metadata())
                .map_err(to_status)?;
            let version = self.state.reload_rules().await.map_err(to_status)?;
            Ok(Response::new(pb::ReloadResponse { version }))
        })
        .await
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        observed(&self.state.metrics, Method::Status, async {
            self.state
                .auth
                .admin(request.metadata())
                .map_err(to_status)?;
            let engine = self.state.engine.load_full();
            let velocity = engine
                .as_ref()
                .map(|e| (e.velocity().describe(), self.state.velocity_up()));
            Ok(Response::new(convert::status(
                engine.map(|e| e.status()),
                self.state.load_error(),
                velocity,
                self.state.audit.writable(),
            )))
        })
        .await
    }
}
