//! The CLI's side of the admin API: one connection per request over the Unix socket.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::types::{
    AgentStatus, ApiError, CanaryControlRequest, DeployProgress, DeployRequest, DownRequest,
    HandOverRequest,
};

/// What can go wrong talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No agent answers on the socket.
    #[error("no cutover agent answers on {}", socket.display())]
    NotRunning {
        /// The socket tried.
        socket: PathBuf,
    },
    /// The connection broke.
    #[error("talking to the agent on {}: {why}", socket.display())]
    Transport {
        /// The socket.
        socket: PathBuf,
        /// What happened.
        why: String,
    },
    /// The agent answered with an error.
    #[error("the agent refused: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
}

/// A client for one agent socket.
#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
}

impl AgentClient {
    /// A client for the agent listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        AgentClient {
            socket: socket.into(),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn transport(&self, why: impl ToString) -> ClientError {
        ClientError::Transport {
            socket: self.socket.clone(),
            why: why.to_string(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            use std::io::ErrorKind::{ConnectionRefused, NotFound};
            match e.kind() {
                NotFound | ConnectionRefused => ClientError::NotRunning {
                    socket: self.socket.clone(),
                },
                _ => self.transport(e),
            }
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.transport(e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "cutover-agent")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.transport(e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.transport(e))?;
        if response.status() == StatusCode::OK {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let bytes = self.body(response).await?;
        let message = serde_json::from_slice::<ApiError>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        Err(ClientError::Api { status, message })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let response = self.send(method, path, body).await?;
        let bytes = self.body(response).await?;
        serde_json::from_slice(&bytes).map_err(|e| self.transport(format!("bad answer: {e}")))
    }

    /// The whole body of an answer.
    async fn body(
        &self,
        response: hyper::Response<hyper::body::Incoming>,
    ) -> Result<Bytes, ClientError> {
        Ok(response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.transport(e))?
            .to_bytes())
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<AgentStatus, ClientError> {
        self.json(Method::GET, "/v1/status", None).await
    }

    /// `GET /metrics` in the Prometheus text format (it sends no `Accept` header).
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let response = self.send(Method::GET, "/metrics", None).await?;
        let bytes = self.body(response).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `POST /v1/deploy` (or `/v1/rollback`): calls `on_progress` for every step and returns
    /// the last one (`Active` or `Failed`). The agent finishes the deploy even if this
    /// process goes away.
    pub async fn deploy(
        &self,
        request: &DeployRequest,
        rollback: bool,
        mut on_progress: impl FnMut(&DeployProgress),
    ) -> Result<DeployProgress, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| self.transport(e))?;
        let path = if rollback {
            "/v1/rollback"
        } else {
            "/v1/deploy"
        };
        let mut response = self.send(Method::POST, path, Some(body)).await?;
        let mut buf: Vec<u8> = Vec::new();
        let mut last = None;
        while let Some(frame) = response.body_mut().frame().await {
            let frame = frame.map_err(|e| self.transport(e))?;
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let step: DeployProgress = serde_json::from_slice(&line)
                        .map_err(|e| self.transport(format!("bad progress line: {e}")))?;
                    on_progress(&step);
                    // The first end is the answer (instance events may trail it).
                    let end = matches!(
                        step,
                        DeployProgress::Active
                            | DeployProgress::Failed { .. }
                            | DeployProgress::RolledBack { .. }
                    );
                    if end && last.is_none() {
                        last = Some(step);
                    }
                }
            }
        }
        match last {
            Some(
                step @ (DeployProgress::Active
                | DeployProgress::Failed { .. }
                | DeployProgress::RolledBack { .. }),
            ) => Ok(step),
            _ => Err(self.transport("the agent closed the deploy before it ended")),
        }
    }

    /// `POST /v1/promote` (`full`: 100% now, without further judgement): ends the current and
    /// every later pause of the canary of `service` in `env`.
    pub async fn promote(&self, env: &str, service: &str, full: bool) -> Result<(), ClientError> {
        self.canary_control("/v1/promote", env, service, full).await
    }

    /// `POST /v1/abort`: rolls the canary of `service` in `env` back now.
    pub async fn abort(&self, env: &str, service: &str) -> Result<(), ClientError> {
        self.canary_control("/v1/abort", env, service, false).await
    }

    async fn canary_control(
        &self,
        path: &str,
        env: &str,
        service: &str,
        full: bool,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(&CanaryControlRequest {
            env: env.to_string(),
            service: service.to_string(),
            full,
        })
        .map_err(|e| self.transport(e))?;
        let _: serde_json::Value = self.json(Method::POST, path, Some(body)).await?;
        Ok(())
    }

    /// `POST /v1/hand-over`: the command running `request.run` died; the agent, which goes on
    /// deploying `request.release`, records how it ends. An error when it is not deploying it.
    pub async fn hand_over(&self, request: &HandOverRequest) -> Result<(), ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| self.transport(e))?;
        let _: serde_json::Value = self.json(Method::POST, "/v1/hand-over", Some(body)).await?;
        Ok(())
    }

    /// `POST /v1/pause` (`timeout`: `Some`) or `POST /v1/resume` (`None`) of `service` in `env`.
    pub async fn pause(
        &self,
        env: &str,
        service: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(&crate::api::types::PauseRequest {
            env: env.to_string(),
            service: service.to_string(),
            timeout_ms: timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        })
        .map_err(|e| self.transport(e))?;
        let path = if timeout.is_some() {
            "/v1/pause"
        } else {
            "/v1/resume"
        };
        let _: serde_json::Value = self.json(Method::POST, path, Some(body)).await?;
        Ok(())
    }

    /// `POST /v1/down`: stops every instance of an environment.
    pub async fn down(&self, env: &str) -> Result<(), ClientError> {
        let body = serde_json::to_vec(&DownRequest {
            env: env.to_string(),
        })
        .map_err(|e| self.transport(e))?;
        let _: serde_json::Value = self.json(Method::POST, "/v1/down", Some(body)).await?;
        Ok(())
    }

    /// `POST /v1/stop`: the agent stops everything and exits.
    pub async fn stop(&self) -> Result<(), ClientError> {
        let _: serde_json::Value = self.json(Method::POST, "/v1/stop", None).await?;
        Ok(())
    }
}
