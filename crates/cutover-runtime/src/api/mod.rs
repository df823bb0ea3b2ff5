//! The agent's admin API: HTTP/1.1 with JSON bodies over the project's Unix socket.
//!
//! One request type per verb in `types.rs`, shared by the CLI's client (`client.rs`) and the
//! agent's server (`server.rs`), like kamal-proxy's command socket.

pub mod client;
pub mod server;
pub mod types;
